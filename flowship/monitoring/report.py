"""How a check is shown: the drift table and the summary in Markdown."""

from __future__ import annotations

from typing import Any

from flowship.monitoring.checks import VersionCheck


def drift_table(check: VersionCheck) -> list[dict[str, Any]]:
    rows = [*check.drift, *(d for d in (check.prediction_drift, check.target_drift) if d is not None)]
    return [
        {
            "version": check.version,
            "feature": d.column,
            "method": d.method,
            "score": round(d.score, 4),
            "threshold": d.threshold,
            "drifted": d.drifted,
        }
        for d in rows
    ]


def summary_markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"# Monitoring: {summary['verdict'].replace('_', ' ').upper()}",
        "",
        f"- window: {summary['window']}",
        f"- records: {summary['records']} (unreadable lines skipped: {summary['skipped_lines']})",
        f"- report: `{summary['report']}`",
    ]
    if summary.get("mlflow_runs"):
        lines.append("- MLflow: " + ", ".join(f"[v{v}]({url})" for v, url in summary["mlflow_runs"].items()))
    for check in summary["versions"]:
        lines += ["", f"## v{check['version']}: {check['verdict']} ({check['records']} records)"]
        lines += [f"- {r}" for r in check["reasons"]] or ["- no feature past its threshold"]
        quality = check.get("quality")
        if quality and quality["metrics"]:
            lines.append(
                f"- {quality['metric']}: {quality['metrics'][quality['metric']]:.4f} "
                f"on {quality['labelled']} labelled records (holdout {quality['holdout']})"
            )
        elif quality:
            lines.append(f"- labels arrived for {quality['labelled']} records: too few for model quality")
    if summary.get("alerts"):
        lines += ["", "## Alerts"] + [f"- v{a['version']}: {a['delivery']}" for a in summary["alerts"]]
    return "\n".join(lines) + "\n"
