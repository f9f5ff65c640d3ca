"""The Measurement interface, and what measurements share during one run (MeasureContext).

A measurement starts before the workload's first object and stops after its last
phase. Its result is plain data, a Result of the run's model (model.py)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

from kubemark_up.run.measurements.pods import PodWatch
from kubemark_up.run.model import Kube, Result, Sampler


class MeasureContext:
    """What measurements share during one run."""

    def __init__(self, *, kube: Kube, run_id: str, slo_overrides: dict[str, float], sampler: Sampler | None,
                 interval: float, component_metrics: Callable[[str], str] | None = None) -> None:
        self.kube = kube
        # A master component's /metrics text (etcd, kube-controller-manager,
        # kube-scheduler), read on the host that runs it; raises KubemarkUpError.
        self.component_metrics = component_metrics
        self.run_id = run_id
        self.slo_overrides = slo_overrides
        self.sampler = sampler
        self.interval = interval
        self._pods: PodWatch | None = None
        self.started_at: float = 0.0  # wall clock, set by the runner
        # The client-side seconds of each /metrics scrape (api_latency's), for the overhead figure.
        self.scrape_seconds: Callable[[], list[float]] | None = None
        self.finished_at: float = 0.0

    def pods(self) -> PodWatch:
        """The one watch of the run's pods, shared by the measurements that read it."""
        if self._pods is None:
            self._pods = PodWatch(self.kube, self.run_id)
        return self._pods

    def threshold(self, name: str, default: float) -> float:
        return self.slo_overrides.get(name, default)


class Measurement(ABC):
    name: ClassVar[str]
    title: ClassVar[str]
    # SLO names this measurement judges, with their defaults (overridable by --slo NAME=VALUE).
    slos: ClassVar[dict[str, float]] = {}

    def __init__(self, ctx: MeasureContext) -> None:
        self.ctx = ctx

    @abstractmethod
    def start(self) -> None:
        """Begin: before the workload makes anything."""

    @abstractmethod
    def stop(self) -> None:
        """End: after the workload's last phase (or when it failed)."""

    def live(self) -> str | None:
        """One short line for the live view (worst latency so far), or None."""
        return None

    @abstractmethod
    def result(self) -> Result:
        """What was measured."""
