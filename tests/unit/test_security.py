"""`make audit`'s reading of its tools' reports and of the reviewed ignore list (flowship/security.py)."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
from pathlib import Path

import pytest

from flowship.errors import AuditError
from flowship.security import AuditOutcome, Finding, load_waivers, read_pip_audit, write_sbom

# pip-audit's JSON when the PyPI service does not know the locked versions (as seen on a machine whose PyPI mirror
# has no per-version JSON): every package skipped, and pip-audit's own exit code 0.
SKIPPED = {
    "dependencies": [
        {"name": "requests", "skip_reason": "Dependency not found on PyPI and could not be audited: requests (2.19.0)"},
        {"name": "jinja2", "skip_reason": "Dependency not found on PyPI and could not be audited: jinja2 (2.10)"},
    ],
    "fixes": [],
}
FOUND = {
    "dependencies": [
        {"name": "six", "version": "1.17.0", "vulns": []},
        {
            "name": "jinja2",
            "version": "2.10",
            "vulns": [
                {
                    "id": "PYSEC-2019-217",
                    "fix_versions": ["2.10.1"],
                    "aliases": ["CVE-2019-10906", "GHSA-462w-v97r-4m45"],
                    "description": "In Pallets Jinja before 2.10.1, str.format_map allows a sandbox escape.",
                }
            ],
        },
    ],
    "fixes": [],
}


def test_a_vulnerability_names_its_package_version_ids_and_fix() -> None:
    (finding,) = read_pip_audit(json.dumps(FOUND), "", "osv at https://api.osv.dev/v1/query")
    assert finding.where == "jinja2==2.10"
    assert finding.key == "PYSEC-2019-217" and "CVE-2019-10906" in finding.aliases
    assert "fixed in: 2.10.1" in str(finding) and "sandbox escape" in str(finding)


def test_packages_the_service_could_not_check_fail_the_audit_instead_of_passing() -> None:
    with pytest.raises(AuditError) as err:
        read_pip_audit(json.dumps(SKIPPED), "", "pypi at https://pypi.org/pypi")
    message = str(err.value)
    assert "2 of 2 locked packages could not be checked" in message
    assert "requests, jinja2" in message and "not found on PyPI" in message and "not a pass" in message


def test_an_unreachable_service_is_named_with_pip_audits_last_words() -> None:
    stderr = (
        "Traceback (most recent call last):\n  ...\nrequests.exceptions.ConnectionError: "
        "HTTPSConnectionPool(host='api.osv.dev', port=443): Max retries exceeded\n"
    )
    with pytest.raises(AuditError) as err:
        read_pip_audit("", stderr, "osv at https://api.osv.dev/v1/query")
    message = str(err.value)
    assert message.startswith("the vulnerability service (osv at https://api.osv.dev/v1/query) could not be reached")
    assert "ConnectionError" in message and "no dependency was checked" in message


def _ignore_list(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "audit.toml"
    path.write_text(text)
    return path


def test_waivers_cover_only_their_id_package_and_files(tmp_path: Path) -> None:
    path = _ignore_list(
        tmp_path,
        """
[[vulnerability]]
id = "CVE-2019-10906"
package = "Jinja2"
reason = "the sandbox is not used"
expires = 2027-01-31

[[static]]
test = "B310"
files = ["flowship/adapters/*.py"]
reason = "probes of our own URLs"
expires = 2027-01-31
""",
    )
    vuln, static = load_waivers(path)
    assert vuln.expires == dt.date(2027, 1, 31)
    assert vuln.covers(Finding("vulnerability", "PYSEC-2019-217", "jinja2==2.10", "x", ("CVE-2019-10906",)))
    assert not vuln.covers(Finding("vulnerability", "PYSEC-2019-217", "jinja3==2.10", "x", ("CVE-2019-10906",)))
    assert not vuln.covers(Finding("vulnerability", "PYSEC-2020-1", "jinja2==2.10", "x"))
    assert static.covers(Finding("static", "B310", "flowship/adapters/tracking.py:98", "x"))
    assert not static.covers(Finding("static", "B310", "flowship/serving/app.py:10", "x"))
    assert not static.covers(Finding("static", "B301", "flowship/adapters/tracking.py:98", "x"))


def test_a_malformed_ignore_list_names_each_entry_and_key(tmp_path: Path) -> None:
    path = _ignore_list(
        tmp_path,
        """
