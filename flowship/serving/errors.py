"""Errors of the serving package (subclasses of the project's domain errors)."""

from __future__ import annotations

from flowship.errors import ConfigError, FlowshipError


class SettingsError(ConfigError):
    """A FLOWSHIP_* environment variable holds a value that is not allowed; each problem names the variable."""


class BundleError(FlowshipError):
    """A model bundle directory is missing a file, or a file is corrupt or inconsistent with the others."""

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"model bundle {self.path}: {problem}")


class ModelInputError(FlowshipError):
    """The model could not score valid-looking records (e.g. values far outside what it was fitted on)."""

    def __init__(self, problem: str, records: list[int] | None = None) -> None:
        self.problem = problem
        self.records = records
        where = f" (record(s) {records})" if records else ""
        super().__init__(f"{problem}{where}")


class NotReady(FlowshipError):
    """The service is starting or shutting down and does not take predictions."""


class LogUnavailable(FlowshipError):
    """The inference log did not record an entry in time (the disk refuses writes, or the log is closed): the
    answer it belongs to must not leave."""

    def __init__(self, problem: str, waited: float | None = None) -> None:
        self.problem = problem
        self.waited = waited
        within = f" within {waited:g} s" if waited is not None else ""
        super().__init__(f"the inference log could not record this request{within}: {problem}")
