"""API call latency from kube-apiserver's own /metrics histograms, per (verb, resource,
subresource, scope): apiserver_request_sli_duration_seconds (the SLI metric, which
leaves out webhooks' and priority-and-fairness queueing time), else
apiserver_request_duration_seconds. Scraped at the start, every few seconds and at
the end; a window's latency is the histogram difference between two scrapes, its
quantiles interpolated in the buckets as Prometheus' histogram_quantile does.

SLOs (sig-scalability api_call_latency): p99 per 5-minute window <= 1 s for
single-object calls (mutating verbs, and reads of scope resource), <= 30 s for LIST
of scope namespace or cluster. WATCH and the streaming verbs are no part of them."""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from prometheus_client.parser import text_string_to_metric_families

from kubemark_up.errors import RunError
from kubemark_up.run.measurements.base import MeasureContext, Measurement
from kubemark_up.run.model import SLO, Metric, Result

SLI_METRIC = "apiserver_request_sli_duration_seconds"
FALLBACK_METRIC = "apiserver_request_duration_seconds"
EXCLUDED_VERBS = {"WATCH", "WATCHLIST", "CONNECT", "PROXY"}
SLO_WINDOW = 300.0  # seconds
SLO_SINGLE = "api_single_object"
SLO_LIST = "api_list"

Key = tuple[str, str, str, str]  # verb, resource, subresource, scope


