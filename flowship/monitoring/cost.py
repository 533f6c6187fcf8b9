"""What serving cost in a window: the serving processes' CPU-seconds and memory GiB-hours, from the usage log they
write beside the inference log (`flowship.serving.usage`), priced per params.yaml `monitoring.service.cost`, and per
1,000 predictions.

Each process samples its cumulative CPU time and its resident memory every few seconds. A window takes, per
process, the CPU time between each sample inside it and the sample before (that one may lie before the window: a
process's usage between two samples belongs to the window of the later one, so consecutive windows count every
second once); a process that started inside the window counts from zero at its start. Memory is the area under the
resident size between the same samples. A restarted process samples under a new `process` name, so its counter
starting again never reads as negative usage.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from flowship.config import CostConfig
from flowship.files import daily_paths, parse_lines
from flowship.monitoring.service import ServiceCost, ServiceWindow, UsageRead
from flowship.monitoring.window import Window
from flowship.serving.usage import START, USAGE_COLUMNS, USAGE_PREFIX, parse_usage_line

GIB = 2**30
ALL = "*"
NO_PRICES = (
    "no prices in params.yaml (monitoring.service.cost: vcpu_hour, gb_hour): CPU-seconds and memory GiB-hours only, "
    "no cost"
)


def read_usage_window(folder: Path, window: Window) -> tuple[pd.DataFrame, UsageRead]:
    """The usage samples up to the window's end, from the day before its start on (a process's last sample before
    the window is where its usage in the window starts from), and how many lines could not be read."""
    first = None if window.start is None else (window.start - timedelta(days=1)).date()
    rows: list[dict[str, object]] = []
    skipped = 0
    paths = daily_paths(folder, USAGE_PREFIX, first, window.end.date()) if folder.is_dir() else []
    for path in paths:
        with path.open("rb") as handle:
            parsed, unreadable = parse_lines(handle, parse_usage_line)
        skipped += unreadable
        rows += [r for r in parsed if r["time"] < window.end]
    samples = pd.DataFrame(rows, columns=USAGE_COLUMNS)
    samples["time"] = pd.to_datetime(samples["time"], utc=True)
    samples["cpu_seconds"] = samples["cpu_seconds"].astype(float)
    samples["rss_bytes"] = samples["rss_bytes"].astype(float)  # NaN: the system did not say
    return samples, UsageRead(len(paths), skipped)


def usage_in_window(samples: pd.DataFrame, window: Window) -> pd.DataFrame:
    """Per sample inside the window, the CPU-seconds and GiB-hours since its process's sample before (columns
    `model_version`, `process`, `cpu_seconds`, `gb_hours`)."""
    ordered = samples.sort_values(["process", "time"], kind="stable")
    by_process = ordered.groupby("process", sort=False)
    before = by_process[["time", "cpu_seconds", "rss_bytes"]].shift()
    first = before["time"].isna().to_numpy()
    started = (ordered["event"] == START).to_numpy()
    grown = (ordered["cpu_seconds"] - before["cpu_seconds"]).clip(lower=0).to_numpy()
    # a process's first sample: from zero if it is the process's start, else (its earlier samples unread) nothing
    cpu = np.where(first, np.where(started, ordered["cpu_seconds"].to_numpy(), 0.0), grown)
    seconds = (ordered["time"] - before["time"]).dt.total_seconds().fillna(0.0).to_numpy()
    resident = ((ordered["rss_bytes"] + before["rss_bytes"]) / 2).fillna(0.0).to_numpy()
    inside = np.ones(len(ordered), dtype=bool) if window.start is None else (ordered["time"] >= window.start).to_numpy()
    return pd.DataFrame(
        {
            "model_version": ordered["model_version"].to_numpy()[inside],
            "process": ordered["process"].to_numpy()[inside],
            "cpu_seconds": cpu[inside],
            "gb_hours": (resident * seconds / GIB / 3600)[inside],
        }
    )


def cost_of(used: pd.DataFrame, predictions: int, prices: CostConfig | None) -> ServiceCost:
    """The processes' usage in `used` (a `usage_in_window` frame) for `predictions` records, priced."""
    cpu = float(used["cpu_seconds"].sum())
    memory = float(used["gb_hours"].sum())
    found = ServiceCost(predictions, int(used["process"].nunique()), len(used), cpu, memory)
    if prices is None:
        return found
    cost = cpu / 3600 * prices.vcpu_hour + memory * prices.gb_hour
    return replace(found, cost=cost, cost_per_1000=cost / predictions * 1000 if predictions else None)


def with_cost(
    found: ServiceWindow,
    samples: pd.DataFrame,
    read: UsageRead,
    window: Window,
    predictions: Mapping[str, int],
    prices: CostConfig | None,
) -> ServiceWindow:
    """The window's figures with each version's cost and the whole service's (every process's, versions that
    answered no request included); `predictions` per version. A version with traffic but no usage sample gets no
    cost, and a note says so."""
    used = usage_in_window(samples, window)
    notes = [] if prices is not None else [NO_PRICES]
    total_predictions = sum(predictions.values())
    if not len(used):
        if found.total.requests or total_predictions:
            notes.append(
                f"no usage sample in the window ({read.files} usage-log files read): the serving processes' cost is "
                "unknown (they predate the usage log, or write it elsewhere)"
            )
        return replace(found, usage=replace(read, notes=notes))
    versions = []
    for fig in found.versions:
        mine = used[used["model_version"] == fig.version]
        if not len(mine):
            notes.append(
                f"v{fig.version}: {fig.requests} requests but no usage sample in the window: its cost is unknown"
            )
            versions.append(fig)
            continue
        versions.append(replace(fig, cost=cost_of(mine, predictions.get(fig.version, 0), prices)))
    answered = {fig.version for fig in found.versions}
    for version, idle in used.groupby("model_version", sort=True):
        if version not in answered and not predictions.get(str(version)):
            notes.append(
                f"v{version} scored no record in the window, yet its processes used {idle['cpu_seconds'].sum():.1f} "
                f"CPU-seconds and {idle['gb_hours'].sum():.4f} GiB-hours (in all's cost: a version kept warm)"
            )
    total = replace(found.total, cost=cost_of(used, total_predictions, prices))
    return replace(found, total=total, versions=versions, usage=replace(read, notes=notes))
