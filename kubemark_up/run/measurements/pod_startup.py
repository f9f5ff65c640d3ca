"""Pod startup latency per pod: creation -> scheduled -> all containers running, as
this run's pod watch saw them (pods.py), against the 5 s SLO on p99
(sig-scalability's pod startup SLO; image pulls are no part of it on hollow nodes)."""

from __future__ import annotations

from typing import ClassVar

from kubemark_up.run.measurements.base import Measurement
from kubemark_up.run.model import SLO as SLOEntry
from kubemark_up.run.model import Metric, Result, percentile

SLO_POD_STARTUP = "pod_startup"


class PodStartup(Measurement):
    name = "pod_startup"
    title = "Pod startup latency"
    slos: ClassVar[dict[str, float]] = {SLO_POD_STARTUP: 5.0}

    def start(self) -> None:
        self.ctx.pods().start()

    def stop(self) -> None:
        self.ctx.pods().settle()
        self.ctx.pods().stop()

    def _startups(self) -> list[float]:
        return [p.running - p.created for p in self.ctx.pods().records() if p.running is not None]

    def live(self) -> str | None:
        values = self._startups()
        if not values:
            return None
        return f"pod startup: {len(values)} running, p99 {percentile(values, 99):.2f}s, max {max(values):.2f}s"

    def result(self) -> Result:
        watch = self.ctx.pods()
        records = watch.records()
        startup = [p.running - p.created for p in records if p.running is not None]
        to_scheduled = [p.scheduled - p.created for p in records if p.scheduled is not None]
        to_running = [p.running - p.scheduled for p in records if p.running is not None and p.scheduled is not None]
        result = Result(self.name, self.title)
        for label, values in (("create_to_running", startup), ("create_to_scheduled", to_scheduled),
                              ("scheduled_to_running", to_running)):
            for q in (50, 90, 99):
                result.metrics[f"{label}_p{q}"] = Metric(percentile(values, q), "s")
            result.metrics[f"{label}_max"] = Metric(max(values) if values else None, "s")
        result.metrics["pods"] = Metric(len(records), "", better="none")
        result.metrics["pods_running"] = Metric(len(startup), "", better="none")
        created = sorted(p.created for p in records)
        if len(created) >= 2 and created[-1] > created[0]:
            result.metrics["creation_rate"] = Metric(len(created) / (created[-1] - created[0]), "pods/s", better="none")
        threshold = self.ctx.threshold(SLO_POD_STARTUP, self.slos[SLO_POD_STARTUP])
        result.slos.append(SLOEntry(SLO_POD_STARTUP, "pod startup p99 (creation to all containers running)",
                                    threshold, percentile(startup, 99)))
        never = len(records) - len(startup)
        if never:
            result.notes.append(f"{never} pod(s) were never seen running")
        inexact = sum(1 for p in records if not p.exact)
        if inexact:
            result.notes.append(f"{inexact} pod(s) were first seen in a relist: their creation is their creationTimestamp")
        result.notes += watch.errors[:5]
        result.data = {"pods": [p.as_dict() for p in records], "relists": watch.relists}
        return result