[[static]]
test = "B101"
files = ["flowship/**"]
reason = "asserts narrow types"
expires = "soon"

[[static]]
test = "B104"
reason = ""
expires = 2027-01-31
owner = "someone"

[[static]]
test = "B105"
files = "flowship/serving/settings.py"
reason = "a name"
expires = 2027-01-31

[[vulnerabilities]]
id = "X"
""",
    )
    with pytest.raises(AuditError) as err:
        load_waivers(path)
    message = str(err.value)
    assert "[[vulnerabilities]]: unknown section" in message
    assert "[[static]] #1: expires = 'soon' must be a date" in message
    assert "[[static]] #2: missing 'files'" in message and "[[static]] #2: unknown key 'owner'" in message
    assert "[[static]] #3: files = 'flowship/serving/settings.py' must be a list of glob patterns" in message


def test_an_ignore_list_that_is_not_toml_is_named(tmp_path: Path) -> None:
    path = _ignore_list(tmp_path, "[[static]\ntest = B101\n")
    with pytest.raises(AuditError, match=r"audit\.toml: not valid TOML"):
        load_waivers(path)


def test_the_outcome_fails_on_an_open_finding_an_unchecked_part_or_an_expired_entry() -> None:
    finding = Finding("static", "B307", "flowship/x.py:3", "Use of possibly insecure function - eval")
    clean = AuditOutcome(["deps", "SBOM"], {"deps": []}, {}, [], [], Path("sbom.json"))
    assert clean.passed and clean.lines()[-1] == "audit: PASSED"
    opened = AuditOutcome(["deps", "SBOM"], {"deps": [finding]}, {}, [], [], Path("sbom.json"))
    assert not opened.passed and "  - flowship/x.py:3: B307: Use of possibly insecure function - eval" in opened.lines()
    unchecked = AuditOutcome(["deps", "SBOM"], {}, {"deps": "unreachable"}, [], [], Path("sbom.json"))
    assert not unchecked.passed and "deps: NOT CHECKED: unreachable" in unchecked.lines()


def test_the_sbom_names_each_pin_and_is_the_same_bytes_each_time(tmp_path: Path) -> None:
    pins = ["numpy==2.4.6", "scikit-learn==1.9.1"]
    first = write_sbom(pins, tmp_path / "a.cdx.json").read_bytes()
    second = write_sbom(pins, tmp_path / "b.cdx.json").read_bytes()
    assert first == second  # reproducible: no serial number, no timestamp
    document = json.loads(first)
    assert (document["bomFormat"], document["specVersion"]) == ("CycloneDX", "1.6")
    assert "serialNumber" not in document and "timestamp" not in document["metadata"]
    assert {c["purl"] for c in document["components"]} == {"pkg:pypi/numpy@2.4.6", "pkg:pypi/scikit-learn@1.9.1"}
    with pytest.raises(AuditError, match=r"pinned requirements \(name==version\), not 'numpy>=2'"):
        write_sbom(["numpy>=2"], tmp_path / "c.cdx.json")
    assert not (tmp_path / "c.cdx.json").exists()


def test_the_environment_has_no_jsonschema_format_checkers_to_import() -> None:
    # jsonschema imports rfc3987-syntax when installed, which compiles a grammar (about a second) in every process
    # that imports Prefect: the SBOM is written without the tool that pulled it in
    assert importlib.util.find_spec("rfc3987_syntax") is None
