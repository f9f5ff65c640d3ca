"""CPU and memory of the master's components (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler) every few seconds, read on the host that
runs them (the provider's Host: psutil here, /proc over SSH there). Also the cost
of this measuring itself on the apiserver: the time it spent answering our
/metrics scrapes (an upper bound of its CPU for them), as a share of its CPU time
over the run (goal: at most 2 %)."""

from __future__ import annotations

import threading
import time

from kubemark_up.run.measurements.base import MeasureContext, Measurement
from kubemark_up.run.model import Metric, Result

MIB = 1024 * 1024


class Resources(Measurement):
    name = "resources"
    title = "Master CPU and memory"

    def __init__(self, ctx: MeasureContext) -> None:
        super().__init__(ctx)
        self.samples: list[dict] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pids: dict[str, int] = {}
        self._last: dict[str, tuple[float, float]] = {}  # component -> (time, cpu seconds)
        self.sample_seconds: list[float] = []
        self.scrape_cpu: float | None = None  # apiserver CPU seconds per /metrics scrape

    def start(self) -> None:
        if self.ctx.sampler is None:
            return
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="resources", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(min(self.ctx.interval, 5.0)):
            self._sample()

    def _sample(self) -> None:
        sampler = self.ctx.sampler
        assert sampler is not None
        started = time.monotonic()
        try:
            if not self._pids:
                self._pids = sampler.components()
            usage = sampler.sample(list(self._pids.values()))
            if len(usage) < len(self._pids):  # a component restarted: find its new pid
                self._pids = sampler.components()
                usage = sampler.sample(list(self._pids.values()))
        except Exception as exc:  # a sampler is the provider's; a failed sample is noted, not fatal
            self.errors.append(f"sampling on {sampler.where} failed: {type(exc).__name__}: {exc}")
            return
        self.sample_seconds.append(time.monotonic() - started)
        now = time.time()
        entry: dict = {"t": now, "components": {}}
        for component, pid in self._pids.items():
            if pid not in usage:
                continue
            cpu, rss = usage[pid]
            previous = self._last.get(component)
            rate = (cpu - previous[1]) / (now - previous[0]) if previous and now > previous[0] else None
            self._last[component] = (now, cpu)
            entry["components"][component] = {"cpu_seconds": cpu, "cores": rate, "rss_mib": rss / MIB}
        self.samples.append(entry)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._sample()
            self._calibrate()

    def _calibrate(self, scrapes: int = 3) -> None:
        """The apiserver's CPU for one /metrics scrape: its CPU over a few scrapes back
        to back, less its CPU over as long a time left alone, once the workload is done."""
        sampler, pid = self.ctx.sampler, self._pids.get("kube-apiserver")
        if sampler is None or pid is None:
            return
        try:
            def cpu() -> float:
                return sampler.sample([pid])[pid][0]

            before, started = cpu(), time.monotonic()
            for _ in range(scrapes):
                self.ctx.kube.text("/metrics", timeout=30)
            busy, took = cpu() - before, time.monotonic() - started
            before = cpu()
            time.sleep(took)
            idle = cpu() - before
        except Exception as exc:  # the calibration is a figure of its own; a failed one is noted
            self.errors.append(f"could not measure the cost of a scrape: {type(exc).__name__}: {exc}")
            return
        self.scrape_cpu = max(0.0, (busy - idle) / scrapes)

    def result(self) -> Result:
        result = Result(self.name, self.title)
        result.notes += self.errors[:5]
        if self.ctx.sampler is None:
            result.notes.append("no sampler for this provider's master")
            return result
        if len(self.samples) < 2:
            result.notes.append("fewer than two samples")
            return result
        t0, t1 = self.samples[0]["t"], self.samples[-1]["t"]
        components = sorted({c for s in self.samples for c in s["components"]})
        cpu_used: dict[str, float] = {}
        for component in components:
            seen = [s["components"][component] for s in self.samples if component in s["components"]]
            cores = [s["cores"] for s in seen if s["cores"] is not None]
            used = seen[-1]["cpu_seconds"] - seen[0]["cpu_seconds"]
            cpu_used[component] = used
            result.metrics[f"{component}_cpu_avg"] = Metric(used / (t1 - t0) if t1 > t0 else None, "cores")
            result.metrics[f"{component}_cpu_max"] = Metric(max(cores) if cores else None, "cores")
            result.metrics[f"{component}_rss_max"] = Metric(max(s["rss_mib"] for s in seen), "MiB")
        series = [{"t": round(s["t"] - t0, 3), **{c: v for c, v in s["components"].items()}} for s in self.samples]
        result.data = {"where": self.ctx.sampler.where, "samples": series,
                       "sample_seconds": self.sample_seconds, "cpu_seconds": cpu_used}
        scrape = self.ctx.scrape_seconds
        apiserver = cpu_used.get("kube-apiserver")
        if scrape is not None and self.scrape_cpu is not None:
            scrapes = len(scrape())
            result.metrics["overhead_scrape_cpu_seconds"] = Metric(self.scrape_cpu, "s")
            result.data["scrapes"] = scrapes
            if apiserver:
                share = 100 * self.scrape_cpu * scrapes / apiserver
                result.metrics["overhead_apiserver_cpu_share"] = Metric(share, "%")
                if share > 2:
                    result.notes.append(f"the measurement's scrapes took {share:.1f}% of the apiserver's CPU "
                                        "(goal 2%): raise --interval")
        return result
