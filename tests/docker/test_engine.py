"""The Docker adapter against a real daemon: wheelhouse, build context, image, container, cache, failures.

The image is built from the repository's Dockerfile with a stand-in serving app (written into the build
context only): it loads a real pickled model and writes to the log folder, as the real app does.
"""

from __future__ import annotations

import fcntl
import io
import json
import re
import shutil
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from flowship.adapters import docker_engine as de
from flowship.adapters.docker_engine import DockerEngine
from flowship.errors import ContainerError, ImageBuildError
from tests.helpers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TEST_LABEL = "flowship-test"  # the model name of every image built here (dangling ones are pruned by it)
APP_UID = 10001

STAND_IN_APP = '''
"""Stand-in for flowship.serving: the same environment, model bundle and log folder, a trivial app."""
import json, os, time
from pathlib import Path

import cloudpickle
import pandas as pd
import uvicorn
from fastapi import FastAPI

model_dir = Path(os.environ.get("FLOWSHIP_MODEL_DIR", "/app/model"))
log_dir = Path(os.environ.get("FLOWSHIP_LOG_DIR", "/var/log/flowship"))
model = cloudpickle.loads((model_dir / "model.pkl").read_bytes())
metadata = json.loads((model_dir / "metadata.json").read_text())
app = FastAPI()


def log(record):
    with open(log_dir / "inference.jsonl", "a") as out:
        out.write(json.dumps({"ts": time.time(), **record}) + "\\n")


@app.get("/health")
def health():
    return {"status": "ok", "uid": os.getuid(), "model_version": metadata["version"]}


@app.post("/predict")
def predict(body: dict):
    frame = pd.DataFrame(body["rows"])
    predictions = [float(p) for p in model.predict_proba(frame)[:, 1]]
    log({"rows": len(frame), "predictions": predictions})
    return {"predictions": predictions, "model_version": metadata["version"]}


log({"event": "started"})
uvicorn.run(app, host="0.0.0.0", port=int(os.environ.get("FLOWSHIP_PORT", "8000")), log_level="warning")
'''


def http_json(url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def write_bundle(folder: Path, version_: str, seed: int) -> Path:
    """A real (tiny) model bundle: a pickled classifier on two features, its metadata and golden rows."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"dep_delay": rng.normal(0, 30, 200), "distance": rng.uniform(100, 3000, 200)})
    target = (frame["dep_delay"] > 10).astype(int)
    model = LogisticRegression().fit(frame, target)
    folder.mkdir(parents=True)
    (folder / "model.pkl").write_bytes(cloudpickle.dumps(model))
    # A nonce: the model layer of this run can never be a cache hit left by an earlier run.
    metadata = {"name": TEST_LABEL, "version": version_, "nonce": uuid.uuid4().hex}
    (folder / "metadata.json").write_text(json.dumps(metadata))
    golden = frame.head(3)
    (folder / "golden.json").write_text(
        json.dumps({"rows": golden.to_dict("records"), "predictions": model.predict_proba(golden)[:, 1].tolist()})
    )
    return folder


@pytest.fixture(scope="module")
def source_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's Dockerfile and serving-code layout, with the stand-in app as flowship.serving."""
    root = tmp_path_factory.mktemp("source")
    for name in ("Dockerfile", ".dockerignore", *(p for p in de.SERVING_CODE if p.endswith(".py"))):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / name, root / name)
    (root / "flowship/serving").mkdir()
    (root / "flowship/serving/__init__.py").write_text("")
    (root / "flowship/serving/__main__.py").write_text(STAND_IN_APP)
    return root


class Built:
    def __init__(self, tag: str, image_id: str, log: list[str], seconds: float) -> None:
        self.tag, self.image_id, self.log, self.seconds = tag, image_id, log, seconds


