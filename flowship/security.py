"""`make audit`: the known vulnerabilities of the locked dependencies (pip-audit, against PyPI's or OSV's advisories),
the code's static security findings (bandit), and an SBOM of the serving image's environment (CycloneDX).

A finding passes only when the reviewed ignore list (`audit.toml`) explains it, with an expiry: past its date an entry
fails the audit until someone reviews it again. A dependency the vulnerability service could not check fails too:
an unreachable service, or one that does not know a locked version, is never a pass.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import json
import shutil
import subprocess  # nosec B404: the audit runs its tools (uv, pip-audit, bandit) as processes
import sys
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowship.errors import AuditError, FlowshipError
from flowship.files import atomic_write

IGNORE_FILE = "audit.toml"
OUT_DIR = "reports/audit"
SERVICES = ("pypi", "osv")
DEFAULT_URLS = {"pypi": "https://pypi.org/pypi", "osv": "https://api.osv.dev/v1/query"}
SCANNED = ("flowship",)  # the code bandit reads
_ENTRY_KEYS = {
    "vulnerability": {"id", "package", "reason", "expires"},
    "static": {"test", "files", "reason", "expires"},
}


@dataclass(frozen=True)
class Finding:
    kind: str  # vulnerability | static
    key: str  # the advisory id, or the bandit test id
    where: str  # the package==version, or path:line
    text: str
    aliases: tuple[str, ...] = ()

    def __str__(self) -> str:
        also = f" (also {', '.join(self.aliases)})" if self.aliases else ""
        return f"{self.where}: {self.key}{also}: {self.text}"


@dataclass(frozen=True)
class Waiver:
    kind: str
    key: str  # the advisory id, or the bandit test id
    scope: tuple[str, ...]  # the package (vulnerability), or the file patterns (static)
    reason: str
    expires: dt.date

    def covers(self, finding: Finding) -> bool:
        if finding.kind != self.kind or self.key not in (finding.key, *finding.aliases):
            return False
        if self.kind == "vulnerability":
            return finding.where.split("==")[0].lower() == self.scope[0]
        path = finding.where.rsplit(":", 1)[0]
        return any(fnmatch.fnmatch(path, pattern) for pattern in self.scope)


def load_waivers(path: Path) -> list[Waiver]:
    """The reviewed ignore list; AuditError naming each entry that is malformed."""
    if not path.exists():
        return []
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise AuditError(f"{path}: not valid TOML: {exc}") from exc
    problems: list[str] = []
    waivers: list[Waiver] = []
    for section in doc:
        if section not in _ENTRY_KEYS:
            problems.append(f"[[{section}]]: unknown section (allowed: {', '.join(_ENTRY_KEYS)})")
    for kind, keys in _ENTRY_KEYS.items():
        entries = doc.get(kind, [])
        if not isinstance(entries, list):
            problems.append(f"{kind}: must be a list of [[{kind}]] tables")
            continue
        for n, entry in enumerate(entries, 1):
            where = f"[[{kind}]] #{n}"
            if not isinstance(entry, dict):
                problems.append(f"{where}: must be a table of {', '.join(sorted(keys))}")
                continue
            missing, unknown = keys - entry.keys(), entry.keys() - keys
            if missing or unknown:
                problems += [f"{where}: missing {k!r}" for k in sorted(missing)]
                problems += [f"{where}: unknown key {k!r}" for k in sorted(unknown)]
                continue
            if not isinstance(entry["expires"], dt.date) or isinstance(entry["expires"], dt.datetime):
                problems.append(f"{where}: expires = {entry['expires']!r} must be a date such as 2027-06-30")
                continue
            if not str(entry["reason"]).strip():
                problems.append(f"{where}: the reason is empty")
                continue
            if kind == "static" and (
                not isinstance(entry["files"], list) or not all(isinstance(f, str) for f in entry["files"])
            ):
                problems.append(f"{where}: files = {entry['files']!r} must be a list of glob patterns")
                continue
            key = str(entry["id"] if kind == "vulnerability" else entry["test"])
            scope = (str(entry["package"]).lower(),) if kind == "vulnerability" else tuple(map(str, entry["files"]))
            waivers.append(Waiver(kind, key, scope, str(entry["reason"]), entry["expires"]))
    if problems:
        raise AuditError(f"{path} is not a valid ignore list:\n" + "\n".join(f"  - {p}" for p in problems))
    return waivers


def _run(command: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which(command[0]) is None:
        raise AuditError(f"{command[0]} is not on PATH: run `make setup`")
    return subprocess.run(list(command), cwd=cwd, capture_output=True, text=True, check=False)  # nosec B603


def _tool(name: str) -> str:
    """A tool installed beside this Python (the project's venv), else from PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def locked_requirements(root: Path) -> list[str]:
    """Every locked package of the project (all extras) as name==version, from uv.lock."""
    done = _run(
        ["uv", "export", "--frozen", "--all-extras", "--no-hashes", "--no-emit-project", "--no-header"], cwd=root
    )
    if done.returncode != 0:
        raise AuditError(f"uv export could not read {root / 'uv.lock'}: {done.stderr.strip()}")
    lines = [line.strip() for line in done.stdout.splitlines()]
    return [line for line in lines if line and not line.startswith(("#", "-"))]


def vulnerabilities(
    requirements: Sequence[str], root: Path, service: str = "pypi", osv_url: str | None = None, timeout: int = 15
) -> list[Finding]:
    """The known vulnerabilities of `requirements` (name==version lines). AuditError when the service cannot be
    reached or does not know a package: nothing unchecked passes."""
    if service not in SERVICES:
        raise AuditError(f"vulnerability service {service!r}: allowed values are {', '.join(SERVICES)}")
    req_file = root / OUT_DIR / "locked-requirements.txt"
    atomic_write(req_file, "\n".join(requirements) + "\n")
    command = [_tool("pip-audit"), "--requirement", str(req_file), "--no-deps", "--disable-pip"]
    command += ["--vulnerability-service", service, "--format", "json", "--progress-spinner", "off"]
    command += ["--timeout", str(timeout)] + (["--osv-url", osv_url] if osv_url else [])
    done = _run(command, cwd=root)
    return read_pip_audit(done.stdout, done.stderr, f"{service} at {osv_url or DEFAULT_URLS[service]}")


def read_pip_audit(stdout: str, stderr: str, service: str) -> list[Finding]:
    """The findings in pip-audit's JSON report. AuditError when there is no report (the service could not be reached)
    or when the service could not check a package (pip-audit then skips it and would pass)."""
    try:
        report = json.loads(stdout)
    except json.JSONDecodeError:
        report = None
    if not isinstance(report, dict) or "dependencies" not in report:
        cause = next((ln for ln in reversed(stderr.strip().splitlines()) if ln.strip()), "no output")
        raise AuditError(
            f"the vulnerability service ({service}) could not be reached or did not answer: {cause}; "
            "no dependency was checked"
        )
    deps = report["dependencies"]
    unchecked = [d for d in deps if d.get("skip_reason")]
    if unchecked:
        names = ", ".join(str(d["name"]) for d in unchecked[:5])
        raise AuditError(
            f"{len(unchecked)} of {len(deps)} locked packages could not be checked by the vulnerability service "
            f"({service}), e.g. {names}: {unchecked[0]['skip_reason']}; an unchecked package is not a pass"
        )
    return [
        Finding(
            "vulnerability",
            str(vuln["id"]),
            f"{dep['name']}=={dep['version']}",
            f"{(vuln.get('description') or '').strip()[:200]} "
            f"(fixed in: {', '.join(vuln.get('fix_versions') or ['-'])})",
            tuple(map(str, vuln.get("aliases") or ())),
        )
        for dep in deps
        for vuln in dep.get("vulns", [])
    ]


def static_findings(root: Path, targets: Sequence[str] = SCANNED) -> list[Finding]:
    """bandit's findings in `targets` (folders of `root`), every severity."""
    done = _run([_tool("bandit"), "--recursive", "--format", "json", "--quiet", *targets], cwd=root)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise AuditError(f"bandit failed on {', '.join(targets)}: {done.stderr.strip() or done.stdout[:500]}") from exc
    if report.get("errors"):
        failed = "; ".join(f"{e.get('filename')}: {e.get('reason')}" for e in report["errors"])
        raise AuditError(f"bandit could not read: {failed}")
    return [
        Finding(
            "static",
            str(r["test_id"]),
            f"{Path(r['filename']).as_posix()}:{r['line_number']}",
            f"{r['issue_text']} [{r['issue_severity'].lower()} severity]",
        )
        for r in report.get("results", [])
    ]


def write_sbom(requirements: Sequence[str], out: Path) -> Path:
    """A CycloneDX 1.6 SBOM (JSON) of `requirements` (pins, `name==version`): the serving image's environment, as
    the image is built with it. Reproducible: no serial number, no timestamp.

    Written with cyclonedx-python-lib (pip-audit's own SBOM library) rather than the `cyclonedx-py` tool: the tool
    needs the library's schema validation, whose jsonschema format checkers cost every process that imports Prefect
    about a second."""
    from cyclonedx.model import Property
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6
    from packageurl import PackageURL

    components = []
    for pin in requirements:
        name, pinned, version = pin.partition("==")
        if not (name and pinned and version):
            raise AuditError(f"the SBOM takes pinned requirements (name==version), not {pin!r}")
        purl = PackageURL(type="pypi", name=name, version=version)
        components.append(
            Component(type=ComponentType.LIBRARY, name=name, version=version, purl=purl, bom_ref=purl.to_string())
        )
    bom = Bom(components=components, metadata=BomMetaData(properties=[Property(name="cdx:reproducible", value="true")]))
    document = json.loads(JsonV1Dot6(bom).output_as_string())
    document.pop("serialNumber", None)  # random, and the time of writing: left out, as a reproducible BOM does
    document.get("metadata", {}).pop("timestamp", None)
    atomic_write(out, json.dumps(document, indent=2) + "\n")
    return out


@dataclass
class AuditOutcome:
    """What `make audit` found: each part's open findings (or the error that stopped it), and what was waived."""

    order: list[str]  # the parts, in the order they ran
    open: dict[str, list[Finding]]
    errors: dict[str, str]
    waived: list[tuple[Finding, Waiver]]
    expired: list[Waiver]
    sbom: Path | None

    @property
    def passed(self) -> bool:
        return not self.errors and not self.expired and not any(self.open.values())

    def lines(self) -> list[str]:
        out: list[str] = []
        for part in self.order:
            if part in self.errors:
                out.append(f"{part}: NOT CHECKED: {self.errors[part]}")
                continue
            if part == "SBOM":
                out.append(f"SBOM of the serving image's environment: {self.sbom}")
                continue
            findings = self.open[part]
            out.append(f"{part}: {'no open finding' if not findings else f'{len(findings)} open finding(s)'}")
            out += [f"  - {f}" for f in findings]
        if self.waived:
            out.append(f"waived by {IGNORE_FILE} (reviewed, not expired): {len(self.waived)} finding(s)")
        for w in self.expired:
            out.append(
                f"{IGNORE_FILE}: the entry for {w.key} ({', '.join(w.scope)}) expired on {w.expires}: review it again"
            )
        out.append("audit: PASSED" if self.passed else "audit: FAILED")
        return out


def audit(
    root: Path,
    serving: Sequence[str],
    service: str = "pypi",
    osv_url: str | None = None,
    today: dt.date | None = None,
    timeout: int = 15,
) -> AuditOutcome:
    """Every part of the audit, each run even when another fails, so one report says all that is wrong. `serving` is
    the serving image's requirements (name==version)."""
    waivers = load_waivers(root / IGNORE_FILE)
    today = today or dt.date.today()
    current = [w for w in waivers if w.expires >= today]
    parts: dict[str, Callable[[], list[Finding]]] = {
        "dependencies (uv.lock)": lambda: vulnerabilities(locked_requirements(root), root, service, osv_url, timeout),
        f"static checks ({', '.join(SCANNED)})": lambda: static_findings(root),
    }
    outcome = AuditOutcome([*parts, "SBOM"], {}, {}, [], [w for w in waivers if w.expires < today], None)
    for part, run in parts.items():
        try:
            findings = run()
        except AuditError as exc:
            outcome.errors[part] = str(exc)
            continue
        outcome.open[part] = []
        for finding in findings:
            waiver = next((w for w in current if w.covers(finding)), None)
            if waiver is None:
                outcome.open[part].append(finding)
            else:
                outcome.waived.append((finding, waiver))
    try:
        outcome.sbom = write_sbom(serving, root / OUT_DIR / "serving-image.cdx.json")
    except AuditError as exc:
        outcome.errors["SBOM"] = str(exc)
    return outcome


def _report_json(outcome: AuditOutcome) -> dict[str, Any]:
    return {
        "passed": outcome.passed,
        "open": {part: [str(f) for f in findings] for part, findings in outcome.open.items()},
        "errors": outcome.errors,
        "waived": [{"finding": str(f), "reason": w.reason, "expires": str(w.expires)} for f, w in outcome.waived],
        "expired": [{"key": w.key, "scope": list(w.scope), "expires": str(w.expires)} for w in outcome.expired],
        "sbom": str(outcome.sbom) if outcome.sbom else None,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make audit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--service", default="pypi", choices=SERVICES, help="the vulnerability service")
    parser.add_argument("--osv-url", default=None, help="an OSV-compatible query URL instead of api.osv.dev")
    parser.add_argument("--timeout", type=int, default=15, help="seconds per request to the vulnerability service")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the project's root")
    args = parser.parse_args(argv)
    from flowship.adapters.docker_engine import serving_requirements

    root = args.root.resolve()
    service = "osv" if args.osv_url else args.service  # an OSV-compatible URL is queried as OSV
    try:
        outcome = audit(root, serving_requirements(), service, args.osv_url, timeout=args.timeout)
    except FlowshipError as exc:  # the ignore list, or the serving packages not installed
        print(f"audit: {exc}", file=sys.stderr)
        return 2
    atomic_write(root / OUT_DIR / "audit.json", json.dumps(_report_json(outcome), indent=2) + "\n")
    print("\n".join(outcome.lines()))
    return 0 if outcome.passed else 1


if __name__ == "__main__":
    sys.exit(main())
