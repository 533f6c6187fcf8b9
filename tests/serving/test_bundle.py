from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from flowship.errors import FlowshipError
from flowship.pipeline.training import coerce_features
from flowship.serving.bundle import GOLDEN_FILE, METADATA_FILE, MODEL_FILE, load_bundle, write_bundle
from flowship.serving.errors import BundleError
from flowship.serving.schema import RecordCodec, record_model
from tests.serving.conftest import CATEGORICAL, NUMERIC, fit_classifier, golden, metadata

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def bundle_copy(tmp_path: Path, classifier_dir: Path) -> Path:
    return Path(shutil.copytree(classifier_dir, tmp_path / "bundle"))


def test_write_then_load_gives_the_same_model(classifier_dir: Path, training_frame: pd.DataFrame) -> None:
    bundle = load_bundle(classifier_dir)
    assert bundle.metadata.name == "flights-delay"
    assert bundle.metadata.version == "3"
    assert bundle.metadata.task == "classification"
    assert bundle.metadata.classes == [False, True]
    assert bundle.metadata.features.all == NUMERIC + CATEGORICAL
    assert bundle.metadata.lineage["git_commit"] == "deadbeef"
    assert [f.type for f in bundle.metadata.input_schema] == ["double", "double", "double", "string"]
    assert bundle.golden is not None and len(bundle.golden) == 8
    x = training_frame[NUMERIC + CATEGORICAL]
    expected = fit_classifier(training_frame).predict_proba(x)
    np.testing.assert_array_equal(bundle.pipeline.predict_proba(x), expected)
    assert sorted(p.name for p in classifier_dir.iterdir()) == [GOLDEN_FILE, METADATA_FILE, MODEL_FILE]


def test_a_bundle_without_golden_set_loads_and_a_stale_one_is_removed(tmp_path: Path, training_frame: Any) -> None:
    pipeline = fit_classifier(training_frame)
    meta = metadata("classification", "m", [False, True])
    write_bundle(tmp_path, pipeline, meta, golden(pipeline, training_frame, "classification"))
    write_bundle(tmp_path, pipeline, meta, None)
    assert not (tmp_path / GOLDEN_FILE).exists()
    assert load_bundle(tmp_path).golden is None


def test_the_codec_types_records_as_training_does(classifier_dir: Path) -> None:
    bundle = load_bundle(classifier_dir)
    codec = RecordCodec(bundle, record_model(bundle.metadata))
    rows = [(1.0, None, 3.0, "AA"), (None, 2.5, 7.0, None), (4.0, 5.0, 6.0, "B6")]
    raw = pd.DataFrame.from_records(rows, columns=codec.columns)
    pd.testing.assert_frame_equal(codec.frame(rows), coerce_features(raw, NUMERIC, CATEGORICAL)[codec.columns])


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda d: (d / MODEL_FILE).unlink(), "model.pkl is missing"),
        (lambda d: (d / METADATA_FILE).unlink(), "metadata.json is missing"),
        (lambda d: (d / MODEL_FILE).write_bytes(b"not a pickle"), "model.pkl is corrupt"),
        (lambda d: (d / MODEL_FILE).write_bytes((d / MODEL_FILE).read_bytes()[:100]), "model.pkl is corrupt"),
        (lambda d: (d / METADATA_FILE).write_text("{"), "metadata.json is not valid JSON"),
        (lambda d: (d / GOLDEN_FILE).write_text("{}"), "golden.json is invalid"),
        (lambda d: _edit(d, task="ranking"), "task"),
        (lambda d: _edit(d, classes=None), "needs `classes`"),
        (lambda d: _edit(d, classes=["no", "yes"]), "differ from the model's classes"),
        (lambda d: _edit(d, input_schema=[{"name": "distance", "type": "double"}]), "'temp' is missing from"),
        (lambda d: _edit(d, input_schema=[{"name": n, "type": "string"} for n in NUMERIC + CATEGORICAL]), "type"),
        (
            lambda d: _edit(
                d,
                features={"numeric": ["distance"], "categorical": []},
                input_schema=[{"name": "distance", "type": "double"}],
            ),
            "fitted on columns",
        ),
    ],
)
def test_a_broken_bundle_raises_a_clear_error(bundle_copy: Path, damage: Any, expected: str) -> None:
    damage(bundle_copy)
    with pytest.raises(BundleError) as caught:
        load_bundle(bundle_copy)
    assert isinstance(caught.value, FlowshipError)
    assert str(bundle_copy) in str(caught.value)
    assert expected in str(caught.value)


def test_a_missing_folder_says_which_variable_to_set(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="FLOWSHIP_MODEL_DIR"):
        load_bundle(tmp_path / "nowhere")


def test_write_bundle_refuses_inconsistent_metadata(tmp_path: Path, training_frame: Any) -> None:
    pipeline = fit_classifier(training_frame)
    with pytest.raises(BundleError, match="refusing to write"):
        write_bundle(tmp_path / "b", pipeline, {"name": "m"}, None)
    with pytest.raises(BundleError, match="differ from the model's classes"):
        write_bundle(tmp_path / "b", pipeline, metadata("classification", "m", [0, 1]), None)
    assert not (tmp_path / "b" / MODEL_FILE).exists()


def _edit(folder: Path, **changes: Any) -> None:
    meta = json.loads((folder / METADATA_FILE).read_text())
    meta.update(changes)
    (folder / METADATA_FILE).write_text(json.dumps(meta))


# What the serving image lacks: the training code and the orchestration stack.
BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys

    ALLOWED = (
        "flowship", "flowship.errors", "flowship.files", "flowship.values", "flowship.features", "flowship.serving"
    )
    BLOCKED = ("prefect", "mlflow", "dvc", "docker", "evidently", "pandera", "matplotlib")

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            top = name.split(".")[0]
            if top in BLOCKED or (
                top == "flowship" and name not in ALLOWED and not name.startswith("flowship.serving.")
            ):
                raise ModuleNotFoundError(f"blocked in the serving image: {name}", name=name)
            return None

    sys.meta_path.insert(0, Block())
    """
)


def write_blocker(folder: Path) -> Path:
    """A `sitecustomize` that makes the interpreter behave like the slim serving image."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(BLOCKER)
    return folder


def test_the_bundle_loads_and_the_app_builds_without_training_code(tmp_path: Path, classifier_dir: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from flowship.serving.bundle import load_bundle
        from flowship.serving.app import create_app
        from flowship.serving.settings import ServingSettings
        bundle = load_bundle({str(classifier_dir)!r})
        create_app(bundle, ServingSettings())
        x = [g.features for g in bundle.golden]
        import pandas as pd
        print(bundle.pipeline.predict_proba(pd.DataFrame(x))[0][1])
        assert "flowship.pipeline.training" not in sys.modules
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("prefect", "mlflow", "dvc", "docker"))
        assert not bad, bad
        """
    )
    env = {"PYTHONPATH": f"{write_blocker(tmp_path / 'site')}:{REPO}", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert 0.0 <= float(done.stdout.strip()) <= 1.0
