"""Scheduling throughput: pods bound to a node per second, from the moments the
run's pod watch saw each pod bound (pods.py), sampled over 5 s windows as
clusterloader2's SchedulingThroughput does; reported, not judged (a run creating
at 10 pods/s cannot show more)."""

from __future__ import annotations

import math

from kubemark_up.run.measurements.base import Measurement
from kubemark_up.run.model import Metric, Result, percentile

WINDOW = 5.0  # seconds per throughput sample


class SchedulingThroughput(Measurement):
    name = "scheduling_throughput"
    title = "Scheduling throughput"

    def start(self) -> None:
        self.ctx.pods().start()

    def stop(self) -> None:
        self.ctx.pods().stop()

    def result(self) -> Result:
        times = sorted(p.scheduled for p in self.ctx.pods().records() if p.scheduled is not None)
        result = Result(self.name, self.title)
        series: list[dict[str, float]] = []
        if times:
            first = times[0]
            windows = max(1, math.ceil((times[-1] - first) / WINDOW))
            counts = [0] * windows
            for t in times:
                counts[min(windows - 1, int((t - first) / WINDOW))] += 1
            # The last window is as long as the binding went on in it (at least 1 s).
            lengths = [WINDOW] * (windows - 1) + [max(1.0, times[-1] - first - (windows - 1) * WINDOW)]
            series = [{"t": round(i * WINDOW, 3), "pods_per_s": c / lengths[i]} for i, c in enumerate(counts)]
        rates = [s["pods_per_s"] for s in series]
        span = times[-1] - times[0] if len(times) >= 2 else 0.0
        result.metrics["average"] = Metric(len(times) / span if span > 0 else None, "pods/s", better="higher")
        for q in (50, 90, 99):
            result.metrics[f"p{q}"] = Metric(percentile(rates, q), "pods/s", better="higher")
        result.metrics["max"] = Metric(max(rates) if rates else None, "pods/s", better="higher")
        result.metrics["pods_scheduled"] = Metric(len(times), "", better="none")
        result.data = {"window_seconds": WINDOW, "series": series,
                       "first_scheduled": times[0] if times else None}
        return result
