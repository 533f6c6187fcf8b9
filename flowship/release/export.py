"""A registered model version as a serving bundle: the fitted pipeline, its metadata, golden set and training
profile (a version registered before profiles existed has none: its guardrails are off)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from flowship.adapters.tracking import TAG, Tracker, VersionRef
from flowship.serving.bundle import GOLDEN_FILE, write_bundle
from flowship.serving.guardrails import PROFILE_FILE, GuardrailPolicy


def already_exported(dest: Path, version: str) -> bool:
    meta_file = dest / "metadata.json"
    return meta_file.exists() and json.loads(meta_file.read_text()).get("version") == version


def bundle_metadata(ref: VersionRef, model: Any, schema: list[dict[str, str]], default_task: str) -> dict[str, Any]:
    """`metadata.json` of the version: its features from its own signature, its lineage from its tags."""
    return {
        "name": ref.name,
        "version": ref.version,
        "task": ref.tags.get(f"{TAG}task", default_task),
        "features": {
            "numeric": [f["name"] for f in schema if f["type"] != "string"],
            "categorical": [f["name"] for f in schema if f["type"] == "string"],
        },
        "classes": [c.item() if hasattr(c, "item") else c for c in model.classes_]
        if hasattr(model, "classes_")
        else None,
        "lineage": {k: v for k, v in ref.tags.items() if k.startswith(TAG) and not k.startswith(f"{TAG}gate.")},
        "input_schema": schema,
    }


def guardrails_problem(dest: Path, policy: GuardrailPolicy) -> str | None:
    """Why the serving app of the bundle in `dest` could not follow `policy` (a fallback class the model does not
    have), said before any image is built; None when it can."""
    meta = json.loads((dest / "metadata.json").read_text())
    return policy.fallback_problem(meta["task"], meta.get("classes"))


def export_version(tracker: Tracker, ref: VersionRef, dest: Path, default_task: str) -> None:
    """Write the version's bundle to `dest`, replacing what was there."""
    model = tracker.load_model(ref.uri)
    with tempfile.TemporaryDirectory() as tmp:
        files = tracker.download(ref.uri, Path(tmp))
        golden = _logged_json(files, GOLDEN_FILE)
        profile = _logged_json(files, PROFILE_FILE)
    # From the version itself, not today's params: a rollback may serve a model trained on other features.
    metadata = bundle_metadata(ref, model, tracker.input_schema(ref.uri), default_task)
    if dest.exists():
        shutil.rmtree(dest)
    write_bundle(dest, model, metadata, golden, profile)


def _logged_json(files: Path, name: str) -> Any:
    found = sorted(files.rglob(name))
    return json.loads(found[0].read_text()) if found else None
