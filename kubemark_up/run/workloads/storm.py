"""watch-storm: W watchers on one resource and a writer, W growing in steps, to find
where watch fan-out stops scaling ("how many watch clients can we have before
everything explodes", the Kubemark proposal's question; the watch cache is why it
scales at all).

Each watcher is what an informer does, on a connection of its own (HTTP/1.1, TLS,
the kubeconfig's identity): a LIST of the run's ConfigMaps, then watches from its
resourceVersion, each ended by the server after `window` seconds (timeoutSeconds)
and opened again from the last version it saw; on 410 Gone it lists again
(counted: a relist), and a watch that broke or ended early is counted as dropped.
They run in one asyncio loop (aiohttp) in a thread of the run's process.

Per step: the watchers grow to W and every one has an open watch; then the writer
updates `objects` ConfigMaps in turn, `writes` times at `rate` per second, noting
when each write was sent and the resourceVersion it made; then it waits (at most
`settle` seconds) until every watcher has every write. Reported per step: the
delivery latency from each write to each watcher (p50/p90/p99/max), deliveries
against the writes × watchers expected (missing, duplicated), dropped, re-listed
and re-opened watches, and the CPU and resident memory of kube-apiserver and etcd
(and of this client, so a client-bound result shows as one). Run it against a
master with the watch cache on and off (`watch_cache: false` at start).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import psutil
from pydantic import Field, field_validator

from kubemark_up.errors import RunError
from kubemark_up.run.model import RUN_LABEL, Kube, Metric, Result, percentile
from kubemark_up.run.workloads.base import Plan, RunContext, Workload, WorkloadOptions

MIB = 1024 * 1024
STORM_LABEL = "kubemark-up.run/storm"
MASTER = ("kube-apiserver", "etcd")


class StormOptions(WorkloadOptions):
    rate: float = Field(5, gt=0, le=1_000)  # writes per second
    steps: list[int] = Field(default_factory=lambda: [100, 1000])  # watchers at each step (the watchers of a step stay for the next)
    writes: int = Field(50, ge=1, le=100_000)  # writes per step
    objects: int = Field(10, ge=1, le=1_000)  # ConfigMaps the writer updates in turn
    window: int = Field(60, ge=1, le=3_600)  # timeoutSeconds of each watch
    settle: float = Field(30, gt=0, le=600)  # seconds to wait for the deliveries after a step's last write
    payload: int = Field(100, ge=0, le=32_768)  # bytes of data in each ConfigMap
    parallel: int = Field(50, ge=1, le=1_000)  # watches being opened at once while growing

    @field_validator("steps", mode="before")
    @classmethod
    def _steps(cls, value: Any) -> Any:
        if isinstance(value, str):  # --set steps=100,1000
            try:
                return [int(v) for v in value.replace(";", ",").split(",") if v.strip()]
            except ValueError:
                raise ValueError(f"steps takes watcher counts such as 100,1000, not {value!r}") from None
        return value

    @field_validator("steps")
    @classmethod
    def _growing(cls, value: list[int]) -> list[int]:
        if not value or any(v < 1 for v in value) or value != sorted(set(value)) or value[-1] > 20_000:
            raise ValueError("steps must be growing watcher counts between 1 and 20,000, such as 100,1000")
        return value


@dataclass
class Watcher:
    index: int
    received: dict[str, float] = field(default_factory=dict)  # resourceVersion -> wall clock when read
    duplicates: int = 0
    rewatches: int = 0  # windows the server ended on time, opened again
    dropped: int = 0  # watches that broke or ended early
    relists: int = 0  # 410 Gone: listed again
    errors: list[str] = field(default_factory=list)
    established: bool = False


class WatcherPool:
    """The watchers, in one asyncio loop in a thread of their own."""

    def __init__(self, kube: Kube, path: str, selector: str, window: int, parallel: int) -> None:
        self.kube, self.path, self.selector, self.window = kube, path, selector, window
        self.watchers: list[Watcher] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="watch-storm", daemon=True)
        self.tasks: list[asyncio.Task] = []
        self.session: aiohttp.ClientSession | None = None
        self.parallel = parallel
        self._opening: asyncio.Semaphore | None = None

    def start(self) -> None:
        self.thread.start()
        self._call(self._open(), 30)

    def _call(self, coroutine: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def _open(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ssl=self.kube.ssl_context())
        self.session = aiohttp.ClientSession(connector=connector, headers=self.kube.headers)
        self._opening = asyncio.Semaphore(self.parallel)

    def grow(self, total: int, timeout: float) -> int:
        """Grow to `total` watchers; return how many have an open watch (after at most timeout)."""
        return int(self._call(self._grow(total, timeout), timeout + 30))

    async def _grow(self, total: int, timeout: float) -> int:
        for index in range(len(self.watchers), total):
            watcher = Watcher(index)
            self.watchers.append(watcher)
            self.tasks.append(asyncio.ensure_future(self._watch(watcher)))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            opened = sum(1 for w in self.watchers if w.established)
            if opened == len(self.watchers):
                return opened
            await asyncio.sleep(0.1)
        return sum(1 for w in self.watchers if w.established)

    async def _list(self, watcher: Watcher) -> str:
        assert self.session is not None
        async with self.session.get(self.kube.url(self.path, {"labelSelector": self.selector}),
                                    timeout=aiohttp.ClientTimeout(total=60)) as response:
            if response.status != 200:
                raise RunError(f"LIST {self.path}: {response.status}")
            return str((await response.json())["metadata"]["resourceVersion"])

    async def _watch(self, watcher: Watcher) -> None:
        assert self.session is not None and self._opening is not None
        version = ""
        while True:
            opened = time.monotonic()
            try:
                if not version:
                    async with self._opening:
                        version = await self._list(watcher)
                query = {"labelSelector": self.selector, "watch": "true", "resourceVersion": version,
                         "timeoutSeconds": self.window, "allowWatchBookmarks": "true"}
                async with self.session.get(self.kube.url(self.path, query),
                                            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30,
                                                                          sock_read=self.window + 30)) as response:
                    if response.status != 200:
                        raise RunError(f"watch {self.path}: {response.status}")
                    watcher.established = True
                    while True:
                        line = await response.content.readline()
                        if not line:
                            break
                        now = time.time()
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        obj = event.get("object") or {}
                        if event.get("type") == "ERROR":
                            if obj.get("code") == 410:
                                watcher.relists += 1
                                version = ""  # list again
                            else:
                                raise RunError(f"watch error: {obj.get('message')}")
                            break
                        rv = (obj.get("metadata") or {}).get("resourceVersion", "")
                        version = rv or version
                        if event.get("type") == "BOOKMARK":
                            continue
                        if rv in watcher.received:
                            watcher.duplicates += 1
                        else:
                            watcher.received[rv] = now
                if version and time.monotonic() - opened < self.window - 1:
                    watcher.dropped += 1  # ended before its time, without a 410
                elif version:
                    watcher.rewatches += 1
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, TimeoutError, ValueError, RunError, OSError) as exc:
                watcher.dropped += 1
                if len(watcher.errors) < 3:
                    watcher.errors.append(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.5)

    def counters(self) -> dict[str, int]:
        return {k: sum(getattr(w, k) for w in self.watchers) for k in ("rewatches", "dropped", "relists", "duplicates")}

    def close(self) -> None:
        async def shutdown() -> None:
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            if self.session is not None:
                await self.session.close()

        if self.thread.is_alive():
            try:
                self._call(shutdown(), 60)
            except Exception:  # closing is best effort; the loop stops anyway
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=30)
        if not self.loop.is_running():
            self.loop.close()


class WatchStorm(Workload):
    name = "watch-storm"
    summary = "W watchers looping over time-limited watches, W growing in steps, and a writer: delivery latency, master cost"
    options_model = StormOptions
    options: StormOptions
    needs_nodes = False
    result_name = "watch_storm"
    title = "Watch storm: delivery latency and the master's cost per watcher count"

    def __init__(self, options: StormOptions) -> None:
        super().__init__(options)
        self.steps: list[dict[str, Any]] = []
        self.notes: list[str] = []

    def plan(self, nodes: int) -> Plan:
        return Plan(objects=1 + self.options.objects, pods=0,
                    phases=[f"{p} {w} watchers" for w in self.options.steps for p in ("grow to", "write to")])

    def watched(self, run: RunContext) -> str | None:
        return "/api/v1/configmaps"

    # The resource written and watched (flunder-watch names another) -------------------

    def collection(self, run: RunContext) -> str:
        return f"/api/v1/namespaces/{run.namespace(0)}/configmaps"

    def body(self, name: str) -> dict:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {STORM_LABEL: "1"}},
                "data": {"payload": "x" * self.options.payload}}

    def patch(self, written: int) -> dict:
        return {"metadata": {"annotations": {"kubemark-up.run/write": str(written)}},
                "data": {"payload": f"{written}:" + "x" * self.options.payload}}

    def run(self, run: RunContext) -> None:
        options = self.options
        collection = self.collection(run)
        names = [f"storm-{i}" for i in range(options.objects)]
        for name in names:
            run.create(collection, self.body(name))
        pool = WatcherPool(run.kube, collection, f"{RUN_LABEL}={run.run_id},{STORM_LABEL}=1", options.window,
                           options.parallel)
        pool.start()
        written = 0
        try:
            for watchers in options.steps:
                run.check()
                run.phase(f"grow to {watchers} watchers", items=watchers)
                grow_started = time.monotonic()
                timeout = max(1.0, min(max(60.0, watchers / 10), run.deadline - time.monotonic()))
                opened = pool.grow(watchers, timeout)
                step: dict[str, Any] = {"watchers": watchers, "open": opened,
                                        "grow_seconds": round(time.monotonic() - grow_started, 3)}
                if opened < watchers:
                    self.notes.append(f"{watchers} watchers: only {opened} had an open watch after {timeout:.0f}s")
                usage = Usage(run)
                usage.sample()
                step["idle"] = usage.latest()
                before = pool.counters()
                established = [w for w in pool.watchers if w.established]
                pacer = run.phase(f"write to {watchers} watchers", rate=options.rate, items=options.writes)
                assert pacer is not None
                sent: dict[str, float] = {}
                for _ in range(options.writes):
                    pacer.take()
                    run.check()
                    name = names[written % len(names)]
                    written += 1
                    started = time.time()
                    answer = run.kube.request("PATCH", f"{collection}/{name}", content_type="application/merge-patch+json",
                                              body=self.patch(written))
                    run.writes.note(collection.rsplit("/", 1)[-1], "update", run.namespace(0), name, started)
                    sent[answer["metadata"]["resourceVersion"]] = started
                    usage.maybe_sample()
                wait_started = time.monotonic()
                expected = len(sent) * len(established)
                while time.monotonic() - wait_started < options.settle and time.monotonic() < run.deadline:
                    if sum(1 for w in established for rv in sent if rv in w.received) >= expected:
                        break
                    usage.maybe_sample()
                    time.sleep(0.2)
                usage.sample()
                step.update(self._deliveries(sent, established, pool, before))
                step["settle_seconds"] = round(time.monotonic() - wait_started, 3)
                step["write_rate"] = pacer.achieved
                step.update(usage.summary())
                self.steps.append(step)
            run.finish()
        finally:
            errors = [e for w in pool.watchers for e in w.errors][:5]
            pool.close()
            self.notes += [f"a watcher: {e}" for e in errors]

    @staticmethod
    def _deliveries(sent: dict[str, float], watchers: list[Watcher], pool: WatcherPool,
                    before: dict[str, int]) -> dict[str, Any]:
        latencies = [w.received[rv] - at for w in watchers for rv, at in sent.items() if rv in w.received]
        expected = len(sent) * len(watchers)
        after = pool.counters()
        found: dict[str, Any] = {"writes": len(sent), "expected": expected, "deliveries": len(latencies),
                                 "missing": expected - len(latencies)}
        found.update({k: after[k] - before.get(k, 0) for k in after})
        for q in (50, 90, 99):
            found[f"delivery_p{q}"] = percentile(latencies, q)
        found["delivery_max"] = max(latencies) if latencies else None
        return found

    def results(self) -> list[Result]:
        result = Result(self.result_name, self.title)
        units = {"delivery_p50": "s", "delivery_p90": "s", "delivery_p99": "s", "delivery_max": "s",
                 "deliveries": "", "expected": "", "missing": "", "duplicates": "", "dropped": "", "relists": "",
                 "rewatches": "", "grow_seconds": "s", "kube-apiserver_cores": "cores", "kube-apiserver_rss_mib": "MiB",
                 "etcd_cores": "cores", "etcd_rss_mib": "MiB", "client_cores": "cores"}
        neutral = {"deliveries", "expected", "rewatches"}
        for step in self.steps:
            for key, unit in units.items():
                if key in step:
                    result.metrics[f"w{step['watchers']}_{key}"] = Metric(step[key], unit,
                                                                          better="none" if key in neutral else "lower")
        knee = self._knee()
        if knee:
            result.notes.append(knee)
        result.notes += self.notes[:10]
        result.data = {"options": self.options.model_dump(), "steps": self.steps}
        return [result]

    def _knee(self) -> str | None:
        """The first step whose delivery p99 is more than twice the first step's."""
        measured = [s for s in self.steps if s.get("delivery_p99")]
        if len(measured) < 2:
            return None
        base = measured[0]["delivery_p99"]
        for step in measured[1:]:
            if step["delivery_p99"] > 2 * base:
                return (f"knee: delivery p99 {step['delivery_p99'] * 1000:.1f} ms at {step['watchers']} watchers, "
                        f"{step['delivery_p99'] / base:.1f}× the {base * 1000:.1f} ms at {measured[0]['watchers']}")
        return f"no knee up to {measured[-1]['watchers']} watchers (delivery p99 within 2× of the first step's)"


