"""http2-baseline: the transport's ceiling, to tell the apiserver's limit from the
wire's (after k8api-scaletest's go_httperf).

A small HTTP/2 TLS server (h2server.py, a child process of the run that ends by
itself, on this machine's loopback beside its clients: the transport of the machine
the run is on, which is the master's host for a `local` cluster) streams blocks of
`size` bytes every `period` seconds, `blocks` of them, to each of `threads` client
threads, which share `connections` HTTP/2 connections (httpx; thread i on
connection i mod C). Its certificate comes from a CA made for the run (pki.py), in
a private folder removed afterwards. Reported: the requested rate (threads × size
/ period), the rate the server sent at and the rate the clients received at (the
bytes after each stream's first block, over the time from the first block to the
last), the bytes each side counted (equal when nothing was lost), and per block
the delay from its due moment (its index times the period after the stream's
best-placed block) to its arrival: the jitter the transport adds.

It makes no Kubernetes object and involves no master: only this machine.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from pydantic import Field, model_validator

from kubemark_up.errors import RunError
from kubemark_up.pki import PKI, Identity
from kubemark_up.run.model import Metric, Result, percentile
from kubemark_up.run.workloads.base import Plan, RunContext, Workload, WorkloadOptions

MIB = 1024 * 1024
ADDRESS = "127.0.0.1"
START_TIMEOUT = 30.0


class HTTP2Options(WorkloadOptions):
    size: int = Field(16_384, ge=1, le=16 * MIB)  # bytes per block
    period: float = Field(0.01, ge=0, le=60)  # seconds between a stream's blocks (0: as fast as the wire goes)
    blocks: int = Field(500, ge=1, le=1_000_000)  # blocks per stream
    threads: int = Field(8, ge=1, le=1_000)  # client threads, one stream each
    connections: int = Field(2, ge=1, le=1_000)  # HTTP/2 connections the threads share

    @model_validator(mode="after")
    def _bounded(self) -> HTTP2Options:
        if self.connections > self.threads:
            raise ValueError(f"connections ({self.connections}) must not be more than threads ({self.threads})")
        if self.period * self.blocks > 3_600:
            raise ValueError("period × blocks is more than an hour per stream")
        return self


class Stream:
    def __init__(self) -> None:
        self.bytes = 0
        self.first: float | None = None
        self.last: float | None = None
        self.started = 0.0
        self.arrivals: list[float] = []  # when each whole block had arrived
        self.version = ""
        self.error: str | None = None


class HTTP2Baseline(Workload):
    name = "http2-baseline"
    summary = "an HTTP/2 TLS server on the master's host streams blocks to T threads over C connections: send and receive rates"
    options_model = HTTP2Options
    options: HTTP2Options
    needs_nodes = False

    def __init__(self, options: HTTP2Options) -> None:
        super().__init__(options)
        self.streams: list[Stream] = []
        self.server_streams: list[dict] = []
        self.notes: list[str] = []

    def plan(self, nodes: int) -> Plan:
        return Plan(objects=0, pods=0, phases=["stream"])

    def run(self, run: RunContext) -> None:
        options = self.options
        folder = Path(tempfile.mkdtemp(prefix="kubemark-up-h2-"))  # 0700
        server: subprocess.Popen | None = None
        try:
            pki = PKI(folder)
            pki.ensure_ca("ca", "kubemark-up http2-baseline")
            pki.issue(Identity(stem="server", common_name=ADDRESS, client=False, server=True,
                               ip_addresses=(ADDRESS,), ca="ca"))
            lifetime = min(options.period * options.blocks + 120, max(1.0, run.deadline - time.monotonic()))
            server = subprocess.Popen(
                [sys.executable, "-m", "kubemark_up.run.workloads.h2server", "--cert", str(pki.cert_path("server")),
                 "--key", str(pki.key_path("server")), "--host", ADDRESS, "--lifetime", f"{lifetime:.0f}"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            port = _port(server)
            context = ssl.create_default_context(cafile=str(pki.cert_path("ca")))
            requested = options.threads * options.size / options.period if options.period else None
            run.phase("stream", rate=requested and requested / MIB, items=options.threads * options.blocks, paced=False)
            self._stream(run, context, f"https://{ADDRESS}:{port}")
            with httpx.Client(http2=True, verify=context, timeout=30) as client:
                self.server_streams = client.get(f"https://{ADDRESS}:{port}/stats").json()["streams"]
            received = _rate([(s.first, s.last, s.bytes, options.size) for s in self.streams if s.first])
            run.achieved(received and received / MIB, sum(s.bytes for s in self.streams) // options.size)
            run.finish()
        finally:
            if server is not None:
                server.terminate()
                try:
                    server.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait(timeout=10)
            shutil.rmtree(folder, ignore_errors=True)

    def _stream(self, run: RunContext, context: ssl.SSLContext, base: str) -> None:
        options = self.options
        url = f"{base}/blocks?size={options.size}&period={options.period}&count={options.blocks}"
        timeout = httpx.Timeout(30, read=max(30.0, options.period * 4 + 30))
        clients = [httpx.Client(http2=True, verify=context, timeout=timeout) for _ in range(options.connections)]
        self.streams = [Stream() for _ in range(options.threads)]

        def reader(index: int) -> None:
            stream = self.streams[index]
            stream.started = time.time()
            try:
                with clients[index % len(clients)].stream("GET", url) as response:
                    stream.version = response.http_version
                    if response.status_code != 200:
                        stream.error = f"status {response.status_code}"
                        return
                    whole = options.size
                    for chunk in response.iter_raw():
                        now = time.time()
                        stream.first = stream.first or now
                        stream.last = now
                        stream.bytes += len(chunk)
                        while stream.bytes >= whole:
                            stream.arrivals.append(now)
                            whole += options.size
            except httpx.HTTPError as exc:
                stream.error = f"{type(exc).__name__}: {exc}"

        threads = [threading.Thread(target=reader, args=(i,), name=f"h2-client-{i}", daemon=True)
                   for i in range(options.threads)]
        try:
            for thread in threads:
                thread.start()
            deadline = min(run.deadline, time.monotonic() + options.period * options.blocks + 120)
            for thread in threads:
                while thread.is_alive() and time.monotonic() < deadline:
                    thread.join(0.2)
            if any(t.is_alive() for t in threads):
                raise RunError("http2-baseline: the streams did not end in their time")
        finally:
            for client in clients:
                client.close()
        errors = [s.error for s in self.streams if s.error]
        if errors:
            self.notes.append(f"{len(errors)} stream(s) failed: {errors[0]}")
        versions = {s.version for s in self.streams if s.version}
        if versions - {"HTTP/2"}:
            self.notes.append(f"not every stream was HTTP/2: {sorted(versions)}")

    def results(self) -> list[Result]:
        options = self.options
        result = Result("http2_baseline", "HTTP/2 transport baseline (loopback, TLS)")
        requested = options.threads * options.size / options.period if options.period else None
        sent = _rate([(s.get("first"), s.get("last"), s["bytes"], options.size) for s in self.server_streams
                      if s.get("first")])
        received = _rate([(s.first, s.last, s.bytes, options.size) for s in self.streams if s.first])
        result.metrics["requested_rate"] = Metric(requested and requested / MIB, "MiB/s", better="none")
        result.metrics["send_rate"] = Metric(sent and sent / MIB, "MiB/s", better="higher")
        result.metrics["receive_rate"] = Metric(received and received / MIB, "MiB/s", better="higher")
        result.metrics["bytes_sent"] = Metric(sum(s["bytes"] for s in self.server_streams), "", better="none")
        result.metrics["bytes_received"] = Metric(sum(s.bytes for s in self.streams), "", better="none")
        result.metrics["streams"] = Metric(len(self.streams), "", better="none")
        result.metrics["connections"] = Metric(options.connections, "", better="none")
        # Each block's delay: when it had all arrived, against when it was due: its index
        # times the period after the stream's best-placed block (so the delays are >= 0).
        delays = []
        for s in self.streams:
            if s.arrivals:
                base = min(arrived - i * options.period for i, arrived in enumerate(s.arrivals))
                delays += [arrived - (base + i * options.period) for i, arrived in enumerate(s.arrivals)]
        for q in (50, 99):
            result.metrics[f"block_delay_p{q}"] = Metric(percentile(delays, q), "s")
        result.metrics["block_delay_max"] = Metric(max(delays) if delays else None, "s")
        late = max((s.get("late_max", 0.0) for s in self.server_streams), default=0.0)
        result.metrics["server_late_max"] = Metric(late, "s")
        result.notes += self.notes
        result.data = {"options": options.model_dump(), "address": ADDRESS,
                       "server_streams": self.server_streams,
                       "client_streams": [{"bytes": s.bytes, "first": s.first, "last": s.last, "version": s.version,
                                           "error": s.error} for s in self.streams]}
        return [result]


def _rate(streams: list[tuple[Any, Any, int, int]]) -> float | None:
    """Bytes per second over all streams: what came after each stream's first block, over
    the time from the earliest first block to the latest last one."""
    if not streams:
        return None
    first, last = min(s[0] for s in streams), max(s[1] for s in streams)
    after_first = sum(max(0, s[2] - s[3]) for s in streams)
    return after_first / (last - first) if last > first else None


def _port(server: subprocess.Popen) -> int:
    """The port the server printed, waiting at most START_TIMEOUT."""
    found: dict[str, Any] = {}

    def read() -> None:
        assert server.stdout is not None
        line = server.stdout.readline()
        try:
            found.update(json.loads(line))
        except ValueError:
            found["line"] = line

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(START_TIMEOUT)
    if "port" not in found:
        server.kill()
        _, stderr = server.communicate(timeout=10)
        raise RunError(f"the http2-baseline server did not start: {(stderr or found.get('line') or '').strip()[-300:]}")
    return int(found["port"])
