"""compare: two result folders side by side, per measurement and figure: old, new,
the change, and whether it got worse beyond the threshold (a latency that rose, a
throughput that fell), or an SLO that held and now does not."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from kubemark_up.errors import ConfigError
from kubemark_up.run.reports import results as results_mod
from kubemark_up.run.reports.summary import fmt


@dataclass
class Row:
    measurement: str
    figure: str
    old: float | None
    new: float | None
    unit: str
    change: float | None  # (new - old) / old
    worse: bool
    better: bool


def threshold_of(text: str) -> float:
    """'10%' or '10' -> 0.10."""
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        raise ConfigError(f"--threshold must be a percentage such as 10%, not {text!r}") from None
    if value < 0:
        raise ConfigError(f"--threshold must not be negative, not {text!r}")
    return value / 100


def compare(old_dir: Path, new_dir: Path, threshold: float) -> list[Row]:
    old, new = results_mod.read(old_dir), results_mod.read(new_dir)
    rows: list[Row] = []
    for name in sorted(old.keys() & new.keys()):
        old_result, new_result = old[name]["result"], new[name]["result"]
        for figure, new_metric in new_result["metrics"].items():
            old_metric = old_result["metrics"].get(figure)
            if old_metric is None:
                continue
            a, b, direction = old_metric["value"], new_metric["value"], new_metric.get("better", "lower")
            change = (b - a) / a if a not in (None, 0) and b is not None else None
            worse = change is not None and direction != "none" and (
                change > threshold if direction == "lower" else change < -threshold)
            improved = change is not None and direction != "none" and (
                change < -threshold if direction == "lower" else change > threshold)
            rows.append(Row(name, figure, a, b, new_metric["unit"], change, worse, improved))
        old_slos = {s["name"]: s for s in old_result.get("slos", [])}
        for slo in new_result.get("slos", []):
            before = old_slos.get(slo["name"])
            if before is not None and before["ok"] and not slo["ok"]:
                rows.append(Row(name, f"SLO {slo['name']} now fails", before["value"], slo["value"], slo["unit"],
                                None, True, False))
    return rows


def differences(old_dir: Path, new_dir: Path) -> list[str]:
    """What makes two runs not like for like: the workload, its options, the cluster's size or version."""
    old = next(iter(results_mod.read(old_dir).values()))
    new = next(iter(results_mod.read(new_dir).values()))
    found = []
    for key in ("partial",):
        if old.get(key, False) != new.get(key, False):
            found.append(f"{key}: {old.get(key, False)} -> {new.get(key, False)}")
    for section, key in (("run", "workload"), ("run", "options"), ("cluster", "nodes_ready"),
                         ("cluster", "apiserver_version"), ("cluster", "watch_cache")):
        a, b = old.get(section, {}).get(key), new.get(section, {}).get(key)
        if a != b:
            found.append(f"{key}: {a} -> {b}")
    return found


def describe(meta: dict[str, Any]) -> str:
    run, cluster = meta.get("run", {}), meta.get("cluster", {})
    return (f"{run.get('workload')} run {run.get('id')} on {cluster.get('nodes_ready')} nodes "
            f"({cluster.get('apiserver_version')}, watch cache {'on' if cluster.get('watch_cache', True) else 'off'})")


def change_text(row: Row) -> str:
    return "-" if row.change is None else f"{row.change * 100:+.1f}%"


def html(old_dir: Path, new_dir: Path, rows: list[Row], threshold: float) -> str:
    from kubemark_up.run.reports.html import STYLE

    old_meta = next(iter(results_mod.read(old_dir).values()))
    new_meta = next(iter(results_mod.read(new_dir).values()))
    lines = []
    for row in rows:
        verdict = '<span class="worse">worse</span>' if row.worse else (
            '<span class="better">better</span>' if row.better else "")
        lines.append(f"<tr><td>{escape(row.measurement)}</td><td>{escape(row.figure)}</td>"
                     f"<td>{escape(fmt(row.old, row.unit))}</td><td>{escape(fmt(row.new, row.unit))}</td>"
                     f"<td>{escape(change_text(row))}</td><td>{verdict}</td></tr>")
    worse = sum(1 for r in rows if r.worse)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>kubemark-up compare</title>'
        f"<style>{STYLE}</style></head><body><h1>kubemark-up compare</h1>"
        f"<p>old: {escape(str(old_dir))}: {escape(describe(old_meta))}<br>new: {escape(str(new_dir))}: "
        f"{escape(describe(new_meta))}<br>threshold {threshold * 100:g}%: "
        f"{worse} figure(s) worse</p><table><thead><tr><th>measurement</th><th>figure</th><th>old</th><th>new</th>"
        f"<th>change</th><th></th></tr></thead><tbody>{''.join(lines)}</tbody></table></body></html>\n"
    )