class Usage:
    """CPU and resident memory of kube-apiserver, etcd and this process over one step."""

    def __init__(self, run: RunContext) -> None:
        self.sampler = run.sampler
        self.samples: list[tuple[float, dict[str, tuple[float, int]]]] = []
        self.pids: dict[str, int] = {}
        self.own = psutil.Process()
        self.last = 0.0

    def sample(self) -> None:
        now = time.monotonic()
        self.last = now
        found: dict[str, tuple[float, int]] = {}
        times = self.own.cpu_times()
        found["client"] = (times.user + times.system, self.own.memory_info().rss)
        if self.sampler is not None:
            try:
                if not self.pids:
                    self.pids = {n: p for n, p in self.sampler.components().items() if n in MASTER}
                usage = self.sampler.sample(list(self.pids.values()))
                found.update({n: usage[p] for n, p in self.pids.items() if p in usage})
            except Exception:  # a failed sample leaves a gap, never stops the storm
                pass
        self.samples.append((now, found))

    def maybe_sample(self, every: float = 1.0) -> None:
        if time.monotonic() - self.last >= every:
            self.sample()

    def latest(self) -> dict[str, float]:
        _, found = self.samples[-1]
        return {f"{n}_rss_mib": round(rss / MIB, 1) for n, (_, rss) in found.items()}

    def summary(self) -> dict[str, float]:
        result: dict[str, float] = {}
        if len(self.samples) < 2:
            return result
        (t0, first), (t1, last) = self.samples[0], self.samples[-1]
        for name in last:
            if name in first and t1 > t0:
                result[f"{name}_cores"] = round((last[name][0] - first[name][0]) / (t1 - t0), 4)
            result[f"{name}_rss_mib"] = round(max(s[name][1] for _, s in self.samples if name in s) / MIB, 1)
        return result
