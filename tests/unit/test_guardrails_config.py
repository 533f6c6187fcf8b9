"""params.yaml `guardrails:` (checked when the params load, naming the key), the training profile the train stage
writes, and the release's refusal of a fallback the model cannot give."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from flowship.config import load_params, parse_params
from flowship.errors import ConfigError
from flowship.features import FeatureLists
from flowship.pipeline.training_profile import profile_training_data
from flowship.release.export import guardrails_problem
from flowship.serving.guardrails import GuardrailPolicy, TrainingProfile
from tests.unit.conftest import CATEGORICAL, NUMERIC, make_frame, raw_params

REPO = Path(__file__).resolve().parents[2]


def problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_params(raw)
    return caught.value.problems


def test_the_repository_params_spell_out_the_defaults() -> None:
    params = load_params(REPO / "params.yaml")
    assert params.guardrails == GuardrailPolicy()  # an unquoted `off` in YAML reads as off, not as false
    assert params.guardrails.low_confidence.action == "off"


def test_no_section_means_the_documented_defaults() -> None:
    policy = parse_params(raw_params()).guardrails
    assert (policy.out_of_range.action, policy.unseen_category.action, policy.missing.action) == ("flag",) * 3
    assert (policy.low_confidence.action, policy.output_range.action, policy.fallback.kind) == (
        "off",
        "flag",
        "abstain",
    )


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ({"too_far": {"action": "flag"}}, "guardrails.too_far: unknown key (value {'action': 'flag'})"),
        ({"out_of_range": {"action": "shout"}}, "guardrails.out_of_range.action: Input should be 'off', 'flag', "),
        ({"output_range": {"action": "refuse"}}, "guardrails.output_range.action: Input should be 'off', 'flag' or "),
        ({"missing": {"max_share": 1.5}}, "guardrails.missing.max_share: Input should be less than or equal to 1"),
        ({"fallback": {"kind": "constant"}}, "guardrails.fallback: Value error, `value` is required when kind is"),
        ({"fallback": {"kind": "prior", "value": 1}}, "guardrails.fallback: Value error, `value` is only for kind"),
        ({"low_confidence": {"min_confidence": 0}}, "guardrails.low_confidence.min_confidence: Input should be"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_key(section: dict[str, Any], problem: str) -> None:
    found = problems(raw_params(guardrails=section))
    assert len(found) == 1 and found[0].startswith(problem), found


def test_a_regression_fallback_must_be_a_number() -> None:
    raw = raw_params("regression", "ridge", guardrails={"fallback": {"kind": "constant", "value": "late"}})
    assert problems(raw) == ["guardrails.fallback.value 'late' is not a number, and the model predicts numbers"]


def test_the_pipeline_stages_leave_the_policy_unchecked(tmp_path: Path) -> None:
    # the stages never serve: they neither check nor import the serving app's policy (dvc.yaml lists what they run)
    raw = raw_params(guardrails={"too_far": {}})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert load_params(path, check_serving=False).guardrails_section == {"too_far": {}}
    with pytest.raises(ConfigError, match="guardrails.too_far: unknown key"):
        load_params(path)


def test_the_training_profile_holds_ranges_known_values_missing_shares_and_the_prior() -> None:
    frame = make_frame(n=200)
    frame.loc[frame.index[:20], "x2"] = np.nan
    frame.loc[frame.index[20:30], "color"] = None
    raw = profile_training_data(frame, FeatureLists(numeric=NUMERIC, categorical=CATEGORICAL), "y", "classification")
    profile = TrainingProfile.model_validate(raw)  # what the bundle accepts
    assert profile.rows == 200
    x1 = profile.numeric["x1"]
    assert (x1.min, x1.max, x1.missing) == (frame["x1"].min(), frame["x1"].max(), 0.0)
    assert x1.min < x1.low < x1.high < x1.max
    assert profile.numeric["x2"].missing == pytest.approx(0.1)
    assert profile.categorical["color"].values == ["blue", "green", "red"]
    assert profile.categorical["color"].missing == pytest.approx(0.05)
    assert profile.target.prior == pytest.approx(
        {str(k): v for k, v in frame["y"].value_counts(normalize=True).items()}
    )


def test_the_regression_profile_holds_the_target_range() -> None:
    frame = make_frame("regression", n=100)
    frame["x2"] = np.nan  # a feature never seen with a value is left out: nothing to check it against
    raw = profile_training_data(frame, FeatureLists(numeric=NUMERIC, categorical=CATEGORICAL), "y", "regression")
    profile = TrainingProfile.model_validate(raw)
    assert "x2" not in profile.numeric
    assert (profile.target.min, profile.target.max) == (frame["y"].min(), frame["y"].max())
    assert profile.target.mean == pytest.approx(frame["y"].mean())
    assert profile.target.prior is None


@pytest.mark.parametrize(
    ("task", "classes", "fallback", "problem"),
    [
        ("classification", [0, 1], {"kind": "constant", "value": 1}, None),
        ("classification", [0, 1], {"kind": "constant", "value": 2}, "is not one of the model's classes ['0', '1']"),
        ("classification", ["a", "b"], {"kind": "prior"}, None),
        ("regression", None, {"kind": "constant", "value": True}, "True is not a number"),
        ("regression", None, {"kind": "constant", "value": 2.5}, None),
    ],
)
def test_a_release_refuses_a_fallback_its_model_cannot_give(
    tmp_path: Path, task: str, classes: list[Any] | None, fallback: dict[str, Any], problem: str | None
) -> None:
    (tmp_path / "metadata.json").write_text(json.dumps({"task": task, "classes": classes}))
    found = guardrails_problem(tmp_path, GuardrailPolicy.model_validate({"fallback": fallback}))
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found
