"""Benchmark: a soak. A local cluster held for hours under a bounded pod churn,
sampled every interval, and the memory slope of its hollow nodes and kube-apiserver.

    python3 benchmarks/soak.py --hours 2 --nodes 1000 [--engine fleet|kubemark] [--fleet-processes P]
        [--churn steady:PODS:PER_SECOND | scale:LOW:HIGH:SECONDS | none] [--interval 60]
        [--warmup MINUTES] [--bound 0.05]
    python3 benchmarks/soak.py --analyse benchmarks/results/soak-....csv [--warmup MINUTES] [--bound 0.05]

It starts one cluster (named soak) with the real CLI in a KUBEMARK_UP_HOME of its
own, makes a Deployment of pause pods in the namespace soak and churns it:
  - steady:PODS:PER_SECOND (the default, steady:1000:2): PODS replicas, of which
    PER_SECOND pods a second are deleted, each replaced by the ReplicaSet, so pods are
    created and deleted at that rate for the whole soak;
  - scale:LOW:HIGH:SECONDS: the Deployment scaled between LOW and HIGH every SECONDS;
  - none: no pods.
Every --interval seconds it samples: nodes Ready and master component restarts
(`kubemark-up status`); RSS and PSS of the hollow-node processes (the fleet's, or
every stock kubelet and proxy summed), of kube-apiserver and etcd (psutil, the pids
from state.json as start_to_ready finds them); kube-apiserver's goroutines and its
apiserver_request_total with codes 429 and 5xx (its /metrics); from the fleet's
status files whatever they carry: goroutines, Events dropped, responses by code
(n/a when a field is not there); the soak's pods Running against those wanted.
After --hours the churn stops, the pods get up to three minutes to settle, a last
sample is taken, and the cluster is stopped and purged. Ctrl-C or SIGTERM at any
point ends the soak the same way: whatever was sampled is kept and the cluster it
started is torn down (a second Ctrl-C does not interrupt the teardown).

The memory slope is a least-squares line through RSS against minutes, over the
samples after --warmup minutes (default half the soak, at most 60: kube-apiserver keeps
Events an hour, so its memory climbs for the first hour of any churn). Samples a
minute apart are not independent (memory follows the garbage collector and the
churn), so the 95 % interval is widened for the residuals' lag-1 autocorrelation
(effective n = n (1 - r1) / (1 + r1)) and uses Student's t at that n. The verdict
"no growth beyond noise" is given only when the interval holds 0 or lies below
--bound MiB/min (default 0.05, 3 MiB an hour).

Results: benchmarks/results/soak-ENGINE-NODES-TIME.csv (one row a sample, rewritten
after each so a killed soak keeps its data) and .json (the settings, every sample
with the per-component and per-code detail, the analysis); a table on stdout. Exit
0, 3 when something did not hold (growth, a restart, nodes not Ready or pods not
Running at the end), 130 when interrupted, 1 when the cluster did not start.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import faulthandler
import itertools
import json
import math
import random
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
from harness import cli, process_pids

RESULTS = Path(__file__).parent / "results"
NAME = "soak"  # the cluster, its namespace and its Deployment
MIB = 2**20
SETTLE_SECONDS = 180
# A sample that takes longer is given up (noted, the soak goes on), its threads'
# stacks printed to stderr: each call has a timeout of its own, but a child process
# that leaves a pipe open outlives its, and the soak must end on time whatever hangs.
SAMPLE_TIMEOUT = 300

# One row of the CSV; None is written as an empty cell (n/a).
FIELDS = ["phase", "time", "minutes", "nodes_ready", "nodes_total", "master_restarts",
          "nodes_rss_mib", "nodes_pss_mib", "nodes_goroutines", "nodes_heap_mib",
          "apiserver_rss_mib", "apiserver_pss_mib", "apiserver_goroutines", "etcd_rss_mib", "etcd_pss_mib",
          "events_dropped", "apiserver_429", "apiserver_5xx", "fleet_429", "fleet_5xx", "fleet_no_response",
          "pods_running", "pods_wanted", "churn_errors", "sample_seconds", "note"]
_TEXT = {"phase", "time", "note"}
# Columns an older soak's CSV may lack (read as n/a).
LATER_FIELDS = {"nodes_heap_mib"}


# The pure parts: the churn asked for, the slope and its interval, the CSV, the figures read.

@dataclass(frozen=True)
class Churn:
    kind: str  # steady | scale | none
    pods: int = 0  # steady: replicas
    rate: float = 0  # steady: deletions a second
    low: int = 0  # scale
    high: int = 0
    period: float = 0

    def __str__(self) -> str:
        if self.kind == "steady":
            return f"steady: {self.pods} pods, {self.rate:g} deleted and replaced a second"
        if self.kind == "scale":
            return f"scale: {self.low} <-> {self.high} pods every {self.period:g} s"
        return "none"


def parse_churn(text: str, nodes: int, max_pods: int = 110) -> Churn:
    """The --churn pattern, bounded by what the nodes can hold; ValueError says why not."""
    kind, *parts = text.split(":")
    try:
        if kind == "none" and not parts:
            return Churn("none")
        if kind == "steady" and len(parts) == 2:
            churn = Churn("steady", pods=int(parts[0]), rate=float(parts[1]))
            most = churn.pods
            if not (churn.pods >= 1 and 0 < churn.rate <= 50):
                raise ValueError("steady wants PODS >= 1 and 0 < PER_SECOND <= 50")
        elif kind == "scale" and len(parts) == 3:
            churn = Churn("scale", low=int(parts[0]), high=int(parts[1]), period=float(parts[2]))
            most = churn.high
            if not (0 <= churn.low < churn.high and churn.period >= 10):
                raise ValueError("scale wants 0 <= LOW < HIGH and SECONDS >= 10")
        else:
            raise ValueError("expected steady:PODS:PER_SECOND, scale:LOW:HIGH:SECONDS or none")
    except ValueError as exc:
        raise ValueError(f"--churn {text!r}: {exc}") from None
    if most > nodes * max_pods:
        raise ValueError(f"--churn {text!r}: {most} pods do not fit on {nodes} nodes of {max_pods} pods")
    return churn


def t_quantile(p: float, df: float) -> float:
    """Student's t quantile (0.5 < p < 1) for any df > 0: the density integrated by
    Simpson's rule, the bound found by bisection (no scipy here)."""
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(x: float, steps: int = 400) -> float:
        h = x / steps
        total = 0.0
        for i in range(steps + 1):
            weight = 1 if i in (0, steps) else (4 if i % 2 else 2)
            total += weight * math.exp(log_norm - (df + 1) / 2 * math.log1p((i * h) ** 2 / df))
        return 0.5 + total * h / 3

    low, high = 0.0, 1.0
    while cdf(high) < p:
        low, high = high, high * 2
    for _ in range(50):
        middle = (low + high) / 2
        low, high = (middle, high) if cdf(middle) < p else (low, middle)
    return (low + high) / 2


