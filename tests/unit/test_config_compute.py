"""The `compute` section of params.yaml: where search trials and batch scoring chunks run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from flowship.config import parse_params
from flowship.errors import ConfigError
from tests.unit.conftest import raw_params

REPO = Path(__file__).resolve().parents[2]


def test_threads_by_default_when_the_section_is_absent() -> None:
    cfg = parse_params(raw_params()).compute
    assert cfg.engine == "threads"
    assert (cfg.dask.address, cfg.dask.workers, cfg.dask.threads_per_worker) == (None, 2, 1)


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:8786", "tcp://scheduler.internal:8786", "tls://[::1]:8786"])
def test_a_scheduler_address_is_taken(address: str) -> None:
    cfg = parse_params(raw_params(compute={"engine": "dask", "dask": {"address": address}})).compute
    assert (cfg.engine, cfg.dask.address) == ("dask", address)


@pytest.mark.parametrize(
    ("compute", "expected"),
    [
        ({"engine": "ray"}, "compute.engine: Input should be 'threads' or 'dask' (got 'ray')"),
        ({"dask": {"workers": 0}}, "compute.dask.workers: Input should be greater than or equal to 1 (got 0)"),
        ({"dask": {"threads_per_worker": -2}}, "compute.dask.threads_per_worker"),
        ({"dask": {"address": "localhost:8786"}}, "compute.dask.address: Value error, expected the address"),
        ({"dask": {"address": "tcp://localhost"}}, "tcp://host:port (e.g. tcp://10.0.0.5:8786)"),
        ({"dask": {"address": "tcp://localhost:99999"}}, "(got 'tcp://localhost:99999')"),
        ({"dask": {"address": "http://localhost:8786"}}, "(got 'http://localhost:8786')"),
        ({"dask": {"adress": "tcp://localhost:8786"}}, "compute.dask.adress: unknown key"),
        ({"workers": 4}, "compute.workers: unknown key"),
    ],
)
def test_bad_compute_settings_are_named(compute: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as failure:
        parse_params(raw_params(compute=compute))
    assert expected in str(failure.value)


def test_the_repository_params_run_on_threads_and_dvc_does_not_track_compute() -> None:
    """Changing the engine must never re-run a DVC stage: no stage lists `compute` among its params."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert parse_params(raw, check_estimator=False).compute.engine == "threads"
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    tracked = [p for stage in stages.values() for p in stage.get("params", []) if isinstance(p, str)]
    assert not [p for p in tracked if p == "compute" or p.startswith("compute.")]
