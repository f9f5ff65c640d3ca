"""The run's model, at the bottom of run/: what workloads and measurements both use.

What a run produces: a Result per measurement (Metrics, SLOs, raw data), the
nearest-rank percentile they are computed with, and the Sampler that reads the
master's CPU and memory. What a run reads: RUN_LABEL (on every object a run makes,
so it finds and deletes only its own), all_running (the end of a pod's startup),
and Kube, a small JSON client of the master.

Kube takes any path, raw JSON in and out, watches as a stream of events. The
kubeconfig is read by the Kubernetes client library, the requests go through its
urllib3 pool (thread-safe, the client certificate already in it); skipping its
model classes keeps thousands of pods cheap to read. Errors become RunError at this
edge, with the call and the apiserver's message."""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlencode

import urllib3

from kubemark_up.errors import RunError

RUN_LABEL = "kubemark-up.run"  # on every object a run makes, and on its pods


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
    """What one measurement (or a workload's own figures) found: named metrics (for the
    summary, compare and the HTML report), SLOs each with its threshold and the value
    that met or broke it, and the raw series they came from (per pod, per window, per
    sample), so that a result file stands on its own."""

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


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100) of values, by the nearest-rank method clusterloader2 uses."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n*q/100), at least 1
    return ordered[int(rank) - 1]


@dataclass
class Sampler:
    """How CPU and memory of the master's processes are read: pid -> (CPU seconds,
    resident bytes), from the host that runs them (the provider's Host)."""

    sample: Callable[[list[int]], dict[int, tuple[float, int]]]
    components: Callable[[], dict[str, int]]  # component name -> its current pid
    where: str


def all_running(pod: dict) -> bool:
    """Phase Running with every container running: the end of a pod's startup."""
    status = pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    wanted = len((pod.get("spec") or {}).get("containers") or [])
    return (status.get("phase") == "Running" and len(statuses) >= wanted
            and all("running" in (s.get("state") or {}) for s in statuses))


# The client ----------------------------------------------------------------------

_NETWORK = (urllib3.exceptions.HTTPError, OSError)
POOL_SIZE = 64


class Kube:
    def __init__(self, kubeconfig: Path, *, timeout: float = 30) -> None:
        # Here, not at the top: reading and comparing results needs no Kubernetes client.
        from kubernetes import client as kube_client
        from kubernetes import config as kube_config

        configuration = kube_client.Configuration()
        kube_config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        # Connections kept for reuse: enough for a churn's pool of threads (the default, 5 per
        # CPU, would make a new TLS connection for most calls beyond it).
        configuration.connection_pool_maxsize = POOL_SIZE
        api = kube_client.ApiClient(configuration)
        self.configuration = api.configuration  # for clients of other libraries (ssl_context)
        self.host = api.configuration.host.rstrip("/")
        self.pool = api.rest_client.pool_manager
        self.timeout = timeout
        self.headers: dict[str, str] = {}
        token = api.configuration.api_key.get("authorization") if api.configuration.api_key else None
        if token:
            self.headers["Authorization"] = token if " " in token else f"Bearer {token}"

    def ssl_context(self) -> ssl.SSLContext:
        """A TLS context that trusts the master's CA and presents the kubeconfig's client
        certificate: for clients other than this one (the watch storm's)."""
        cfg = self.configuration
        context = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
        if cfg.cert_file and cfg.key_file:
            context.load_cert_chain(cfg.cert_file, cfg.key_file)
        return context

    def url(self, path: str, query: Mapping[str, Any] | None = None) -> str:
        return self._url(path, query)

    def _url(self, path: str, query: Mapping[str, Any] | None) -> str:
        url = self.host + quote(path, safe="/:")
        if query:
            url += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        return url

    def request(self, method: str, path: str, *, body: Any = None, query: Mapping[str, Any] | None = None,
                missing_ok: bool = False, content_type: str = "application/json",
                timeout: float | None = None) -> Any:
        """One call; its JSON answer (None for a 404 when missing_ok)."""
        headers = {**self.headers, "Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body).encode()
        try:
            response = self.pool.request(method, self._url(path, query), body=data, headers=headers,
                                         timeout=timeout or self.timeout, retries=False)
        except _NETWORK as exc:
            raise RunError(f"{method} {path}: the apiserver did not answer ({type(exc).__name__})") from None
        if response.status == 404 and missing_ok:
            return None
        if not 200 <= response.status < 300:
            raise RunError(f"{method} {path}: {response.status} {_message(response.data)}")
        return json.loads(response.data) if response.data else None

    def text(self, path: str, *, timeout: float | None = None) -> str:
        """A plain-text GET (/metrics)."""
        try:
            response = self.pool.request("GET", self._url(path, None), headers={**self.headers, "Accept": "text/plain"},
                                         timeout=timeout or self.timeout, retries=False)
        except _NETWORK as exc:
            raise RunError(f"GET {path}: the apiserver did not answer ({type(exc).__name__})") from None
        if response.status != 200:
            raise RunError(f"GET {path}: {response.status} {_message(response.data)}")
        return response.data.decode()

    def watch(self, path: str, *, query: Mapping[str, Any], window: int) -> Iterator[dict]:
        """The events of one watch window (the server ends it after `window` seconds)."""
        query = {**query, "watch": "true", "timeoutSeconds": window, "allowWatchBookmarks": "true"}
        try:
            response = self.pool.request("GET", self._url(path, query), headers=self.headers, preload_content=False,
                                         timeout=urllib3.Timeout(connect=self.timeout, read=window + 15), retries=False)
        except _NETWORK as exc:
            raise RunError(f"watch {path}: the apiserver did not answer ({type(exc).__name__})") from None
        try:
            if response.status != 200:
                raise RunError(f"watch {path}: {response.status} {_message(response.read())}")
            buffer = b""
            for chunk in response.stream(64 * 1024):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        except _NETWORK as exc:
            raise RunError(f"watch {path}: broken ({type(exc).__name__})") from None
        finally:
            response.release_conn()


def _message(data: bytes) -> str:
    """The apiserver's own words, from its Status object when it sent one."""
    try:
        return str(json.loads(data).get("message", "")) or data[:200].decode(errors="replace")
    except (ValueError, AttributeError):
        return data[:200].decode(errors="replace")
