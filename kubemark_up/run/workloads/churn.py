"""configmap-churn: objects created and deleted as fast as asked, to load the API
machinery itself (after k8api-scaletest's cmdriver and cmdriverclosed).

Open loop (the default): objects arrive as a Poisson process of `rate` per second
for `duration` seconds, and each is deleted `lifetime` seconds after it was made.
The arrivals are the rate times the duration, each at a uniformly random moment of
the duration (a Poisson process given its count: exponential gaps, and the count
asked for exactly), seeded by `seed`. The calls go out from a pool of `threads`
(when every thread is busy an arrival waits: its lag, reported, says the machine
did not keep up).

Closed loop (`closed_loop=true`): `workers` threads, each creating an object,
updating it (a PUT of a changed payload) and deleting it, over and over, until
`duration` has passed or `objects` have been made.

Reported: requested and achieved rates, and per operation (create, update,
delete) the latency p50/p90/p99/max of its calls. Every object carries the run's
label and lives in the run's namespace; the runner removes whatever is left.
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import Field, model_validator

from kubemark_up.errors import RunError
from kubemark_up.run.model import Metric, Result, percentile
from kubemark_up.run.workloads.base import Plan, RunContext, Workload, WorkloadOptions

OPS = ("create", "update", "delete")


class ChurnOptions(WorkloadOptions):
    rate: float = Field(10, gt=0, le=10_000)  # open loop: objects per second
    duration: float = Field(60, gt=0, le=86_400)  # seconds of arrivals (open) or of work (closed)
    lifetime: float = Field(10, ge=0, le=3_600)  # open loop: seconds from an object's creation to its deletion
    closed_loop: bool = False
    workers: int = Field(10, ge=1, le=1_000)  # closed loop
    objects: int | None = Field(None, ge=1, le=1_000_000)  # at most this many objects (closed loop: default 100 per worker)
    threads: int = Field(32, ge=1, le=512)  # open loop: calls in flight at most
    payload: int = Field(100, ge=0, le=900_000)  # bytes of data in each object
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _bounded(self) -> ChurnOptions:
        if not self.closed_loop and self.rate * self.duration > 1_000_000:
            raise ValueError(f"rate × duration is {self.rate * self.duration:.0f} objects: at most 1,000,000")
        return self

    def count(self) -> int:
        """How many objects the run makes at most."""
        if self.closed_loop:
            return self.objects or 100 * self.workers
        planned = max(1, round(self.rate * self.duration))
        return min(planned, self.objects) if self.objects else planned


def poisson_arrivals(rate: float, duration: float, count: int, seed: int) -> list[float]:
    """`count` arrival moments in [0, duration): a Poisson process of `rate` given its count
    (uniform order statistics, whose gaps are exponential)."""
    rng = random.Random(seed)
    span = min(duration, count / rate)
    return sorted(rng.uniform(0, span) for _ in range(count))


class Latencies:
    """Per-operation call latencies and errors, from many threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seconds: dict[str, list[float]] = defaultdict(list)
        self.lag: list[float] = []  # open loop: how late each call went out after its moment
        self.errors: dict[str, int] = defaultdict(int)
        self.messages: list[str] = []
        self.done: dict[str, list[float]] = defaultdict(list)  # monotonic moment each call returned

    def add(self, op: str, seconds: float, ended: float) -> None:
        with self.lock:
            self.seconds[op].append(seconds)
            self.done[op].append(ended)

    def error(self, op: str, message: str) -> None:
        with self.lock:
            self.errors[op] += 1
            if len(self.messages) < 5:
                self.messages.append(f"{op}: {message}")