@dataclass(frozen=True)
class Slope:
    slope: float  # per minute
    low: float | None  # the 95 % interval; None when too few effective samples
    high: float | None
    samples: int
    effective: float  # n after the lag-1 autocorrelation
    r1: float
    first: float
    last: float


def fit_slope(minutes: list[float], values: list[float]) -> Slope | None:
    """Least-squares slope of values against minutes, with its 95 % interval widened
    for autocorrelated residuals; None under 3 samples or with one time only."""
    n = len(values)
    if n < 3 or len(set(minutes)) < 2:
        return None
    slope, intercept = statistics.linear_regression(minutes, values)
    residuals = [v - (intercept + slope * m) for m, v in zip(minutes, values, strict=True)]
    mean = statistics.fmean(minutes)
    sxx = sum((m - mean) ** 2 for m in minutes)
    squares = sum(r * r for r in residuals)
    r1 = sum(a * b for a, b in itertools.pairwise(residuals)) / squares if squares > 0 else 0.0
    effective = n * (1 - r1) / (1 + r1) if r1 > 0 else float(n)
    low = high = None
    if effective > 2:
        # standard error of the slope from n - 2 degrees of freedom, scaled to the effective n.
        error = math.sqrt(squares / (n - 2) / sxx) * math.sqrt((n - 2) / (effective - 2))
        half = t_quantile(0.975, effective - 2) * error
        low, high = slope - half, slope + half
    return Slope(slope, low, high, n, effective, r1, values[0], values[-1])


def verdict(fit: Slope | None, bound: float) -> tuple[bool | None, str]:
    """(held, words): held True only when the interval holds 0 or lies below bound."""
    if fit is None or fit.low is None or fit.high is None:
        return None, "too few samples to judge"
    if fit.low <= 0 <= fit.high:
        # Said even when the interval is wide; then how much growth it cannot rule out, too.
        wide = f"; a growth of up to {fit.high:+.3f} MiB/min is not ruled out" if fit.high >= bound else ""
        return True, f"no growth beyond noise (the 95 % interval holds 0){wide}"
    if fit.high < bound:
        return True, f"no growth beyond noise (the 95 % interval is below {bound:g} MiB/min)"
    if fit.low >= bound:
        return False, f"grows: the 95 % interval is above {bound:g} MiB/min"
    return False, f"growth not ruled out: the 95 % interval reaches {bound:g} MiB/min (a longer soak would tell)"