@dataclass
class Histogram:
    buckets: dict[float, float]  # upper bound -> cumulative count
    count: float
    total: float  # sum of observed seconds

    def minus(self, older: Histogram | None) -> Histogram:
        if older is None:
            return self
        return Histogram({le: c - older.buckets.get(le, 0.0) for le, c in self.buckets.items()},
                         self.count - older.count, self.total - older.total)

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0..1), linear within its bucket; one in the +Inf bucket is
        the highest finite bound (as histogram_quantile answers)."""
        if self.count <= 0:
            return None
        rank = q * self.count
        lower, below = 0.0, 0.0
        for le in sorted(self.buckets):
            count = self.buckets[le]
            if count >= rank:
                if math.isinf(le):
                    return lower
                if count == below:
                    return le
                return lower + (le - lower) * (rank - below) / (count - below)
            lower, below = le, count
        return lower


Snapshot = dict[Key, Histogram]


def parse(text: str) -> tuple[str | None, Snapshot]:
    """The latency histograms in a /metrics text, summed over group, version and
    component: which metric they come from, and the histograms by key."""
    families = {f.name: f for f in text_string_to_metric_families(text) if f.name in (SLI_METRIC, FALLBACK_METRIC)}
    family = families.get(SLI_METRIC) or families.get(FALLBACK_METRIC)
    if family is None:
        return None, {}
    found: Snapshot = {}
    for sample in family.samples:
        labels = sample.labels
        verb = labels.get("verb", "")
        if verb in EXCLUDED_VERBS:
            continue
        key = (verb, labels.get("resource", ""), labels.get("subresource", ""), labels.get("scope", ""))
        histogram = found.setdefault(key, Histogram({}, 0.0, 0.0))
        if sample.name.endswith("_bucket"):
            le = float(labels["le"])
            histogram.buckets[le] = histogram.buckets.get(le, 0.0) + sample.value
        elif sample.name.endswith("_count"):
            histogram.count += sample.value
        elif sample.name.endswith("_sum"):
            histogram.total += sample.value
    return family.name, found


def slo_class(key: Key) -> str | None:
    """Which SLO a key is judged by, or None (non-resource requests)."""
    verb, resource, _, scope = key
    if not resource:
        return None
    if verb == "LIST" and scope in ("namespace", "cluster"):
        return SLO_LIST
    return SLO_SINGLE


def key_name(key: Key) -> str:
    verb, resource, subresource, scope = key
    return f"{verb} {resource}{'/' + subresource if subresource else ''} ({scope})"


def delta(new: Snapshot, old: Snapshot) -> Snapshot:
    return {key: h.minus(old.get(key)) for key, h in new.items() if h.count - (old[key].count if key in old else 0) > 0}


class APILatency(Measurement):
    name = "api_latency"
    title = "API call latency"
    slos: ClassVar[dict[str, float]] = {SLO_SINGLE: 1.0, SLO_LIST: 30.0}

    def __init__(self, ctx: MeasureContext) -> None:
        super().__init__(ctx)
        self.snapshots: list[tuple[float, Snapshot]] = []
        self.metric: str | None = None
        self.errors: list[str] = []
        self.scrape_seconds: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _scrape(self) -> None:
        started = time.monotonic()
        try:
            text = self.ctx.kube.text("/metrics", timeout=30)
        except RunError as exc:
            self.errors.append(exc.message)
            return
        self.scrape_seconds.append(time.monotonic() - started)
        metric, snapshot = parse(text)
        if metric is None:
            self.errors.append(f"/metrics has neither {SLI_METRIC} nor {FALLBACK_METRIC}")
            return
        with self._lock:
            self.metric = metric
            self.snapshots.append((time.time(), snapshot))

    def start(self) -> None:
        self._scrape()
        if not self.snapshots:
            raise RunError(f"cannot read the apiserver's latency histograms: {'; '.join(self.errors)}")
        self._thread = threading.Thread(target=self._loop, name="api-latency", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.ctx.interval):
            self._scrape()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=40)
        self._scrape()

    def live(self) -> str | None:
        with self._lock:
            if len(self.snapshots) < 2:
                return None
            window = delta(self.snapshots[-1][1], self.snapshots[0][1])
        worst = _worst(window, SLO_SINGLE)
        return f"API p99 worst single-object {worst[1]:.3f}s ({key_name(worst[0])})" if worst else None

    def windows(self) -> list[tuple[float, float, Snapshot]]:
        """The 5-minute windows of the run (the last one shorter): start, end, histograms."""
        snaps = self.snapshots
        if len(snaps) < 2:
            return []
        bounds = [0]
        for i, (t, _) in enumerate(snaps):
            if t - snaps[bounds[-1]][0] >= SLO_WINDOW:
                bounds.append(i)
        if bounds[-1] != len(snaps) - 1:
            bounds.append(len(snaps) - 1)
        return [(snaps[a][0], snaps[b][0], delta(snaps[b][1], snaps[a][1])) for a, b in itertools.pairwise(bounds)]

    def result(self) -> Result:
        result = Result(self.name, self.title)
        result.notes += self.errors[:5]
        if len(self.snapshots) < 2:
            result.notes.append("fewer than two scrapes of /metrics: nothing to measure")
            return result
        t0 = self.snapshots[0][0]
        whole = delta(self.snapshots[-1][1], self.snapshots[0][1])
        windows = self.windows()
        per_key = []
        worst: dict[str, tuple[float, Key] | None] = {SLO_SINGLE: None, SLO_LIST: None}
        for key in sorted(whole):
            histogram = whole[key]
            window_p99 = []
            for start, end, snap in windows:
                if key in snap:
                    p99 = snap[key].quantile(0.99)
                    window_p99.append({"start": round(start - t0, 3), "end": round(end - t0, 3), "p99": p99,
                                       "count": snap[key].count})
                    cls = slo_class(key)
                    current = worst.get(cls) if cls else None
                    if cls and p99 is not None and (current is None or p99 > current[0]):
                        worst[cls] = (p99, key)
            per_key.append({
                "verb": key[0], "resource": key[1], "subresource": key[2], "scope": key[3],
                "slo": slo_class(key), "count": histogram.count,
                "mean": histogram.total / histogram.count if histogram.count else None,
                "p50": histogram.quantile(0.5), "p90": histogram.quantile(0.9), "p99": histogram.quantile(0.99),
                "windows": window_p99,
            })
        for cls, description in ((SLO_SINGLE, "API single-object calls, worst p99 per 5 min"),
                                 (SLO_LIST, "API LIST calls, worst p99 per 5 min")):
            found = worst[cls]
            entry = SLO(cls, description + (f": {key_name(found[1])}" if found else ""),
                        self.ctx.threshold(cls, self.slos[cls]), found[0] if found else None)
            result.slos.append(entry)
            result.metrics[f"{cls}_worst_p99"] = Metric(found[0] if found else None, "s")
        calls = sum(h.count for h in whole.values())
        result.metrics["calls"] = Metric(calls, "", better="none")
        for cls in (SLO_SINGLE, SLO_LIST):
            merged = _merge(h for k, h in whole.items() if slo_class(k) == cls)
            for q in (50, 90, 99):
                result.metrics[f"{cls}_p{q}"] = Metric(merged.quantile(q / 100) if merged else None, "s")
        result.data = {
            "metric": self.metric,
            "scrapes": len(self.snapshots),
            "interval_seconds": self.ctx.interval,
            "scrape_seconds": self.scrape_seconds,
            "keys": per_key,
            "series": self._series(),
        }
        return result

    def _series(self) -> dict[str, list[dict[str, float | None]]]:
        """p99 per verb between consecutive scrapes: the latency-over-time plot."""
        t0 = self.snapshots[0][0]
        series: dict[str, list[dict[str, float | None]]] = {}
        for (_, old), (t, new) in zip(self.snapshots, self.snapshots[1:], strict=False):
            step = delta(new, old)
            for verb in sorted({k[0] for k in step}):
                merged = _merge(h for k, h in step.items() if k[0] == verb and slo_class(k))
                if merged is not None:
                    series.setdefault(verb, []).append({"t": round(t - t0, 3), "p99": merged.quantile(0.99),
                                                        "count": merged.count})
        return series


def _merge(histograms: Iterable[Histogram]) -> Histogram | None:
    merged: Histogram | None = None
    for h in histograms:
        if merged is None:
            merged = Histogram(dict(h.buckets), h.count, h.total)
            continue
        for le, c in h.buckets.items():
            merged.buckets[le] = merged.buckets.get(le, 0.0) + c
        merged.count += h.count
        merged.total += h.total
    return merged


def _worst(snapshot: Snapshot, cls: str) -> tuple[Key, float] | None:
    best: tuple[Key, float] | None = None
    for key, histogram in snapshot.items():
        if slo_class(key) != cls:
            continue
        p99 = histogram.quantile(0.99)
        if p99 is not None and (best is None or p99 > best[1]):
            best = (key, p99)
    return best