def build(
    engine: DockerEngine, base: str, context: Path, tag: str, model_version: str, commit: str = "abc1234"
) -> Built:
    lines: list[str] = []
    started = time.monotonic()
    image_id = engine.build(
        context,
        tag,
        labels={"io.flowship.test": "1"},
        buildargs={
            "BASE_IMAGE": base,
            "MODEL_NAME": TEST_LABEL,
            "MODEL_VERSION": model_version,
            "DATA_HASH": "d41d8cd98f00b204e9800998ecf8427e",
            "GIT_COMMIT": commit,
            "CREATED": "2025-01-01T00:00:00Z",
        },
        on_log=lines.append,
    )
    return Built(tag, image_id, lines, time.monotonic() - started)


@pytest.fixture(scope="module")
def image(
    docker_engine: DockerEngine,
    base_image: str,
    wheelhouse: Path,
    requirements: list[str],
    source_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Built]:
    """The stand-in image for model v1 (fixed tag: the layers stay cached for the next session)."""
    tmp = tmp_path_factory.mktemp("v1")
    bundle = write_bundle(tmp / "bundle", "1", seed=1)
    context = de.build_context(tmp / "context", bundle, wheelhouse, requirements, source_root=source_root)
    built = build(docker_engine, base_image, context, f"{TEST_LABEL}/standin:v1", "1")
    yield built
    docker_engine.client.images.prune(filters={"dangling": True, "label": f"io.flowship.model.name={TEST_LABEL}"})


@pytest.fixture
def container_name(docker_engine: DockerEngine) -> Iterator[str]:
    name = f"{TEST_LABEL}-{uuid.uuid4().hex[:8]}"
    yield name
    docker_engine.remove(name)


# --- no daemon needed ---


def test_serving_requirements_pin_this_interpreter(requirements: list[str]) -> None:
    pins = dict(line.split("==") for line in requirements)
    served = ("scikit-learn", "pandas", "numpy", "scipy", "cloudpickle", "fastapi", "uvicorn", "pyyaml", "orjson")
    for package in (*served, "uvloop", "httptools"):
        assert pins[package] == version(package)
    # Dependencies too: pydantic needs its exact pydantic-core, fastapi its starlette.
    assert pins["pydantic-core"] == version("pydantic-core")
    assert "starlette" in pins
    assert "pytest" not in pins and "mlflow" not in pins
    assert "pyarrow" not in pins  # a quarter of the image, and the model answers its golden records without it


