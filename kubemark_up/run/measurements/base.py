"""The Measurement interface and what a measurement's result holds.

A measurement starts before the workload's first object and stops after its last
phase. Its result is plain data: named metrics (for the summary, compare and the
HTML report), SLOs each with its threshold and the value that met or broke it, and
the raw series it came from (per pod, per window, per sample), so that a result
file stands on its own."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    from kubemark_up.run.measurements.pods import PodWatch
    from kubemark_up.run.model import Kube


@dataclass
class Metric:
    value: float | None
    unit: str  # "s", "pods/s", "%", "MiB", "cores", ""
    # Which way is worse, for compare: a latency that rises, a throughput that falls.
    better: Literal["lower", "higher", "none"] = "lower"


@dataclass
class SLO:
    name: str
    description: str
    threshold: float
    value: float | None  # None: nothing to judge (no samples)
    unit: str = "s"

    @property
    def ok(self) -> bool:
        return self.value is None or self.value <= self.threshold

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


@dataclass
class Result:
    measurement: str
    title: str
    metrics: dict[str, Metric] = field(default_factory=dict)
    slos: list[SLO] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "measurement": self.measurement,
            "title": self.title,
            "metrics": {k: asdict(m) for k, m in self.metrics.items()},
            "slos": [s.as_dict() for s in self.slos],
            "notes": self.notes,
            "data": self.data,
        }


@dataclass
class Sampler:
    """How CPU and memory of the master's processes are read: pid -> (CPU seconds,
    resident bytes), from the host that runs them (the provider's Host)."""

    sample: Callable[[list[int]], dict[int, tuple[float, int]]]
    components: Callable[[], dict[str, int]]  # component name -> its current pid
    where: str


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
            from kubemark_up.run.measurements.pods import PodWatch

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


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100) of values, by the nearest-rank method clusterloader2 uses."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n*q/100), at least 1
    return ordered[int(rank) - 1]
