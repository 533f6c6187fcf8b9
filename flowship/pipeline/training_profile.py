"""The training profile: what the model saw at training, as the serving guardrails check requests against it
(`flowship.serving.guardrails.TrainingProfile`, `profile.json` beside the model)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from flowship.features import FeatureLists
from flowship.pipeline.training import coerce_features
from flowship.values import plain

# robust bounds: the values between these quantiles
ROBUST_QUANTILES = (0.005, 0.995)


def profile_training_data(train: pd.DataFrame, features: FeatureLists, target: str, task: str) -> dict[str, Any]:
    """Per numeric feature its range, robust bounds and missing share; per categorical one its values and missing
    share; the target's class shares (classification) or range and mean (regression). A feature without any value
    in training is left out (nothing to check against)."""
    x = coerce_features(train[features.all], list(features.numeric), list(features.categorical))
    numeric: dict[str, dict[str, float]] = {}
    for name in features.numeric:
        values = x[name].to_numpy(dtype=np.float64)
        present = values[np.isfinite(values)]
        if len(present) == 0:
            continue
        low, high = np.quantile(present, ROBUST_QUANTILES)
        numeric[name] = {
            "min": float(present.min()),
            "max": float(present.max()),
            "low": float(low),
            "high": float(high),
            "missing": float(1 - len(present) / len(values)),
        }
    categorical: dict[str, dict[str, Any]] = {}
    for name in features.categorical:
        column = x[name]
        present = column[column.notna()]
        if len(present) == 0:
            continue
        categorical[name] = {
            "values": sorted(str(v) for v in present.unique()),
            "missing": float(1 - len(present) / len(column)),
        }
    labels = train[target].dropna()
    if task == "classification":
        shares = labels.value_counts(normalize=True, sort=False)
        target_profile: dict[str, Any] = {"prior": {str(plain(k)): float(v) for k, v in shares.items()}}
    else:
        values = labels.to_numpy(dtype=np.float64)
        target_profile = {"min": float(values.min()), "max": float(values.max()), "mean": float(values.mean())}
    return {"rows": len(train), "numeric": numeric, "categorical": categorical, "target": target_profile}
