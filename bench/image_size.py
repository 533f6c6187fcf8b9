"""The serving image's size, as flowship builds it and as it was built with pyarrow, side by side in one run.

After `make run` (the bundle build/flights-delay-v1/model exists), two images of that bundle are built from this
working tree's Dockerfile and serving code, with the local base image where Docker Hub can't be reached:

* as flowship builds it: `serving_requirements()` (SERVING_PACKAGES and all they depend on);
* with pyarrow added, as flowship built it before: the difference is what leaving pyarrow out saves.

Each image is then started once: it must become ready, i.e. its warm-up replays the bundle's golden records
and finds every prediction and probability as at training time (else /ready stays 503: "golden check failed").
Printed: each image's size and whether it passed; nothing is asserted. Figures go to bench/results/image_size.json.

    .venv/bin/python bench/image_size.py
"""

from __future__ import annotations

import json
import shlex
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flowship.adapters import docker_engine  # noqa: E402
from flowship.release.docker_runtime import DEFAULT_BASE, wheelhouse_dir  # noqa: E402

BUNDLE = REPO / "build" / "flights-delay-v1" / "model"
OUT_JSON = REPO / "bench" / "results" / "image_size.json"
AIM_MB = 350
READY_SECONDS = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ready(port: int) -> tuple[bool, str]:
    """Whether the container's /ready answers 200 within READY_SECONDS; its last answer."""
    deadline = time.monotonic() + READY_SECONDS
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as answer:
                return True, answer.read().decode()
        except urllib.error.HTTPError as exc:
            last = exc.read().decode(errors="replace")
            if "golden check failed" in last:
                return False, last
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.5)
    return False, last


def build_and_check(engine: docker_engine.DockerEngine, tag: str, requirements: list[str], base: str) -> dict[str, Any]:
    wheelhouse = docker_engine.prepare_wheelhouse(wheelhouse_dir(), requirements)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="flowship-image-size-") as tmp:
        context = docker_engine.build_context(Path(tmp) / "context", BUNDLE, wheelhouse, requirements)
        engine.build(context, tag, buildargs={"BASE_IMAGE": base})
        built_in = time.monotonic() - started
        name = tag.replace("/", "-").replace(":", "-")
        port = free_port()
        engine.remove(name)
        try:
            engine.run(tag, name, host_port=port, log_dir=Path(tmp) / "logs", restart_policy="no")
            passed, answer = ready(port)
        finally:
            engine.remove(name)
    return {
        "image": tag,
        "size_mb": engine.image_size(tag) / 1e6,
        "built_in_s": built_in,
        "packages": len(requirements),
        "golden_check_passed": passed,
        "ready_answer": answer[:300],
    }


def main() -> int:
    if not (BUNDLE / "model.pkl").exists():
        print(f"missing {BUNDLE}: run `make run` first", file=sys.stderr)
        return 1
    engine = docker_engine.DockerEngine()
    if not engine.available():
        print("no Docker daemon answers", file=sys.stderr)
        return 1
    base = engine.ensure_base_image(DEFAULT_BASE)
    flowship = docker_engine.serving_requirements()
    with_pyarrow = docker_engine.serving_requirements((*docker_engine.SERVING_PACKAGES, "pyarrow"))
    results: dict[str, Any] = {"command": shlex.join([sys.executable, *sys.argv]), "base_image": base, "images": {}}
    for label, requirements in (("as flowship builds it", flowship), ("with pyarrow, as before", with_pyarrow)):
        tag = "flowship/image-size:" + ("pyarrow" if "pyarrow" in " ".join(requirements) else "serving")
        print(f"building {tag} ({len(requirements)} packages) ...", flush=True)
        results["images"][label] = build_and_check(engine, tag, requirements, base)
    print()
    for label, image in results["images"].items():
        verdict = "golden check passed" if image["golden_check_passed"] else f"NOT READY: {image['ready_answer']}"
        print(f"{label:<24} {image['image']:<30} {image['size_mb']:7.0f} MB  {verdict}")
    size = results["images"]["as flowship builds it"]["size_mb"]
    before = results["images"]["with pyarrow, as before"]["size_mb"]
    verdict = "met" if size <= AIM_MB else "MISSED"
    print(f"saved: {before - size:.0f} MB ({size / before:.2f}x); aim <= {AIM_MB} MB: {verdict}")
    print(f"command: {results['command']}")
    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    OUT_JSON.write_text(json.dumps(results, indent=2) + "\n")
    for image in results["images"].values():
        engine.remove_image(image["image"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
