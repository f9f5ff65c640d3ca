"""The HTML report of a run (and of a compare): one self-contained file, styles and
plots inline, nothing fetched, so it opens offline. write_all writes a run's whole
result folder: its JSON files (results.py) and this report."""

from __future__ import annotations

import datetime as dt
from html import escape
from pathlib import Path
from typing import Any

from kubemark_up.run.model import Result
from kubemark_up.run.reports import results as results_mod
from kubemark_up.run.reports import svg
from kubemark_up.run.reports.summary import fmt

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:.2em .8em;text-align:left;border-bottom:1px solid #eee}
th{background:#f5f5f5}.pass{color:#18794e;font-weight:600}.fail{color:#c62828;font-weight:700}
.worse{color:#c62828;font-weight:700}.better{color:#18794e}.nodata{color:#a66b00}
figure{margin:1em 0}.plot-title{font-weight:600;font-size:13px}.tick{font-size:10px;fill:#555}
.axis{font-size:11px;fill:#333}.legend{font-size:11px}.no-data{fill:#999;font-size:14px}
.notes{color:#555}code{background:#f5f5f5;padding:0 .2em}
"""

# The plots of a run report, by data-plot id: every one is always present (with "no
# data" when its measurement was not taken).
PLOTS = ("api-latency", "pod-startup", "scheduling-throughput", "master-cpu", "master-memory")


def _page(title: str, body: list[str]) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")


def _table(header: list[str], rows: list[list[str]], raw: bool = False) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    lines = []
    for row in rows:
        cells = "".join(f"<td>{cell if raw else escape(cell)}</td>" for cell in row)
        lines.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def _when(stamp: float | None) -> str:
    if not stamp:
        return "-"
    return dt.datetime.fromtimestamp(stamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def render(meta: dict[str, Any], documents: dict[str, dict[str, Any]]) -> str:
    """A run's report from its metadata and its results (measurement name -> result dict)."""
    cluster, run = meta.get("cluster", {}), meta.get("run", {})
    body = [f"<h1>kubemark-up run {escape(str(run.get('id', '')))}: {escape(str(run.get('workload', '')))}</h1>"]
    if meta.get("partial"):
        body.append(f'<p class="fail" id="partial">Partial results: the run {escape(str(run.get("ended", "did not end")))}'
                    "; what follows was measured until then.</p>")
    body.append(_table(["", ""], [
        ["cluster", f"{cluster.get('name')} ({cluster.get('provider')}, {cluster.get('nodes_ready')} Ready of "
                    f"{cluster.get('nodes')} hollow nodes)"],
        ["versions", f"Kubernetes {cluster.get('apiserver_version') or cluster.get('kubernetes_version')}, "
                     f"etcd {cluster.get('etcd_version')}; watch cache {'on' if cluster.get('watch_cache', True) else 'off'}"],
        ["started", _when(run.get("started_at"))],
        ["duration", fmt(run.get("seconds"), "s")],
        ["options", ", ".join(f"{k}={v}" for k, v in (run.get("options") or {}).items())],
        ["rate", f"requested {fmt(run.get('requested_rate'), '/s')}, achieved {fmt(run.get('achieved_rate'), '/s')}"],
        ["objects", f"{run.get('objects_created')} created (plan: at most {(run.get('plan') or {}).get('objects')})"],
    ]))
    slo_rows = []
    for document in documents.values():
        for slo in document.get("slos", []):
            if slo["value"] is None:
                verdict = '<span class="nodata">no data</span>'
            else:
                verdict = '<span class="pass">pass</span>' if slo["ok"] else '<span class="fail">FAIL</span>'
            slo_rows.append([escape(slo["description"]), escape(fmt(slo["threshold"], slo["unit"])),
                             escape(fmt(slo["value"], slo["unit"])), verdict])
    body.append("<h2>SLOs</h2>" + _table(["SLO", "threshold", "measured", "result"], slo_rows, raw=True))
    body.append("<h2>Plots</h2>")
    body += [f"<figure>{plot}</figure>" for plot in _plots(documents) + _api_machinery_plots(documents)]
    phases = run.get("phases") or []
    if phases:
        body.append("<h2>Phases</h2>" + _table(["phase", "seconds", "items", "requested /s", "achieved /s"], [
            [str(p.get("phase")), fmt(p.get("seconds"), "s"), str(p.get("items", "")),
             fmt(p.get("requested_rate"), ""), fmt(p.get("achieved_rate"), "")] for p in phases]))
    for name, document in documents.items():
        rows = [[key, fmt(m["value"], m["unit"])] for key, m in document.get("metrics", {}).items()]
        body.append(f"<h2>{escape(document.get('title', name))} <code>{escape(name)}</code></h2>" + _table(["figure", "value"], rows))
        if name == "api_latency":
            keys = document.get("data", {}).get("keys", [])
            body.append(_table(["verb", "resource", "scope", "calls", "p50", "p90", "p99"], [
                [k["verb"], k["resource"] + ("/" + k["subresource"] if k["subresource"] else ""), k["scope"],
                 fmt(k["count"], ""), fmt(k["p50"], "s"), fmt(k["p90"], "s"), fmt(k["p99"], "s")] for k in keys]))
        for note in document.get("notes", []):
            body.append(f'<p class="notes">{escape(note)}</p>')
    return _page(f"kubemark-up run {run.get('id', '')}", body)


def _plots(documents: dict[str, dict[str, Any]]) -> list[str]:
    def data(name: str) -> dict[str, Any]:
        return (documents.get(name) or {}).get("data") or {}

    api = data("api_latency").get("series", {})
    latency = {verb: [(p["t"], p["p99"] * 1000) for p in points if p["p99"] is not None] for verb, points in api.items()}
    pods = data("pod_startup").get("pods", [])
    startup = {
        "create→running": svg.cdf([p["running"] - p["created"] for p in pods if p.get("running")]),
        "create→scheduled": svg.cdf([p["scheduled"] - p["created"] for p in pods if p.get("scheduled")]),
        "scheduled→running": svg.cdf([p["running"] - p["scheduled"] for p in pods if p.get("running") and p.get("scheduled")]),
    }
    throughput = {"scheduled": [(p["t"], p["pods_per_s"]) for p in data("scheduling_throughput").get("series", [])]}
    samples = data("resources").get("samples", [])
    components = sorted({k for s in samples for k in s if k != "t"})
    cpu = {c: [(s["t"], s[c]["cores"]) for s in samples if c in s and s[c].get("cores") is not None] for c in components}
    memory = {c: [(s["t"], s[c]["rss_mib"]) for s in samples if c in s] for c in components}
    return [
        svg.line_chart("api-latency", "API call latency p99 per verb, between scrapes", latency,
                       x_label="seconds into the run", y_label="p99 (ms)"),
        svg.line_chart("pod-startup", "Pod startup latency, distribution over pods", startup,
                       x_label="seconds", y_label="fraction of pods", step=True, y_top=1.0),
        svg.line_chart("scheduling-throughput", "Scheduling throughput (5 s windows)", throughput,
                       x_label="seconds since the first pod was bound", y_label="pods/s", step=True),
        svg.line_chart("master-cpu", "Master CPU", cpu, x_label="seconds into the run", y_label="cores"),
        svg.line_chart("master-memory", "Master memory (resident)", memory, x_label="seconds into the run", y_label="MiB"),
    ]


CHURNS = ("configmap_churn", "cr_churn", "flunder_churn")
STORMS = ("watch_storm", "flunder_watch")


def _api_machinery_plots(documents: dict[str, dict[str, Any]]) -> list[str]:
    """The API-machinery workloads' plots, only where their results are (data-plot ids
    churn-latency, informer-delay, storm-delivery, storm-memory)."""
    plots = []
    for name in CHURNS:
        latencies = ((documents.get(name) or {}).get("data") or {}).get("latencies")
        if latencies:
            plots.append(svg.line_chart("churn-latency", "Call latency per operation, distribution over calls",
                                        {op: svg.cdf([v * 1000 for v in values]) for op, values in latencies.items()},
                                        x_label="ms", y_label="fraction of calls", step=True, y_top=1.0))
    changes = ((documents.get("informer") or {}).get("data") or {}).get("changes")
    if changes:
        plots.append(svg.line_chart("informer-delay", "Informer: write to notification and to dequeue", {
            "notification": svg.cdf([(c["notified"] - c["written"]) * 1000 for c in changes]),
            "dequeue": svg.cdf([(c["dequeued"] - c["written"]) * 1000 for c in changes if c.get("dequeued")]),
        }, x_label="ms", y_label="fraction of changes", step=True, y_top=1.0))
    for name in STORMS:
        steps = ((documents.get(name) or {}).get("data") or {}).get("steps")
        if steps:
            plots.append(svg.line_chart("storm-delivery", "Watch delivery latency per watcher count", {
                q: [(s["watchers"], s[f"delivery_{q}"] * 1000) for s in steps if s.get(f"delivery_{q}") is not None]
                for q in ("p50", "p99", "max")}, x_label="watchers", y_label="ms"))
            plots.append(svg.line_chart("storm-memory", "Resident memory per watcher count", {
                c: [(s["watchers"], s[f"{c}_rss_mib"]) for s in steps if s.get(f"{c}_rss_mib") is not None]
                for c in ("kube-apiserver", "etcd", "client")}, x_label="watchers", y_label="MiB"))
    return plots


def write_all(folder: Path, meta: dict[str, Any], results: list[Result]) -> list[Path]:
    """The result files and the HTML report."""
    written = results_mod.write(folder, meta, results)
    written.append(write(folder, meta, results))
    return written


def write(folder: Path, meta: dict[str, Any], results: list[Result]) -> Path:
    documents = {r.measurement: r.as_dict() for r in results}
    return results_mod.write_text(folder / results_mod.HTML_NAME, render(meta, documents))


def write_from(folder: Path) -> Path:
    """The report again, from a result folder's files."""
    documents = results_mod.read(folder)
    meta = next(iter(documents.values()))
    return results_mod.write_text(folder / results_mod.HTML_NAME,
                                  render(meta, {name: d["result"] for name, d in documents.items()}))
