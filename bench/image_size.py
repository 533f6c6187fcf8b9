"""The serving image as flowship builds it, beside variants of it, in one run: size, golden check, speed.

After `make run` (the bundle build/flights-delay-v1/model exists), images of that bundle are built from this
working tree's Dockerfile and serving code, with the local base image where Docker Hub can't be reached:

* as flowship builds it: `serving_requirements()` (SERVING_PACKAGES and all they depend on);
* without uvloop and httptools: uvicorn then parses HTTP with h11 on asyncio's own loop (what they cost in size,
  and what they give in speed);
* with pyarrow added (flowship built it so before): the difference is what leaving pyarrow out saves;
* with the libraries whole (`SLIM_LIBRARIES=0`: their sources, C headers and symbol tables kept, as before the
  Dockerfile slimmed them): the difference is what slimming saves, and whether it costs any speed.

Each image is then started once: it must become ready, i.e. its warm-up replays the bundle's golden records
and finds every prediction and probability as at training time (else /ready stays 503: "golden check failed").
Then wrk sends it golden records for 5 s each: one per request at concurrency 1 (p50) and 16 (requests/s), and
1,000 per request at concurrency 1 (rows/s); the images run side by side and get each load in turn, for 3 rounds
(medians; each round starts with another image). Printed: each image's size, whether it passed and its figures;
nothing is asserted. Figures go to bench/results/image_size.json. Needs wrk.

    .venv/bin/python bench/image_size.py
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import statistics
import subprocess
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
ROUNDS = 3


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


WRK_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = {body}
"""
# (label, records per request, connections, the figure kept)
LOADS = (
    ("1 record, c=1", 1, 1, "p50_ms"),
    ("1 record, c=16", 1, 16, "requests_per_s"),
    ("1000 records, c=1", 1000, 1, "rows_per_s"),
)


def wrk(port: int, records: int, connections: int, folder: Path) -> dict[str, float]:
    golden = [g["features"] for g in json.loads((BUNDLE / "golden.json").read_text())]
    batch = [golden[i % len(golden)] for i in range(records)]
    script = folder / f"payload_{records}.lua"
    script.write_text(WRK_LUA.format(body=json.dumps(json.dumps(batch[0] if records == 1 else batch))))
    command = ["wrk", "-t1", f"-c{connections}", "-d5s", "--latency", "-s", str(script)]
    out = subprocess.run([*command, f"http://127.0.0.1:{port}/predict"], capture_output=True, text=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {
        "requests_per_s": rate,
        "rows_per_s": rate * records,
        "p50_ms": float(p50.group(1)) * scale[p50.group(2)] if p50 else float("nan"),
    }


def build(
    engine: docker_engine.DockerEngine, tag: str, requirements: list[str], base: str, buildargs: dict[str, str]
) -> dict[str, Any]:
    wheelhouse = docker_engine.prepare_wheelhouse(wheelhouse_dir(), requirements)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="flowship-image-size-") as tmp:
        context = docker_engine.build_context(Path(tmp) / "context", BUNDLE, wheelhouse, requirements)
        engine.build(context, tag, buildargs={"BASE_IMAGE": base, **buildargs})
    return {
        "image": tag,
        "size_mb": engine.image_size(tag) / 1e6,
        "built_in_s": time.monotonic() - started,
        "packages": len(requirements),
    }


def container(image: dict[str, Any]) -> str:
    return str(image["image"]).replace("/", "-").replace(":", "-")


def measure(engine: docker_engine.DockerEngine, images: dict[str, dict[str, Any]], folder: Path) -> None:
    """Start every image at once; the ready ones get each load in turn, image after image, ROUNDS times (medians
    kept: the machine's noise falls on all of them alike). Each round starts one image further down the list, so
    that no image is always the first after a change of load."""
    ports: dict[str, int] = {}
    try:
        for label, image in images.items():
            engine.remove(container(image))
            ports[label] = free_port()
            engine.run(image["image"], container(image), ports[label], folder / container(image), restart_policy="no")
        for label, image in images.items():
            image["golden_check_passed"], answer = ready(ports[label])
            image["ready_answer"] = answer[:300]
        runs: dict[str, dict[str, list[dict[str, float]]]] = {label: {} for label in images}
        labels = list(images)
        for round_ in range(ROUNDS):
            order = labels[round_ % len(labels) :] + labels[: round_ % len(labels)]
            for load, records, connections, _key in LOADS:
                for label in order:
                    if images[label]["golden_check_passed"]:
                        runs[label].setdefault(load, []).append(wrk(ports[label], records, connections, folder))
        for label, image in images.items():
            image["speed"] = {
                load: {key: statistics.median(run[key] for run in done) for key in done[0]}
                for load, done in runs[label].items()
            }
    finally:
        for image in images.values():
            engine.remove(container(image))


def main() -> int:
    if not (BUNDLE / "model.pkl").exists():
        print(f"missing {BUNDLE}: run `make run` first", file=sys.stderr)
        return 1
    engine = docker_engine.DockerEngine()
    if not engine.available():
        print("no Docker daemon answers", file=sys.stderr)
        return 1
    base = engine.ensure_base_image(DEFAULT_BASE)
    packages = docker_engine.SERVING_PACKAGES
    plain_http = tuple(p for p in packages if p not in ("uvloop", "httptools"))
    requirements = docker_engine.serving_requirements()
    variants: dict[str, tuple[str, list[str], dict[str, str]]] = {
        "as flowship builds it": ("serving", requirements, {}),
        "libraries whole": ("whole", requirements, {"SLIM_LIBRARIES": "0"}),
        "without uvloop, httptools": ("h11", docker_engine.serving_requirements(plain_http), {}),
        "with pyarrow added": ("pyarrow", docker_engine.serving_requirements((*packages, "pyarrow")), {}),
    }
    results: dict[str, Any] = {"command": shlex.join([sys.executable, *sys.argv]), "base_image": base, "images": {}}
    for label, (suffix, pins, buildargs) in variants.items():
        tag = f"flowship/image-size:{suffix}"
        print(f"building {tag} ({len(pins)} packages) ...", flush=True)
        results["images"][label] = build(engine, tag, pins, base, buildargs)
    print(f"measuring: {ROUNDS} rounds, each load on each image in turn ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="flowship-image-size-") as tmp:
        measure(engine, results["images"], Path(tmp))
    print()
    for label, image in results["images"].items():
        verdict = "golden check passed" if image["golden_check_passed"] else f"NOT READY: {image['ready_answer']}"
        speed = image["speed"]
        shown = "; ".join(
            f"{load} {speed[load][key]:,.1f} {key.replace('_per_s', '/s').replace('_ms', ' ms')}"
            for load, _, _, key in LOADS
            if load in speed
        )
        print(f"{label:<26} {image['image']:<30} {image['size_mb']:5.0f} MB  {verdict}  {shown}")
    size = results["images"]["as flowship builds it"]["size_mb"]
    for label in ("with pyarrow added", "libraries whole"):
        other = results["images"][label]["size_mb"]
        print(f"saved against '{label}': {other - size:.0f} MB ({size / other:.2f}x)")
    verdict = "met" if size <= AIM_MB else "MISSED"
    print(f"aim <= {AIM_MB} MB: {verdict}")
    print(f"command: {results['command']}")
    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    OUT_JSON.write_text(json.dumps(results, indent=2) + "\n")
    for image in results["images"].values():
        engine.remove_image(image["image"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
