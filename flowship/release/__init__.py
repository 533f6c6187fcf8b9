"""The release: where a version runs (process or Docker), the checks it must pass, the release history."""
