"""The summary table at the end of a run: each SLO with its threshold, the value that
met or broke it, pass or FAIL; then the main figures of each measurement."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from kubemark_up.run.model import Result


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "":
        return f"{value:g}" if value != int(value) else str(int(value))
    return f"{value:.2f} {unit}"


def slo_table(results: list[Result]) -> Table:
    table = Table("SLO", "threshold", "measured", "result", box=None, pad_edge=False, title_justify="left")
    for result in results:
        for slo in result.slos:
            verdict = Text("pass", style="green") if slo.ok else Text("FAIL", style="bold red")
            if slo.value is None:
                verdict = Text("no data", style="yellow")
            table.add_row(slo.description, fmt(slo.threshold, slo.unit), fmt(slo.value, slo.unit), verdict)
    return table


# The figures worth a line in the summary, per measurement.
HEADLINES = {
    "pod_startup": ["create_to_running_p50", "create_to_running_p90", "create_to_running_p99", "create_to_running_max",
                    "pods", "pods_running", "creation_rate"],
    "scheduling_throughput": ["average", "p50", "max", "pods_scheduled"],
    "api_latency": ["api_single_object_p50", "api_single_object_p99", "api_list_p99", "calls"],
    "configmap_churn": ["requested_rate", "achieved_rate", "operations_rate", "creates", "create_p99", "updates",
                        "update_p99", "deletes", "delete_p99", "errors", "lag_p99"],
    "cr_churn": ["requested_rate", "achieved_rate", "operations_rate", "creates", "create_p99", "updates",
                 "update_p99", "deletes", "delete_p99", "errors", "lag_p99"],
    "informer": ["changes_made", "notifications", "dequeued", "missed", "notify_p50", "notify_p99", "notify_max",
                 "dequeue_p99", "relists"],
    "flunder_churn": ["requested_rate", "achieved_rate", "operations_rate", "creates", "create_p99", "updates",
                      "update_p99", "deletes", "delete_p99", "errors", "lag_p99"],
    "http2_baseline": ["requested_rate", "send_rate", "receive_rate", "bytes_sent", "bytes_received",
                       "block_delay_p99"],
    "scheduler_latency": ["e2e_p50", "e2e_p99", "attempt_p99", "algorithm_p99", "pods_scheduled"],
    "resources": ["kube-apiserver_cpu_avg", "kube-apiserver_rss_max", "etcd_cpu_avg", "etcd_rss_max",
                  "overhead_apiserver_cpu_share"],
}


STORM_HEADLINES = ("delivery_p50", "delivery_p99", "deliveries", "missing", "dropped", "relists",
                   "kube-apiserver_rss_mib", "etcd_rss_mib", "kube-apiserver_cores", "client_cores")


def figures_table(results: list[Result], meta: dict[str, Any]) -> Table:
    table = Table("measurement", "figure", "value", box=None, pad_edge=False)
    run = meta.get("run", {})
    table.add_row("run", "requested rate", fmt(run.get("requested_rate"), "/s"))
    table.add_row("run", "achieved rate", fmt(run.get("achieved_rate"), "/s"))
    table.add_row("run", "objects created by its calls", fmt(run.get("objects_created"), ""))
    table.add_row("run", "duration", fmt(run.get("seconds"), "s"))
    for result in results:
        keys = HEADLINES.get(result.measurement, list(result.metrics)[:4])
        if result.measurement in ("watch_storm", "flunder_watch"):  # per step: the delivery p99, losses and the master's memory
            keys = [k for k in result.metrics if k.split("_", 1)[1] in STORM_HEADLINES]
        for key in keys:
            metric = result.metrics.get(key)
            if metric is not None:
                table.add_row(result.measurement, key, fmt(metric.value, metric.unit))
        for note in result.notes:
            table.add_row(result.measurement, "note", note)
    return table