def test_wheelhouse_is_complete_and_reused(
    wheelhouse: Path, requirements: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    wheels, missing = de._wheels_for(wheelhouse, requirements)
    assert missing == [] and len(wheels) == len(requirements)

    def no_pip(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"pip ran although every wheel is there: {args}")

    monkeypatch.setattr(de.subprocess, "run", no_pip)
    assert de.prepare_wheelhouse(wheelhouse, requirements) == wheelhouse


def test_a_wheelhouse_being_filled_is_waited_for_not_filled_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    downloads: list[list[str]] = []
    monkeypatch.setattr(de.subprocess, "run", lambda cmd, **kw: downloads.append(cmd))  # never reached, below
    requirement, wheel = "tiny==1.0", "tiny-1.0-py3-none-any.whl"
    folder = tmp_path / "wheelhouse"
    folder.mkdir()
    outcome: list[object] = []
    with (folder / ".lock").open("w") as held:  # another release is downloading into the folder
        fcntl.flock(held, fcntl.LOCK_EX)
        waiting = threading.Thread(target=lambda: outcome.append(de.prepare_wheelhouse(folder, [requirement])))
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive() and outcome == []  # waits for the other download to finish
        (folder / wheel).write_bytes(b"")  # what the other download leaves
    waiting.join(30)
    assert outcome == [folder] and downloads == []  # found the wheel there: nothing downloaded again


def test_build_context_holds_exactly_what_the_dockerfile_copies(
    tmp_path: Path, wheelhouse: Path, requirements: list[str], source_root: Path
) -> None:
    bundle = write_bundle(tmp_path / "bundle", "1", seed=1)
    (bundle / "model.pkl").chmod(0o600)  # the image's non-root user must still read it
    context = de.build_context(tmp_path / "context", bundle, wheelhouse, requirements, source_root=source_root)
    assert sorted(p.name for p in context.iterdir()) == [
        ".dockerignore",
        "Dockerfile",
        "flowship",
        "model",
        "requirements.txt",
        "wheelhouse",
    ]
    assert (context / "requirements.txt").read_text().split() == requirements
    assert len(list((context / "wheelhouse").glob("*.whl"))) == len(requirements)
    assert sorted(p.name for p in (context / "model").iterdir()) == ["golden.json", "metadata.json", "model.pkl"]
    assert (context / "model/model.pkl").stat().st_mode & 0o777 == 0o644
    assert (context / "flowship/serving/__main__.py").is_file()


def test_build_context_refuses_a_requirement_without_a_wheel(
    tmp_path: Path, wheelhouse: Path, requirements: list[str], source_root: Path
) -> None:
    bundle = write_bundle(tmp_path / "bundle", "1", seed=1)
    with pytest.raises(ImageBuildError, match="no wheel for: scikit-learn==0.0.1") as caught:
        de.build_context(tmp_path / "context", bundle, wheelhouse, [*requirements, "scikit-learn==0.0.1"])
    assert caught.value.step == "build context"


# --- against the daemon ---


def test_image_carries_labels_user_and_size(docker_engine: DockerEngine, image: Built) -> None:
    labels = docker_engine.labels(image.tag)
    assert labels["org.opencontainers.image.title"] == f"flowship-{TEST_LABEL}"
    assert labels["org.opencontainers.image.version"] == "1"
    assert labels["org.opencontainers.image.revision"] == "abc1234"
    assert labels["org.opencontainers.image.created"] == "2025-01-01T00:00:00Z"
    assert labels["io.flowship.model.name"] == TEST_LABEL
    assert labels["io.flowship.model.version"] == "1"
    assert labels["io.flowship.data.hash"] == "d41d8cd98f00b204e9800998ecf8427e"
    assert labels["io.flowship.git.commit"] == "abc1234"
    assert labels["io.flowship.test"] == "1"  # build(labels=...) adds to the Dockerfile's
    config = docker_engine.client.images.get(image.tag).attrs["Config"]
    assert config["User"] == f"{APP_UID}:{APP_UID}"
    assert config["Env"] and "FLOWSHIP_MODEL_DIR=/app/model" in config["Env"]
    assert "FLOWSHIP_LOG_DIR=/var/log/flowship" in config["Env"]
    assert config["Healthcheck"]["Test"][:2] == ["CMD", "python"]
    assert config["Cmd"] == ["python", "-m", "flowship.serving"]
    assert "8000/tcp" in config["ExposedPorts"]
    assert image.image_id.startswith("sha256:")
    size_mb = docker_engine.image_size(image.tag) / 1e6
    print(f"\ncold-or-warm build {image.seconds:.1f} s, image {size_mb:.0f} MB")
    assert 100 < size_mb < 700


# Run inside the image: what the Dockerfile's slimming left of the libraries, and of flowship's own code.
SLIM_PROBE = """
import json, struct, sys, sysconfig, traceback
from pathlib import Path

def sections(path):
    data = path.read_bytes()
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    size, count, names_index = struct.unpack_from("<HHH", data, 0x3A)
    (names_at,) = struct.unpack_from("<Q", data, shoff + names_index * size + 0x18)
    found = []
    for i in range(count):
        (name,) = struct.unpack_from("<I", data, shoff + i * size)
        start = names_at + name
        found.append(data[start:data.index(b"\\0", start)].decode())
    return found

site = Path(sysconfig.get_path("purelib"))
import fastapi, numpy, orjson, pandas, prometheus_client, pydantic, scipy, sklearn, uvicorn, uvloop  # noqa
import sklearn.ensemble, sklearn.pipeline, scipy.sparse, scipy.special
try:
    sklearn.utils.check_array([[1, "a"]], dtype=float)
except ValueError:
    frame = traceback.extract_tb(sys.exc_info()[2])[-1]
modules = [p for p in site.rglob("*.so") if ".libs" not in p.parent.name]
print(json.dumps({
    "sources": sorted(str(p.relative_to(site)) for p in site.rglob("*.py"))[:5],
    "caches": sorted(str(p.relative_to(site)) for p in site.rglob("__pycache__"))[:5],
    "headers": sorted(str(p.relative_to(site)) for p in site.rglob("*.h"))[:5],
    "modules": len(modules),
    "with_symbols": sorted(str(p.relative_to(site)) for p in modules if ".symtab" in sections(p))[:5],
    "uvloop_sections": sections(next(site.glob("uvloop/loop.*.so"))),
    "frame": [frame.filename, frame.lineno, frame.line],
    "own_code": sorted(p.name for p in Path("/app/flowship").glob("*.py")),
}))
"""


def test_the_image_slims_the_libraries_and_keeps_flowships_sources(docker_engine: DockerEngine, image: Built) -> None:
    found = slim_probe(docker_engine, image.tag)
    # bytecode where the sources were, and nothing a build reads (headers, Cython, stubs)
    assert found["sources"] == [] and found["caches"] == [] and found["headers"] == []
    # compiled modules keep what loading needs (.dynsym), not the symbol tables
    assert found["modules"] > 50 and found["with_symbols"] == []
    assert ".dynsym" in found["uvloop_sections"] and ".symtab" not in found["uvloop_sections"]
    # a library's traceback still names its file and line; the line's text is what slimming gave up
    filename, line, text = found["frame"]
    assert filename.endswith("/site-packages/sklearn/utils/_array_api.py") or filename.endswith(
        "/site-packages/sklearn/utils/validation.py"
    )
    assert line > 0 and not text
    assert {"__init__.py", "errors.py", "values.py"} <= set(found["own_code"])


def slim_probe(engine: DockerEngine, tag: str) -> dict[str, Any]:
    output = engine.client.containers.run(tag, ["python", "-c", SLIM_PROBE], remove=True)
    return dict(json.loads(output.decode().strip().splitlines()[-1]))


def test_without_a_debian_mirror_the_image_keeps_its_symbols_and_a_later_build_strips_again(
    docker_engine: DockerEngine,
    base_image: str,
    wheelhouse: Path,
    requirements: list[str],
    source_root: Path,
    tmp_path: Path,
) -> None:
    """No network in the build, so no binutils: the first attempt fails at that step, naming it; flowship builds
    again with STRIP_SYMBOLS=0 (slimmed, symbol tables kept) and says so. Nothing of the failed step was cached:
    the same build with a mirror strips.

    Built on a base of its own (the base plus a label unique to this run): none of its layers is in the cache, so
    the offline path is taken, and the other tests' builds never meet its layers."""
    run = uuid.uuid4().hex[:12]
    base = f"{TEST_LABEL}/offline-base:{run}"
    own = f"io.flowship.test.offline={run}"  # every image built from `base` inherits it
    dockerfile = f"FROM {base_image}\nLABEL io.flowship.test.offline={run}\n".encode()
    docker_engine.client.images.build(fileobj=io.BytesIO(dockerfile), tag=base, rm=True, pull=False)
    bundle = write_bundle(tmp_path / "bundle", "4", seed=4)
    context = de.build_context(tmp_path / "context", bundle, wheelhouse, requirements, source_root=source_root)
    tag = f"{TEST_LABEL}/standin:offline"
    lines: list[str] = []
    try:
        de.build_serving(
            docker_engine,
            context,
            tag,
            labels={},
            buildargs={"BASE_IMAGE": base},
            on_log=lines.append,
            network_mode="none",
        )
        said = [line for line in lines if line.startswith(de.NO_STRIP)]  # not the step's own line, which quotes it
        assert len(said) == 2, lines[-20:]
        assert "(no Debian mirror answered): build with STRIP_SYMBOLS=0" in said[0]  # the failed attempt
        assert "building again with STRIP_SYMBOLS=0" in said[1]  # flowship's retry
        offline = slim_probe(docker_engine, tag)
        assert offline["sources"] == [] and offline["headers"] == []
        assert offline["with_symbols"] != [] and ".symtab" in offline["uvloop_sections"]

        lines.clear()
        de.build_serving(docker_engine, context, tag, labels={}, buildargs={"BASE_IMAGE": base}, on_log=lines.append)
        assert not any(line.startswith(de.NO_STRIP) for line in lines)
        assert slim_probe(docker_engine, tag)["with_symbols"] == []
    finally:
        for name in (tag, base):
            if docker_engine.image_exists(name):
                docker_engine.client.images.remove(name, force=True)
        docker_engine.client.images.prune(filters={"dangling": True, "label": own})


def test_container_serves_logs_and_stops(
    docker_engine: DockerEngine, image: Built, container_name: str, tmp_path: Path
) -> None:
    port = free_port()
    log_dir = tmp_path / "logs"
    docker_engine.run(image.tag, container_name, port, log_dir, env={"FLOWSHIP_API_TOKEN": "t0ken"})
    docker_engine.wait_healthy(container_name, timeout=60)

    info = docker_engine.container(container_name)
    assert info is not None
    assert (info.status, info.health, info.host_port, info.image) == ("running", "healthy", port, image.tag)
    assert info.restart_policy == "unless-stopped"
    assert info.labels["io.flowship.model.version"] == "1"
    published = docker_engine.client.containers.get(container_name).attrs["HostConfig"]["PortBindings"]
    assert published == {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}

    docker_engine.wait_healthy(f"http://127.0.0.1:{port}/health", timeout=10)
    status, health = http_json(f"http://127.0.0.1:{port}/health")
    assert (status, health) == (200, {"status": "ok", "uid": APP_UID, "model_version": "1"})
    rows = [{"dep_delay": 60.0, "distance": 500.0}, {"dep_delay": -20.0, "distance": 500.0}]
    status, answer = http_json(f"http://127.0.0.1:{port}/predict", {"rows": rows})
    assert status == 200
    assert answer["predictions"][0] > 0.5 > answer["predictions"][1]

    # The bind-mounted log folder is written by the container's non-root user.
    records = [json.loads(line) for line in (log_dir / "inference.jsonl").read_text().splitlines()]
    assert records[0]["event"] == "started"
    assert records[-1]["predictions"] == answer["predictions"]
    assert (log_dir / "inference.jsonl").stat().st_uid == APP_UID

    docker_engine.stop(container_name, timeout=10)
    info = docker_engine.container(container_name)
    assert info is not None and info.status == "exited"
    exit_code = docker_engine.client.containers.get(container_name).attrs["State"]["ExitCode"]
    assert exit_code != 137, "the app should stop on SIGTERM, not be killed by SIGKILL"
    docker_engine.remove(container_name)
    assert docker_engine.container(container_name) is None
    docker_engine.remove(container_name)  # nothing left: a no-op


def test_a_new_model_rebuilds_only_the_model_layer(
    docker_engine: DockerEngine,
    base_image: str,
    image: Built,
    wheelhouse: Path,
    requirements: list[str],
    source_root: Path,
    tmp_path: Path,
) -> None:
    bundle = write_bundle(tmp_path / "bundle", "2", seed=2)
    context = de.build_context(tmp_path / "context", bundle, wheelhouse, requirements, source_root=source_root)
    rebuilt = build(docker_engine, base_image, context, f"{TEST_LABEL}/standin:v2", "2", commit="def5678")
    print(f"\nrebuild with a new model: {rebuilt.seconds:.1f} s")

    steps = split_steps(rebuilt.log)
    model_step = next(i for i, (title, _) in enumerate(steps) if "COPY model/" in title)
    assert model_step >= len(steps) - 10, "the model is copied last (only ARG/LABEL after it)"
    for title, output in steps[:model_step]:
        if re.search(r": (FROM|ARG BASE_IMAGE)", title):
            continue  # FROM only names the base; the global ARG makes no layer
        assert any("Using cache" in line for line in output), f"{title} was not cached:\n{output}"
    assert not any("Using cache" in line for line in steps[model_step][1])
    assert rebuilt.image_id != image.image_id
    assert docker_engine.labels(rebuilt.tag)["io.flowship.model.version"] == "2"


def split_steps(log: list[str]) -> list[tuple[str, list[str]]]:
    steps: list[tuple[str, list[str]]] = []
    for line in log:
        if line.startswith("Step "):
            steps.append((line, []))
        elif steps:
            steps[-1][1].append(line)
    return steps


def test_a_failing_build_names_its_step(
    docker_engine: DockerEngine,
    base_image: str,
    image: Built,
    wheelhouse: Path,
    requirements: list[str],
    source_root: Path,
    tmp_path: Path,
) -> None:
    bundle = write_bundle(tmp_path / "bundle", "3", seed=3)
    context = de.build_context(tmp_path / "context", bundle, wheelhouse, requirements, source_root=source_root)
    (context / "requirements.txt").write_text("scikit-learn==0.0.1\n")
    with pytest.raises(ImageBuildError) as caught:
        build(docker_engine, base_image, context, f"{TEST_LABEL}/standin:broken", "3")
    assert "RUN /opt/venv/bin/python -m pip install" in caught.value.step
    assert caught.value.step in str(caught.value)
    assert "returned a non-zero code" in caught.value.reason
    assert any("scikit-learn==0.0.1" in line for line in caught.value.log_tail)
    assert not docker_engine.image_exists(f"{TEST_LABEL}/standin:broken")


def test_a_build_that_fails_for_another_reason_is_not_built_again(
    docker_engine: DockerEngine,
    base_image: str,
    wheelhouse: Path,
    requirements: list[str],
    source_root: Path,
    tmp_path: Path,
) -> None:
    bundle = write_bundle(tmp_path / "bundle", "5", seed=5)
    context = de.build_context(tmp_path / "context", bundle, wheelhouse, requirements, source_root=source_root)
    (context / "requirements.txt").write_text("scikit-learn==0.0.1\n")
    lines: list[str] = []
    with pytest.raises(ImageBuildError, match="pip install"):
        de.build_serving(
            docker_engine,
            context,
            f"{TEST_LABEL}/standin:broken",
            labels={},
            buildargs={"BASE_IMAGE": base_image},
            on_log=lines.append,
        )
    assert not any(line.startswith(de.NO_STRIP) for line in lines)
    assert sum(line.startswith("Step 1/") for line in lines) == 1  # one attempt


def test_a_container_that_dies_is_reported(
    docker_engine: DockerEngine, image: Built, container_name: str, tmp_path: Path
) -> None:
    docker_engine.run(
        image.tag,
        container_name,
        free_port(),
        tmp_path / "logs",
        env={"FLOWSHIP_MODEL_DIR": "/nowhere"},
        restart_policy="no",
    )
    with pytest.raises(ContainerError, match="stopped .*before it was healthy") as caught:
        docker_engine.wait_healthy(container_name, timeout=30)
    assert "/nowhere/model.pkl" in str(caught.value)
    info = docker_engine.container(container_name)
    assert info is not None and info.restart_policy == "no"


def test_a_container_given_a_static_address_keeps_it_when_restarted(
    docker_engine: DockerEngine, image: Built, tmp_path: Path
) -> None:
    """Without one, a restarted container takes the lowest free address, which is another's old one once a container
    before it was removed: a gateway that knows it by address would lose it."""
    network = f"{TEST_LABEL}-net-{uuid.uuid4().hex[:6]}"
    names = [f"{TEST_LABEL}-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    docker_engine.ensure_network(network)
    try:
        given = []
        for name in names:
            address = docker_engine.static_address(network)
            docker_engine.run(image.tag, name, None, tmp_path / "logs", network=network, address=address)
            given.append(address)
        assert len(set(given)) == 3 and None not in given
        assert [docker_engine.address(name, network) for name in names] == given
        docker_engine.remove(names[1])  # an address below the last one falls free
        docker_engine.client.containers.get(names[2]).restart(timeout=0)
        docker_engine.wait_healthy(names[2], timeout=60)
        assert docker_engine.address(names[2], network) == given[2]
        assert docker_engine.static_address(network) == given[1]  # free again: handed out again
    finally:
        for name in names:
            docker_engine.remove(name)
        docker_engine.remove_network(network)
