"""The `release` section of params.yaml."""

from __future__ import annotations

import pytest

from flowship.config import parse_params
from flowship.errors import ConfigError
from tests.unit.conftest import raw_params


def test_defaults_when_the_section_is_absent() -> None:
    cfg = parse_params(raw_params()).release
    assert (cfg.production_port, cfg.staging_port, cfg.max_batch) == (8000, 8001, 1000)
    assert (cfg.approval.before, cfg.approval.timeout_s) == ("none", 3600)  # nobody is asked unless configured


@pytest.mark.parametrize(
    ("release", "expected"),
    [
        ({"staging_port": 8000}, "staging_port must differ from production_port (8000)"),
        ({"production_port": 80}, "release.production_port: Input should be greater than or equal to 1024 (got 80)"),
        ({"latency_p95_ms": -1}, "release.latency_p95_ms"),
        ({"blue_green": True}, "release.blue_green: unknown key"),
        ({"strategy": "big-bang"}, "release.strategy: Input should be 'direct', 'canary' or 'shadow'"),
        ({"canary": {"step_weights": [50, 5]}}, "release.canary.step_weights: Value error, [50, 5]: percentages"),
        ({"canary": {"min_success_rate": 2}}, "release.canary.min_success_rate"),
        ({"replicas": 0}, "release.replicas: Input should be greater than or equal to 1"),
        ({"approval": {"before": "always"}}, "release.approval.before: Input should be 'none', 'promotion' or"),
        ({"approval": {"timeout_s": 5}}, "release.approval.timeout_s: Input should be greater than or equal to 10"),
        ({"approval": {"by": "alice"}}, "release.approval.by: unknown key"),
    ],
)
def test_bad_release_settings_are_named(release: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as failure:
        parse_params(raw_params(release=release))
    assert expected in str(failure.value)