class Churn(Workload):
    """The churn engine; a subclass names the resource (collection, object, update)."""

    options_model = ChurnOptions
    options: ChurnOptions
    needs_nodes = False
    title = "Object churn"
    result_name = "churn"

    def __init__(self, options: ChurnOptions) -> None:
        super().__init__(options)
        self.latencies = Latencies()
        self.summary_rates: dict[str, Any] = {}

    # What a subclass names --------------------------------------------------------

    def collection(self, run: RunContext) -> str:
        raise NotImplementedError

    def body(self, run: RunContext, name: str, version: int) -> dict:
        raise NotImplementedError

    def changed(self, obj: dict, version: int) -> dict:
        raise NotImplementedError

    # The engine -------------------------------------------------------------------

    def plan(self, nodes: int) -> Plan:
        phases = ["churn (closed loop)"] if self.options.closed_loop else ["churn (open loop)"]
        return Plan(objects=1 + self.options.count() + self.extra_objects(), pods=0, phases=phases)

    def extra_objects(self) -> int:
        return 0

    def _call(self, run: RunContext, op: str, name: str, method: str, path: str, body: Any = None) -> Any:
        sent, started = time.time(), time.monotonic()
        try:
            answer = run.kube.request(method, path, body=body, missing_ok=op == "delete")
        except RunError as exc:
            self.latencies.error(op, exc.message)
            return None
        ended = time.monotonic()
        self.latencies.add(op, ended - started, ended)
        run.writes.note(self.collection(run).rsplit("/", 1)[-1], op, run.namespace(0), name, sent)
        with self.latencies.lock:
            if op == "create":
                run.progress.created += 1
            elif op == "delete":
                run.progress.deleted += 1
        return answer

    def run(self, run: RunContext) -> None:
        run.namespace(0)
        if self.options.closed_loop:
            self._closed(run)
        else:
            self._open(run)
        run.finish()

    def _open(self, run: RunContext) -> None:
        options = self.options
        count = options.count()
        arrivals = poisson_arrivals(options.rate, options.duration, count, options.seed)
        collection = self.collection(run)
        run.progress.target = count
        run.phase("churn (open loop)", rate=options.rate, items=count, paced=False)
        cond = threading.Condition()
        sequence = itertools.count()
        start = time.monotonic()
        # (due, tie-break, op, name): every create is due at its arrival; a delete is pushed
        # when its create returns, due lifetime later.
        heap: list[tuple[float, int, str, str]] = [(start + a, next(sequence), "create", f"churn-{i}")
                                                   for i, a in enumerate(arrivals)]
        heapq.heapify(heap)
        inflight = [0]

        def work(op: str, name: str, due: float) -> None:
            try:
                with self.latencies.lock:
                    self.latencies.lag.append(max(0.0, time.monotonic() - due))
                if op == "create":
                    made = self._call(run, "create", name, "POST", collection, self.body(run, name, 0))
                    if made is not None:
                        with cond:
                            heapq.heappush(heap, (time.monotonic() + options.lifetime, next(sequence), "delete", name))
                else:
                    self._call(run, "delete", name, "DELETE", f"{collection}/{name}")
            finally:
                with cond:
                    inflight[0] -= 1
                    cond.notify_all()

        with ThreadPoolExecutor(max_workers=options.threads, thread_name_prefix="churn") as pool:
            try:
                while True:
                    with cond:
                        if not heap:
                            if not inflight[0]:
                                break
                            cond.wait(0.2)
                            continue
                        due = heap[0][0]
                        now = time.monotonic()
                        if due > now:
                            cond.wait(min(due - now, 0.2))
                            continue
                        if inflight[0] >= options.threads:  # every thread busy: the arrival waits (its lag)
                            cond.wait(0.05)
                            continue
                        _, _, op, name = heapq.heappop(heap)
                        inflight[0] += 1
                    run.check()
                    pool.submit(work, op, name, due)
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        creates = self.latencies.done["create"]
        # The arrivals span the duration (or count / rate, when `objects` cut it short); a
        # machine that keeps up makes them all within it, and the achieved rate is the one asked.
        span = max(min(options.duration, count / options.rate), (max(creates) - start) if creates else 0.0)
        achieved = len(creates) / span if creates and span > 0 else None
        run.achieved(achieved, len(creates))
        self.summary_rates = {"requested_rate": options.rate, "achieved_rate": achieved, "span_seconds": span,
                              "objects": count, "seconds": time.monotonic() - start}

    def _closed(self, run: RunContext) -> None:
        options = self.options
        budget = options.count()
        collection = self.collection(run)
        run.progress.target = budget
        run.phase("churn (closed loop)", items=budget)
        names = itertools.count()
        lock = threading.Lock()
        start = time.monotonic()
        stop_at = start + options.duration
        cycles = [0]
        stop = threading.Event()

        def worker() -> None:
            while not stop.is_set() and time.monotonic() < min(stop_at, run.deadline):
                with lock:
                    index = next(names)
                    if index >= budget:
                        return
                name = f"churn-{index}"
                made = self._call(run, "create", name, "POST", collection, self.body(run, name, 0))
                if made is None:
                    continue
                self._call(run, "update", name, "PUT", f"{collection}/{name}", self.changed(made, 1))
                self._call(run, "delete", name, "DELETE", f"{collection}/{name}")
                with lock:
                    cycles[0] += 1

        threads = [threading.Thread(target=worker, name=f"churn-worker-{i}", daemon=True) for i in range(options.workers)]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.2)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
        run.check()
        seconds = time.monotonic() - start
        achieved = cycles[0] / seconds if seconds > 0 else None
        run.achieved(achieved, cycles[0])
        operations = sum(len(v) for v in self.latencies.seconds.values())
        self.summary_rates = {"requested_rate": None, "achieved_rate": achieved, "cycles": cycles[0],
                              "operations_per_second": operations / seconds if seconds > 0 else None,
                              "workers": options.workers, "seconds": seconds}

    def results(self) -> list[Result]:
        result = Result(self.result_name, self.title)
        rates = self.summary_rates
        mode = "closed loop" if self.options.closed_loop else "open loop"
        if rates.get("requested_rate") is not None:
            result.metrics["requested_rate"] = Metric(rates["requested_rate"], "/s", better="none")
        result.metrics["achieved_rate"] = Metric(rates.get("achieved_rate"), "/s", better="higher")
        if "operations_per_second" in rates:
            result.metrics["operations_rate"] = Metric(rates["operations_per_second"], "/s", better="higher")
        latencies = self.latencies
        for op in OPS:
            values = latencies.seconds.get(op, [])
            if not values and op == "update" and not self.options.closed_loop:
                continue
            result.metrics[f"{op}s"] = Metric(len(values), "", better="none")
            for q in (50, 90, 99):
                result.metrics[f"{op}_p{q}"] = Metric(percentile(values, q), "s")
            result.metrics[f"{op}_max"] = Metric(max(values) if values else None, "s")
        result.metrics["errors"] = Metric(sum(latencies.errors.values()), "")
        if latencies.lag:
            result.metrics["lag_p99"] = Metric(percentile(latencies.lag, 99), "s")
            result.metrics["lag_max"] = Metric(max(latencies.lag), "s")
            late = sum(1 for v in latencies.lag if v > 0.1)
            if late > len(latencies.lag) / 100:
                result.notes.append(f"{late} of {len(latencies.lag)} calls went out more than 100 ms late: "
                                    "the client or the master did not keep up with the rate asked")
        result.notes += latencies.messages
        result.data = {"mode": mode, **rates, "errors": dict(latencies.errors),
                       "latencies": {op: [round(v, 6) for v in values] for op, values in latencies.seconds.items()},
                       "lag": [round(v, 6) for v in latencies.lag]}
        return [result]


class ConfigMapChurn(Churn):
    name = "configmap-churn"
    summary = "ConfigMaps created (Poisson arrivals) and deleted after a lifetime, or closed-loop create/update/delete"
    title = "ConfigMap churn"
    result_name = "configmap_churn"

    def collection(self, run: RunContext) -> str:
        return f"/api/v1/namespaces/{run.namespace(0)}/configmaps"

    def watched(self, run: RunContext) -> str | None:
        return "/api/v1/configmaps"

    def body(self, run: RunContext, name: str, version: int) -> dict:
        return {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "labels": dict(run.labels)},
                "data": {"payload": _payload(self.options.payload, version)}}

    def changed(self, obj: dict, version: int) -> dict:
        obj["data"] = {"payload": _payload(self.options.payload, version)}
        return obj


def _payload(size: int, version: int) -> str:
    stamp = f"v{version}:"
    return (stamp + "x" * max(0, size - len(stamp)))[:max(size, len(stamp))] if size else stamp

