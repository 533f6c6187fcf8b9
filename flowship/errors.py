"""Domain exceptions: each carries what was measured and what was expected."""

from __future__ import annotations

from typing import Any


class FlowshipError(Exception):
    """Base class of every error flowship raises on purpose."""


class ConfigError(FlowshipError):
    """`params.yaml` (or a CLI argument) holds a key or value that is not allowed."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


class BaseRefError(FlowshipError):
    """The base git ref named for a comparison does not exist in the repository (or this is not a git repository)."""


class AuditError(FlowshipError):
    """`make audit` could not check something (a tool, the vulnerability service, the ignore list): never a pass."""


class DataLoadError(FlowshipError):
    """A data file is missing, unreadable or not in the expected format."""


class DataValidationError(FlowshipError):
    """The data broke its schema; `report` lists every failing column and check."""

    def __init__(self, report: dict[str, Any]) -> None:
        self.report = report
        lines = [
            f"  - {f['column']}: {f['check']} failed for {f['count']} row(s), e.g. {f['examples']}"
            for f in report["failures"]
        ]
        super().__init__(f"data validation failed ({len(report['failures'])} problem(s)):\n" + "\n".join(lines))


class QualityGateFailed(FlowshipError):
    """The candidate did not clear the gate; `decision` holds the numbers."""

    def __init__(self, decision: Any) -> None:
        self.decision = decision
        super().__init__(f"quality gate failed: {'; '.join(decision.reasons)}")


class TrackingUnavailable(FlowshipError):
    """The MLflow tracking server did not answer."""


class RegistryError(FlowshipError):
    """A model registry operation could not be completed; nothing was left half-done."""


class StageError(FlowshipError):
    """A pipeline stage could not run (DVC reported an error)."""


class RemoteUnavailable(StageError):
    """The DVC remote did not take or give the data (worth a retry: storage may come back)."""


class ReleaseError(FlowshipError):
    """A release or rollback could not go ahead; production and the aliases are as they were."""


class ReleaseCheckFailed(ReleaseError):
    """Staging failed a check; `checks` holds every check with what was measured."""

    def __init__(self, version: str, checks: list[dict[str, Any]]) -> None:
        self.version = version
        self.checks = checks
        failed = "; ".join(f"{c['name']}: {c['detail']}" for c in checks if not c["passed"])
        super().__init__(f"release of v{version} stopped in staging: {failed}")


class ReleaseAborted(ReleaseError):
    """A step on live traffic failed (a canary step, the shadow): the challenger's traffic went back to stable (or
    its copies stopped), the aliases are untouched."""

    def __init__(self, version: str, step: str, checks: list[dict[str, Any]]) -> None:
        self.version = version
        self.step = step
        self.checks = checks
        failed = "; ".join(f"{c['name']}: {c['detail']}" for c in checks if not c["passed"])
        super().__init__(f"release of v{version} aborted at {step}: {failed}; stable serves all traffic")


class GatewayError(ReleaseError):
    """The gateway in front of production cannot take a change (its configuration is refused, its port is taken,
    it does not answer); what serves is left as it was."""


class ReplicaError(ReleaseError):
    """A replica of the model (a process behind the host's gateway) exited or was not ready in time; none of its
    pool was left running."""


class ReplayError(FlowshipError):
    """Replayed traffic could not be sent: a bad month, no data for it, or an endpoint that does not answer."""


class DockerError(FlowshipError):
    """A Docker operation failed (base of the errors below)."""


class DockerUnavailable(DockerError):
    """The Docker daemon did not answer or failed on its side (worth a retry: it may come back)."""


class ImageBuildError(DockerError):
    """An image could not be built; `step` names the failing step, `log_tail` holds its last output."""

    def __init__(self, step: str, reason: str, log_tail: list[str] | None = None) -> None:
        self.step = step
        self.reason = reason
        self.log_tail = log_tail or []
        tail = "".join(f"\n  | {line}" for line in self.log_tail)
        super().__init__(f"image build failed at {step}: {reason}{tail}")


class ContainerError(DockerError):
    """A container or image is missing, did not start, or did not become healthy in time."""


class AlertDeliveryError(FlowshipError):
    """An alert could not be delivered to its channel (it is kept in the local alert log)."""


class MonitoringError(FlowshipError):
    """A check that cannot be made (a bad window, a version without lineage)."""


class OnboardingError(FlowshipError):
    """`flowship init` cannot describe the data: a missing target, one class, too few rows, a file that is no table."""


class DashboardError(FlowshipError):
    """The monitoring dashboard's workspace (the Evidently UI's folder) cannot take a check's run: the folder is
    missing, no folder, or unreadable. The check's own reports are written all the same."""

    def __init__(self, folder: str, problem: str) -> None:
        self.folder = folder
        self.problem = problem
        super().__init__(f"the dashboard workspace {folder} {problem}")