def increase(values: list[float | None]) -> float | None:
    """How much a counter rose over the samples, a drop counted as a restart from 0."""
    known = [v for v in values if v is not None]
    if not known:
        return None
    return sum(b - a if b >= a else b for a, b in itertools.pairwise(known))


def write_csv(path: Path, samples: list[dict]) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS, extrasaction="ignore")
        writer.writeheader()
        for sample in samples:
            writer.writerow({k: "" if sample.get(k) is None else sample[k] for k in FIELDS})
    tmp.replace(path)


def read_csv(path: Path) -> list[dict]:
    """The samples of a soak's CSV: numbers as floats, empty cells as None."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and (missing := set(FIELDS) - LATER_FIELDS - set(rows[0])):
        raise ValueError(f"{path}: not a soak CSV (missing {sorted(missing)})")
    return [{k: (v if k in _TEXT else (float(v) if v != "" else None)) for k, v in row.items()} for row in rows]


def apiserver_figures(metrics: str) -> tuple[int | None, dict[str, float]]:
    """(goroutines, apiserver_request_total by code) from kube-apiserver's /metrics.
    Only the lines of the two are handed to Prometheus' parser: the whole text is
    megabytes at a thousand nodes."""
    from prometheus_client.parser import text_string_to_metric_families

    wanted = ("go_goroutines", "apiserver_request_total")
    kept = [line for line in metrics.splitlines()
            if line.startswith(wanted) or (line.startswith("#") and any(f" {w} " in line for w in wanted))]
    goroutines: int | None = None
    codes: dict[str, float] = {}
    for family in text_string_to_metric_families("\n".join(kept) + "\n"):
        for sample in family.samples:
            if sample.name == "go_goroutines":
                goroutines = int(sample.value)
            elif sample.name == "apiserver_request_total":
                code = sample.labels.get("code", "")
                codes[code] = codes.get(code, 0) + sample.value
    return goroutines, codes


def errors_of(codes: dict[str, float]) -> tuple[float, float]:
    """(429s, 5xx) of counts by code."""
    return codes.get("429", 0), sum(v for c, v in codes.items() if len(c) == 3 and c.startswith("5"))


_CODE = re.compile(r"(?:^|\D)([1-5]\d\d|error)$")


def fleet_figures(statuses: list[dict]) -> dict[str, Any]:
    """Goroutines, Events dropped and responses by code over the fleet's status files,
    from whichever fields they carry (None: not there). Events dropped: `events.dropped`
    (the fleet's Events counts), else a field of that name, else the requests counter
    an older fleet added a drop to. Codes: `responses` ("component verb resource code",
    code "error" for no response at all), else any field named for codes."""
    if not statuses:
        return {"goroutines": None, "heap_mib": None, "events_dropped": None, "codes": None}
    goroutines = [s.get("goroutines") for s in statuses]
    heaps = [s.get("heap_live_bytes") for s in statuses]
    dropped: list[float] = []
    for status in statuses:
        events = status.get("events")
        own = events.get("dropped") if isinstance(events, dict) else None
        if own is None:
            own = next((status[k] for k in ("events_dropped", "dropped_events") if isinstance(status.get(k), int | float)), None)
        if own is None and isinstance(status.get("requests"), dict):
            own = sum(v for k, v in status["requests"].items() if "dropped" in k)
        if own is not None:
            dropped.append(own)
    codes: dict[str, float] | None = None
    for status in statuses:
        for key, value in status.items():
            if (key != "responses" and "code" not in key) or not isinstance(value, dict):
                continue
            codes = codes or {}
            for label, count in value.items():
                found = _CODE.search(str(label).strip())
                if found and isinstance(count, int | float):
                    codes[found[1]] = codes.get(found[1], 0) + count
    return {
        "goroutines": sum(goroutines) if all(isinstance(g, int) for g in goroutines) else None,
        "heap_mib": round(sum(heaps) / 2**20, 2) if all(isinstance(h, int) and h > 0 for h in heaps) else None,
        "events_dropped": sum(dropped) if len(dropped) == len(statuses) else None,
        "codes": codes,
    }


def default_warmup(minutes: float) -> float:
    """Minutes left out of the slope: half the soak, at most an hour. kube-apiserver keeps
    Events an hour (--event-ttl), so under churn its memory climbs for the first hour
    whatever else holds (measured, a two-hour 1,000-node soak: fitted from minute 15 it
    read +3.5 MiB/min at minute 78; fitted from minute 60 at the end, -2.9)."""
    return min(60.0, minutes / 2)


def analyse(samples: list[dict], warmup: float, bound: float) -> dict[str, Any]:
    """The soak's figures: the memory slopes after the warm-up, and over the whole soak
    the drops, restarts, error counts, nodes and pods."""
    soak = [s for s in samples if s.get("phase") == "soak"]
    counted = [s for s in soak if s["minutes"] is not None and s["minutes"] >= warmup]
    fits: dict[str, Any] = {}
    for key in ("nodes_rss_mib", "apiserver_rss_mib", "nodes_heap_mib"):
        points = [(s["minutes"], s[key]) for s in counted if s.get(key) is not None]
        fit = fit_slope([p[0] for p in points], [p[1] for p in points])
        held, words = verdict(fit, bound)
        fits[key] = {"fit": asdict(fit) if fit else None, "held": held, "verdict": words}
    # The live heap tells a leak (it grows) from memory the runtime holds on to (RSS
    # grows, the heap does not); what the soak is held to is RSS, the cost a user pays.
    fits["nodes_heap_mib"]["judged"] = False
    last = samples[-1] if samples else {}

    def column(key: str, rows: list[dict] = samples) -> list[Any]:
        return [s.get(key) for s in rows]

    ready = [(s["nodes_ready"], s["nodes_total"]) for s in soak if s.get("nodes_ready") is not None]
    pods = [(s["pods_running"], s["pods_wanted"]) for s in soak if s.get("pods_running") is not None]
    return {
        "warmup_minutes": warmup, "bound_mib_per_min": bound, "samples": len(samples), "fitted": len(counted),
        "minutes": soak[-1]["minutes"] if soak else 0,
        "slopes": fits,
        "pss_mib": {k: _ends([c for c in column(k, counted) if c is not None]) for k in ("nodes_pss_mib", "apiserver_pss_mib")},
        "goroutines": {k: [g for g in column(k, counted) if g is not None] for k in ("apiserver_goroutines", "nodes_goroutines")},
        "master_restarts": {"first": samples[0].get("master_restarts") if samples else None,
                            "last": last.get("master_restarts")},
        "events_dropped": increase(column("events_dropped")),
        "events_dropped_total": last.get("events_dropped"),
        "apiserver_429": increase(column("apiserver_429")), "apiserver_5xx": increase(column("apiserver_5xx")),
        "fleet_429": increase(column("fleet_429")), "fleet_5xx": increase(column("fleet_5xx")),
        "fleet_no_response": increase(column("fleet_no_response")),
        "nodes_ready_min": min(ready) if ready else None,
        "nodes_end": (last.get("nodes_ready"), last.get("nodes_total")),
        "pods_samples_at_wanted": sum(1 for r, w in pods if r == w), "pods_samples": len(pods),
        "pods_end": (last.get("pods_running"), last.get("pods_wanted")),
        "churn_errors": last.get("churn_errors"),
    }


def _ends(values: list[Any]) -> list[Any]:
    return [values[0], values[-1]] if values else []


def _n(value: Any, unit: str = "", digits: int = 0) -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def _signed(value: float) -> str:
    return f"{value:+.3f}"


def table(analysis: dict, nodes_label: str) -> str:
    """The summary, one Markdown table."""
    a = analysis
    lines = [f"soak of {a['minutes']:.1f} min, {a['samples']} samples; slopes over {a['fitted']} samples after "
             f"{a['warmup_minutes']:g} min of warm-up, bound {a['bound_mib_per_min']:g} MiB/min",
             "", "| figure | value | verdict |", "| --- | --- | --- |"]
    for key, label in (("nodes_rss_mib", f"{nodes_label} RSS slope"), ("apiserver_rss_mib", "kube-apiserver RSS slope"),
                       ("nodes_heap_mib", f"{nodes_label} live heap slope (shown, not judged)")):
        entry = a["slopes"].get(key)
        if entry is None:  # an analysis of an older soak
            continue
        fit = entry["fit"]
        if fit is None:
            value = "n/a"
        else:
            interval = f"95 % {_signed(fit['low'])} … {_signed(fit['high'])}" if fit["low"] is not None else "no interval"
            value = (f"{_signed(fit['slope'])} MiB/min ({interval}; n {fit['samples']}, effective {fit['effective']:.1f}); "
                     f"{fit['first']:.1f} → {fit['last']:.1f} MiB")
        lines.append(f"| {label} | {value} | {entry['verdict']} |")
    for key, label in (("nodes_pss_mib", f"{nodes_label} PSS"), ("apiserver_pss_mib", "kube-apiserver PSS")):
        ends = a["pss_mib"][key]
        lines.append(f"| {label} after warm-up | {' → '.join(f'{v:.1f} MiB' for v in ends) or 'n/a'} | |")
    for key, label in (("apiserver_goroutines", "kube-apiserver goroutines"), ("nodes_goroutines", f"{nodes_label} goroutines")):
        values = a["goroutines"][key]
        text = f"{values[0]:,.0f} → {values[-1]:,.0f} (min {min(values):,.0f}, max {max(values):,.0f})" if values else "n/a"
        lines.append(f"| {label} after warm-up | {text} | |")
    restarts = a["master_restarts"]
    grew = restarts["last"] is not None and restarts["first"] is not None and restarts["last"] > restarts["first"]
    lines.append(f"| master restarts | {_n(restarts['last'])} at the end ({_n(restarts['first'])} at the first sample) "
                 f"| {'restarted during the soak' if grew else ''} |")
    lines.append(f"| Events dropped | {_n(a['events_dropped'])} during the soak ({_n(a['events_dropped_total'])} since start) | |")
    lines.append(f"| kube-apiserver 429 / 5xx | {_n(a['apiserver_429'])} / {_n(a['apiserver_5xx'])} during the soak | |")
    lines.append(f"| fleet responses 429 / 5xx / none | {_n(a['fleet_429'])} / {_n(a['fleet_5xx'])} / "
                 f"{_n(a['fleet_no_response'])} during the soak | |")
    low = a["nodes_ready_min"]
    lines.append(f"| nodes Ready | {_n(a['nodes_end'][0])}/{_n(a['nodes_end'][1])} at the end; lowest "
                 f"{f'{low[0]:,.0f}/{low[1]:,.0f}' if low else 'n/a'} | |")
    lines.append(f"| pods Running / wanted | {_n(a['pods_end'][0])}/{_n(a['pods_end'][1])} at the end; at wanted in "
                 f"{a['pods_samples_at_wanted']} of {a['pods_samples']} samples; churn errors {_n(a['churn_errors'])} | |")
    return "\n".join(lines)


def held(analysis: dict) -> bool:
    """Whether the soak held: no growth found, no restart during it, every node Ready
    and every pod Running at the end."""
    restarts = analysis["master_restarts"]
    ready, total = analysis["nodes_end"]
    running, wanted = analysis["pods_end"]
    return (all(e["held"] is not False for e in analysis["slopes"].values() if e.get("judged", True))
            and (restarts["last"] or 0) <= (restarts["first"] or 0)
            and ready is not None and ready == total and running == wanted)


# The cluster's side: the churn, one sample, the soak.

class Churner(threading.Thread):
    """The Deployment and its churn, until stopped. Calls that fail are counted and the
    churn goes on: the soak measures what the master does, not a perfect load."""

    def __init__(self, kube: Any, churn: Churn) -> None:
        super().__init__(name="churn", daemon=True)
        self.kube, self.churn = kube, churn
        self.halt = threading.Event()
        self.wanted = 0
        self.errors = 0
        self.deleted = 0
        self.last_error = ""

    def create(self) -> None:
        from kubemark_up.run.workloads.base import PAUSE_IMAGE

        self.kube.request("POST", "/api/v1/namespaces", body={"metadata": {"name": NAME}})
        self.wanted = self.churn.pods if self.churn.kind == "steady" else self.churn.low
        if self.churn.kind == "none":
            return
        labels = {"app": NAME}
        container = {"name": "pause", "image": PAUSE_IMAGE, "imagePullPolicy": "IfNotPresent"}
        self.kube.request("POST", f"/apis/apps/v1/namespaces/{NAME}/deployments", body={
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": NAME},
            "spec": {"replicas": self.wanted, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [container], "terminationGracePeriodSeconds": 1}}}})

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        from kubemark_up.errors import RunError

        try:
            return self.kube.request(method, path, **kwargs)
        except RunError as exc:
            self.errors += 1
            self.last_error = str(exc)[:200]
            return None

    def run(self) -> None:
        if self.churn.kind == "scale":
            while not self.halt.wait(self.churn.period):
                size = self.churn.high if self.wanted == self.churn.low else self.churn.low
                if self._call("PATCH", f"/apis/apps/v1/namespaces/{NAME}/deployments/{NAME}",
                              body={"spec": {"replicas": size}}, content_type="application/merge-patch+json"):
                    self.wanted = size
        elif self.churn.kind == "steady":
            names: list[str] = []
            listed = 0.0
            due = time.monotonic()
            # Paced by the clock, not by a wait after each call: the calls' own time
            # would otherwise lower the rate (1,747 instead of 1,800 in 15 min at 2/s).
            while True:
                due = max(due + 1 / self.churn.rate, time.monotonic() - 1)
                if self.halt.wait(max(0.0, due - time.monotonic())):
                    break
                if not names or time.monotonic() - listed > 30:
                    # From the watch cache (resourceVersion 0), twice a minute at most: the
                    # churn's own reads stay small beside what it measures.
                    listing = self._call("GET", f"/api/v1/namespaces/{NAME}/pods",
                                         query={"labelSelector": f"app={NAME}", "resourceVersion": "0"})
                    listed = time.monotonic()
                    names = [p["metadata"]["name"] for p in (listing or {}).get("items", [])
                             if not p["metadata"].get("deletionTimestamp")]
                    random.shuffle(names)
                if names and self._call("DELETE", f"/api/v1/namespaces/{NAME}/pods/{names.pop()}", missing_ok=True):
                    self.deleted += 1


def pods_running(kube: Any) -> int:
    from kubemark_up.run.model import all_running

    listing = kube.request("GET", f"/api/v1/namespaces/{NAME}/pods",
                           query={"labelSelector": f"app={NAME}", "resourceVersion": "0"}, timeout=60)
    return sum(1 for p in listing["items"] if all_running(p) and not p["metadata"].get("deletionTimestamp"))


def _memory(pids: list[int]) -> tuple[float | None, float | None]:
    """(RSS, PSS) in MiB summed over pids; None when none could be read."""
    rss = pss = 0.0
    read = 0
    for pid in pids:
        try:
            info = psutil.Process(pid).memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss, pss, read = rss + info.rss / MIB, pss + info.pss / MIB, read + 1
    return (round(rss, 2), round(pss, 2)) if read else (None, None)


def take_sample(home: Path, kube: Any, churner: Churner, began: float, phase: str) -> dict:
    clock = time.monotonic()
    row: dict[str, Any] = {"phase": phase, "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                           "minutes": round((clock - began) / 60, 3)}
    notes = []
    status = cli(home, "status", "--name", NAME, "-o", "json", timeout=180)
    try:
        report = json.loads(status.stdout)
        row["nodes_ready"], row["nodes_total"] = report["nodes"]["ready"], report["nodes"]["total"]
        row["restarts"] = {c["name"]: c["restarts"] for c in report["master"]["components"]}
        row["master_restarts"] = sum(row["restarts"].values())
    except (ValueError, KeyError):
        notes.append(f"status: {status.stderr.strip()[-200:]}")
    state = json.loads((home / NAME / "state.json").read_text())
    pids = process_pids(state)
    row["nodes_rss_mib"], row["nodes_pss_mib"] = _memory([p for role, p in pids.values() if role != "master"])
    for component in ("kube-apiserver", "etcd"):
        key = "apiserver" if component == "kube-apiserver" else component
        row[f"{key}_rss_mib"], row[f"{key}_pss_mib"] = _memory([pids[component][1]] if component in pids else [])
    statuses = []
    for record in state["processes"].values():
        if record.get("role") == "fleet":
            try:
                statuses.append(json.loads(Path(record["argv"][-1].removesuffix(".json") + ".status.json").read_text()))
            except (OSError, ValueError, KeyError, IndexError):
                notes.append(f"no status file of {record.get('name')}")
    fleet = fleet_figures(statuses)
    row["nodes_goroutines"], row["events_dropped"] = fleet["goroutines"], fleet["events_dropped"]
    row["nodes_heap_mib"] = fleet["heap_mib"]
    if fleet["codes"] is not None:
        row["fleet_429"], row["fleet_5xx"] = errors_of(fleet["codes"])
        row["fleet_no_response"] = fleet["codes"].get("error", 0)
        row["fleet_codes"] = {c: v for c, v in sorted(fleet["codes"].items()) if c >= "400"}
    from kubemark_up.errors import RunError

    try:
        row["apiserver_goroutines"], codes = apiserver_figures(kube.text("/metrics", timeout=60))
        row["apiserver_codes"] = {c: v for c, v in sorted(codes.items()) if c >= "400"}
        row["apiserver_429"], row["apiserver_5xx"] = errors_of(codes)
    except RunError as exc:
        notes.append(str(exc)[:200])
    try:
        row["pods_running"] = pods_running(kube)
    except RunError as exc:
        notes.append(str(exc)[:200])
    row["pods_wanted"] = churner.wanted
    row["churn_errors"] = churner.errors
    if churner.last_error:
        row["churn_last_error"] = churner.last_error
    row["sample_seconds"] = round(time.monotonic() - clock, 2)
    row["note"] = "; ".join(notes)
    return row


def bounded_sample(home: Path, kube: Any, churner: Churner, began: float, phase: str,
                   timeout: float = SAMPLE_TIMEOUT) -> dict:
    """take_sample, given up after timeout: a row with only its time and a note then
    (the stuck call's thread is left behind, a daemon; the soak still ends on time)."""
    found: list[dict] = []
    worker = threading.Thread(target=lambda: found.append(take_sample(home, kube, churner, began, phase)),
                              daemon=True, name="sample")
    worker.start()
    worker.join(timeout)
    if found:
        return found[0]
    faulthandler.dump_traceback(all_threads=True)  # where it hangs, for whoever reads the log
    return {"phase": phase, "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "minutes": round((time.monotonic() - began) / 60, 3), "pods_wanted": churner.wanted,
            "churn_errors": churner.errors, "sample_seconds": timeout,
            "note": f"sample given up after {timeout:.0f} s (its stack: stderr)"}


def _line(row: dict, nodes_label: str) -> str:
    return (f"[{row['minutes']:7.1f} min] nodes {_n(row.get('nodes_ready'))}/{_n(row.get('nodes_total'))} Ready · "
            f"restarts {_n(row.get('master_restarts'))} · {nodes_label} RSS {_n(row.get('nodes_rss_mib'), ' MiB', 1)} "
            f"PSS {_n(row.get('nodes_pss_mib'), ' MiB', 1)} · apiserver RSS {_n(row.get('apiserver_rss_mib'), ' MiB', 1)} "
            f"{_n(row.get('apiserver_goroutines'))} goroutines · dropped {_n(row.get('events_dropped'))} · "
            f"429 {_n(row.get('apiserver_429'))} 5xx {_n(row.get('apiserver_5xx'))} · pods "
            f"{_n(row.get('pods_running'))}/{_n(row.get('pods_wanted'))}"
            + (f" · {row['note']}" if row.get("note") else ""))


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def soak(args: argparse.Namespace, churn: Churn) -> int:
    from kubemark_up.errors import RunError
    from kubemark_up.run.model import Kube

    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"soak-{args.engine}-{args.nodes}-{stamp}"
    home = Path(tempfile.mkdtemp(prefix="kmup-soak-"))
    nodes_label = "fleet" if args.engine == "fleet" else "hollow nodes"
    warmup = args.warmup if args.warmup is not None else default_warmup(args.hours * 60)
    document: dict[str, Any] = {
        "command": " ".join(sys.argv), "engine": args.engine, "nodes": args.nodes, "fleet_processes": args.fleet_processes,
        "hours": args.hours, "interval": args.interval, "churn": str(churn), "home": str(home),
        "machine": {"cpus": psutil.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)},
    }
    samples: list[dict] = []
    churner: Churner | None = None
    code = 0
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    print(f"soak: {args.nodes} {args.engine} nodes, {args.hours:g} h, churn {churn}, a sample every {args.interval:g} s; "
          f"KUBEMARK_UP_HOME={home}", flush=True)
    try:
        began = time.monotonic()
        extra = ["--fleet-processes", str(args.fleet_processes)] if args.engine == "fleet" else []
        started = cli(home, "start", "--name", NAME, "--nodes", str(args.nodes), "--node-engine", args.engine, *extra,
                      timeout=3600)
        if started.returncode != 0:
            print(f"start failed ({started.returncode}):\n{started.stderr[-3000:]}", file=sys.stderr)
            return 1
        print(f"started: {args.nodes} nodes Ready {time.monotonic() - began:.0f} s after start", flush=True)
        kube = Kube(home / NAME / "kubeconfig.kubemark", timeout=30)
        churner = Churner(kube, churn)
        churner.create()
        churner.start()
        began = time.monotonic()
        deadline = began + args.hours * 3600
        for index in range(int(args.hours * 3600 // args.interval) + 1):
            at = began + index * args.interval
            if at > deadline:
                break
            time.sleep(max(0.0, at - time.monotonic()))
            samples.append(bounded_sample(home, kube, churner, began, "soak"))
            print(_line(samples[-1], nodes_label), flush=True)
            write_csv(out.with_suffix(".csv"), samples)
        time.sleep(max(0.0, deadline - time.monotonic()))
        churner.halt.set()
        churner.join(timeout=60)
        settle_by = time.monotonic() + SETTLE_SECONDS
        while time.monotonic() < settle_by:
            try:
                if pods_running(kube) == churner.wanted:
                    break
            except Exception:  # the settle is best effort: the last sample tells
                pass
            time.sleep(10)
        samples.append(bounded_sample(home, kube, churner, began, "end"))
        print(_line(samples[-1], nodes_label) + "  (end: churn stopped, pods settled)", flush=True)
    except RunError as exc:
        code = 1
        print(f"soak stopped: {exc}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        code = 130
        print("interrupted: keeping the samples, tearing the cluster down", file=sys.stderr, flush=True)
    finally:
        # The teardown is not to be interrupted: its child ignores Ctrl-C too.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if churner is not None:
            churner.halt.set()
        if samples:
            write_csv(out.with_suffix(".csv"), samples)
            analysis = analyse(samples, warmup, args.bound)
            document.update(samples=samples, analysis=analysis, deleted_by_churn=churner.deleted if churner else 0)
            out.with_suffix(".json").write_text(json.dumps(document, indent=1, default=str))
            print(table(analysis, nodes_label))
            print(f"[{out}.csv, {out}.json]")
            if code == 0 and not held(analysis):
                code = 3
        stopped = cli(home, "stop", "--name", NAME, "--purge", timeout=900)
        if stopped.returncode == 0:
            shutil.rmtree(home, ignore_errors=True)
            print("cluster stopped and purged", flush=True)
        else:
            print(f"stop failed ({stopped.returncode}): {stopped.stderr[-1000:]}\n"
                  f"stop it with: KUBEMARK_UP_HOME={home} python3 -m kubemark_up stop --name {NAME} --purge",
                  file=sys.stderr)
            code = code or 1
    return code


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--hours", type=float, default=2.0, help="how long the soak runs once the nodes are Ready [2]")
    parser.add_argument("--nodes", type=int, default=1000, help="hollow nodes [1000]")
    parser.add_argument("--engine", choices=["fleet", "kubemark"], default="fleet", help="node engine [fleet]")
    parser.add_argument("--fleet-processes", type=int, default=1, help="fleet processes sharing the nodes [1]")
    parser.add_argument("--churn", default="steady:1000:2",
                        help="steady:PODS:PER_SECOND, scale:LOW:HIGH:SECONDS or none [steady:1000:2]")
    parser.add_argument("--interval", type=float, default=60, help="seconds between samples [60]")
    parser.add_argument("--warmup", type=float, default=None, help="minutes left out of the slope [half the soak, at most 60]")
    parser.add_argument("--bound", type=float, default=0.05, help="MiB/min a slope may reach and still be noise [0.05]")
    parser.add_argument("--analyse", type=Path, metavar="CSV", help="fit a soak's CSV again; starts nothing")
    args = parser.parse_args()
    if args.analyse:
        try:
            samples = read_csv(args.analyse)
        except (OSError, ValueError) as exc:
            parser.error(str(exc))
        soaked = max((s["minutes"] for s in samples if s["phase"] == "soak"), default=0)
        warmup = args.warmup if args.warmup is not None else default_warmup(soaked)
        print(table(analyse(samples, warmup, args.bound), "fleet" if "-fleet-" in args.analyse.name else "hollow nodes"))
        return
    if not 0 < args.hours <= 48:
        parser.error("--hours: more than 0, at most 48")
    if not 1 <= args.nodes <= 10_000:
        parser.error("--nodes: 1 to 10,000")
    if not 10 <= args.interval <= 3600 or args.hours * 3600 / args.interval > 20_000:
        parser.error("--interval: 10 to 3,600 seconds, at most 20,000 samples")
    if args.warmup is not None and not 0 <= args.warmup < args.hours * 60:
        parser.error("--warmup: from 0 to less than the soak's minutes")
    if not 1 <= args.fleet_processes <= 64 or args.bound <= 0:
        parser.error("--fleet-processes: 1 to 64; --bound: more than 0")
    try:
        churn = parse_churn(args.churn, args.nodes)
    except ValueError as exc:
        parser.error(str(exc))
    sys.exit(soak(args, churn))


if __name__ == "__main__":
    main()
