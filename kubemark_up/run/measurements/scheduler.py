"""Scheduler latency from kube-scheduler's own /metrics histograms, read on the
master's host before the workload and after it, as clusterloader2's SchedulingMetrics
reads them (pkg/measurement/common/scheduler_latency.go): what happened between the
two reads, p50/p90/p99 interpolated in the buckets (api_latency.Histogram).

- e2e scheduling: scheduler_pod_scheduling_sli_duration_seconds, from a pod entering
  the scheduling queue to its binding, over all its attempts (CL2's e2eSchedulingLatency);
- scheduling attempts: scheduler_scheduling_attempt_duration_seconds, one attempt
  (algorithm plus binding), per result (scheduled, unschedulable, error);
- the algorithm alone: scheduler_scheduling_algorithm_duration_seconds;
- each framework extension point (Filter, Score, Bind, ...):
  scheduler_framework_extension_point_duration_seconds.

Reported, not judged: the Kubernetes scalability SLOs set no threshold on them."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from kubemark_up.errors import KubemarkUpError
from kubemark_up.run.measurements.api_latency import Histogram
from kubemark_up.run.measurements.base import MeasureContext, Measurement
from kubemark_up.run.model import Metric, Result

COMPONENT = "kube-scheduler"
E2E = "scheduler_pod_scheduling_sli_duration_seconds"
ATTEMPT = "scheduler_scheduling_attempt_duration_seconds"
ALGORITHM = "scheduler_scheduling_algorithm_duration_seconds"
EXTENSION_POINT = "scheduler_framework_extension_point_duration_seconds"
# (figure prefix, metric, the label a histogram is kept per, or None for one in all)
SERIES = (("e2e", E2E, None), ("attempt", ATTEMPT, "result"), ("algorithm", ALGORITHM, None),
          ("extension_point", EXTENSION_POINT, "extension_point"))

Snapshot = dict[tuple[str, str], Histogram]  # (figure prefix, label value or "") -> histogram


def parse(text: str) -> Snapshot:
    """The scheduler's latency histograms in a /metrics text, summed over every label
    but the one each is kept per (profile, status, attempts...)."""
    wanted = {metric: (prefix, label) for prefix, metric, label in SERIES}
    found: Snapshot = {}
    for family in text_string_to_metric_families(text):
        if family.name not in wanted:
            continue
        prefix, label = wanted[family.name]
        for sample in family.samples:
            key = (prefix, sample.labels.get(label, "") if label else "")
            histogram = found.setdefault(key, Histogram({}, 0.0, 0.0))
            if sample.name.endswith("_bucket"):
                le = float(sample.labels["le"])
                histogram.buckets[le] = histogram.buckets.get(le, 0.0) + sample.value
            elif sample.name.endswith("_count"):
                histogram.count += sample.value
            elif sample.name.endswith("_sum"):
                histogram.total += sample.value
    return found


def between(new: Snapshot, old: Snapshot) -> Snapshot:
    """What was observed between two reads (a histogram absent before counts from zero)."""
    return {key: h.minus(old.get(key)) for key, h in new.items() if h.count - (old[key].count if key in old else 0) > 0}


class SchedulerLatency(Measurement):
    name = "scheduler_latency"
    title = "Scheduler latency (kube-scheduler's /metrics)"

    def __init__(self, ctx: MeasureContext) -> None:
        super().__init__(ctx)
        self.reads: list[Snapshot] = []
        self.errors: list[str] = []

    def _read(self) -> None:
        if self.ctx.component_metrics is None:
            self.errors.append("this run has no way to read the master's component metrics")
            return
        try:
            self.reads.append(parse(self.ctx.component_metrics(COMPONENT)))
        except KubemarkUpError as exc:
            self.errors.append(exc.message)

    def start(self) -> None:
        self._read()

    def stop(self) -> None:
        if self.reads:
            self._read()

    def result(self) -> Result:
        result = Result(self.name, self.title)
        result.notes += self.errors[:5]
        if len(self.reads) < 2:
            result.notes.append("fewer than two reads of kube-scheduler's /metrics: nothing to measure")
            return result
        seen = between(self.reads[-1], self.reads[0])
        table = []
        for (prefix, value), histogram in sorted(seen.items()):
            p99 = histogram.quantile(0.99)
            table.append({"series": prefix, "label": value, "count": histogram.count,
                          "mean": histogram.total / histogram.count if histogram.count else None,
                          "p50": histogram.quantile(0.5), "p90": histogram.quantile(0.9), "p99": p99})
            if prefix == "attempt":
                result.metrics[f"attempts_{value}"] = Metric(histogram.count, "", better="none")
            if prefix == "extension_point":
                result.metrics[f"{value}_p99"] = Metric(p99, "s")
        for prefix, label in (("e2e", ""), ("attempt", "scheduled"), ("algorithm", "")):
            found = seen.get((prefix, label))
            for q in (50, 90, 99):
                result.metrics[f"{prefix}_p{q}"] = Metric(found.quantile(q / 100) if found else None, "s")
        e2e = seen.get(("e2e", ""))
        result.metrics["pods_scheduled"] = Metric(e2e.count if e2e else 0, "", better="none")
        result.data = {"metrics": {prefix: metric for prefix, metric, _ in SERIES}, "histograms": table}
        return result
