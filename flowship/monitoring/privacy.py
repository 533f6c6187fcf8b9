"""The checks under params.yaml `privacy:`: they compare like with like.

A hashed category is compared hashed: the reference (training data, which holds the values) is hashed with the
project's key, as the serving app hashed the logged values, so its distribution, its unseen categories and its
missing share are judged as before. A dropped column, and a hashed number (a hash keeps equality, not order or
distance), are left out of the checks: the version is judged on its other features, and a column the log no longer
holds is not reported as a schema problem.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from flowship.errors import MonitoringError
from flowship.monitoring.reference import ModelSpec, Reference
from flowship.serving.privacy import PrivacyPolicy, keyed_hash


def hashed_categories(policy: PrivacyPolicy, categorical: list[str]) -> list[str]:
    """The sensitive categorical columns whose values the log holds hashed."""
    return [c for c in policy.columns if c in categorical] if policy.mode == "hash" else []


def protect_reference(
    spec: ModelSpec, reference: Reference, policy: PrivacyPolicy, key: bytes | None
) -> tuple[ModelSpec, Reference]:
    """The version's spec and reference as the log can be compared with: hashed categories hashed under `key`, the
    columns left out of monitoring removed."""
    left_out = set(policy.unmonitored(spec.numeric))
    hashed = [c for c in hashed_categories(policy, spec.categorical) if c not in left_out]
    if not left_out and not hashed:
        return spec, reference
    if hashed and key is None:
        raise MonitoringError("the reference's hashed categories need the privacy key")
    frame = reference.frame.drop(columns=[c for c in left_out if c in reference.frame])
    for column in hashed:
        if column in frame:
            frame[column] = _hash_series(frame[column], key or b"")
    categories = {
        c: sorted({h for v in values if (h := keyed_hash(v, key or b"")) is not None}) if c in hashed else values
        for c, values in reference.categories.items()
        if c not in left_out
    }
    kept_spec = replace(
        spec,
        numeric=[c for c in spec.numeric if c not in left_out],
        categorical=[c for c in spec.categorical if c not in left_out],
    )
    kept = replace(
        reference,
        frame=frame,
        ranges={c: r for c, r in reference.ranges.items() if c not in left_out},
        categories=categories,
        missing_share={c: s for c, s in reference.missing_share.items() if c not in left_out},
    )
    return kept_spec, kept


def _hash_series(values: pd.Series, key: bytes) -> pd.Series:
    missing = values.isna()
    hashed = values.astype(object).map(lambda v: keyed_hash(str(v), key))
    return hashed.where(~missing, np.nan)
