"""The Workload interface, and what the runner hands a workload: a RunContext.

A workload is a small module: an options model (checked before anything is made),
plan() (how many objects and pods it will make on a cluster of N nodes, so the run
is bounded before it starts) and run() (its phases, through the RunContext). It
never cleans up by itself: every object it makes lives in a namespace the
RunContext made and recorded, and the runner deletes those, whatever happened.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from kubemark_up.errors import RunError
from kubemark_up.run.model import RUN_LABEL, Kube, Result, Sampler, all_running
from kubemark_up.run.workloads.informer import WriteLog

if TYPE_CHECKING:
    from kubemark_up.providers.base import ClusterContext

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"


class WorkloadOptions(BaseModel):
    """Options every workload takes; a workload's own model adds its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pods_per_node: int = Field(30, ge=1, le=1000)
    # Pods (or, for phases that make no pods, objects) per second.
    rate: float = Field(10, gt=0, le=10_000)
    image: str = PAUSE_IMAGE
    # The informer logger (informer.py) on the resource the workload writes: per change,
    # the delay from the write to the notification and to the dequeue.
    informer: bool = False


@dataclass(frozen=True)
class Plan:
    """What a run will make at most: the bound checked before it starts."""

    objects: int  # every object it creates (namespaces, Deployments, their ReplicaSets and pods, ...)
    pods: int  # pods it creates
    phases: list[str]


class Pacer:
    """Releases work at a steady rate: take(n) returns when n more items may go. Keeps
    what was asked and what was achieved: the items released after the first
    release, over the time from the first release to the last (so one burst at the
    start does not pass for speed)."""

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate = rate
        self.clock, self.sleep = clock, sleep
        self._next: float | None = None
        self.first: float | None = None
        self.last: float | None = None
        self.first_batch = 0
        self.items = 0

    def take(self, n: int = 1) -> None:
        now = self.clock()
        if self._next is None or self._next < now:
            self._next = now
        if self._next > now:
            self.sleep(self._next - now)
        released = self.clock()
        if self.first is None:
            self.first, self.first_batch = released, n
        self.last = released
        self._next += n / self.rate
        self.items += n

    @property
    def achieved(self) -> float | None:
        if self.first is None or self.last is None or self.last <= self.first:
            return None
        return (self.items - self.first_batch) / (self.last - self.first)


@dataclass
class Progress:
    """What the live view shows of the workload; written by the workload's thread."""

    phase: str = "starting"
    created: int = 0
    deleted: int = 0
    target: int = 0
    phases: list[dict[str, Any]] = field(default_factory=list)


class RunContext:
    """The runner's side, as a workload sees it."""

    def __init__(self, *, kube: Kube, run_id: str, nodes: int, deadline: float,
                 make_namespace: Callable[[int], str],
                 make_cluster_object: Callable[[str, dict], dict] | None = None,
                 sampler: Sampler | None = None, cluster: ClusterContext | None = None) -> None:
        self.kube = kube
        self.run_id = run_id
        self.nodes = nodes
        self.deadline = deadline
        self._make_namespace = make_namespace
        self._make_cluster_object = make_cluster_object
        # CPU and memory of the master's components (None when the provider has no sampler).
        self.sampler = sampler
        # The cluster (its settings, folder, ports), for a workload that runs a server beside the master.
        self.cluster = cluster
        # When each write was sent, for the informer logger to match its notifications against.
        self.writes = WriteLog()
        self._namespaces: dict[int, str] = {}
        self.progress = Progress()
        self._phase_started = 0.0
        self._pacer: Pacer | None = None

    @property
    def labels(self) -> dict[str, str]:
        return {RUN_LABEL: self.run_id}

    def namespace(self, index: int = 0) -> str:
        """The run's namespace number index: made (and recorded first) on first use."""
        if index not in self._namespaces:
            self._namespaces[index] = self._make_namespace(index)
        return self._namespaces[index]

    def cluster_object(self, collection: str, body: dict) -> dict:
        """Create a cluster-scoped object (a CustomResourceDefinition) carrying the run's label,
        recorded before it is asked for, so that the runner deletes it whatever happens."""
        if self._make_cluster_object is None:
            raise RunError("this run cannot make cluster-scoped objects")
        self.check()
        body.setdefault("metadata", {}).setdefault("labels", {}).update(self.labels)
        created = self._make_cluster_object(collection, body)
        self.progress.created += 1
        return created

    def achieved(self, rate: float | None, items: int) -> None:
        """Record the current phase's achieved rate, for a workload that paces itself (no Pacer)."""
        if self.progress.phases:
            self.progress.phases[-1].update(achieved_rate=rate, items=items)

    def phase(self, name: str, *, rate: float | None = None, items: int = 0,
              paced: bool = True) -> Pacer | None:
        """Begin a phase; with a rate, the Pacer that paces it. The previous phase ends here."""
        self._end_phase()
        self.progress.phase = name
        self._phase_started = time.monotonic()
        self._pacer = Pacer(rate) if rate and paced else None
        self.progress.phases.append({"phase": name, "requested_rate": rate, "items": items})
        return self._pacer

    def _end_phase(self) -> None:
        if not self.progress.phases:
            return
        entry = self.progress.phases[-1]
        if "seconds" in entry:
            return
        entry["seconds"] = round(time.monotonic() - self._phase_started, 3)
        if self._pacer is not None:
            entry["achieved_rate"] = self._pacer.achieved
            entry["items"] = self._pacer.items

    def finish(self) -> None:
        self._end_phase()
        self.progress.phase = "done"

    def check(self) -> None:
        """Raise when the run is out of time."""
        if time.monotonic() > self.deadline:
            raise RunError(f"the run did not finish in its time (phase {self.progress.phase}); raise --timeout")

    def create(self, path: str, body: dict) -> dict:
        """Create one object at path (a collection), carrying the run's label."""
        self.check()
        metadata = body.setdefault("metadata", {})
        metadata.setdefault("labels", {}).update(self.labels)
        sent = time.time()
        created = self.kube.request("POST", path, body=body)
        self.writes.note(path.rstrip("/").rsplit("/", 1)[-1], "create", created["metadata"].get("namespace", ""),
                         created["metadata"]["name"], sent)
        self.progress.created += 1
        return created

    def delete(self, path: str) -> None:
        self.check()
        sent = time.time()
        if self.kube.request("DELETE", path, body={"propagationPolicy": "Background"}, missing_ok=True) is not None:
            parts = path.strip("/").split("/")
            namespace = parts[parts.index("namespaces") + 1] if "namespaces" in parts[:-2] else ""
            self.writes.note(parts[-2], "delete", namespace, parts[-1], sent)
        self.progress.deleted += 1

    def wait(self, what: str, done: Callable[[], bool], *, interval: float = 1.0) -> None:
        """Poll done() until it holds; bounded by the run's deadline."""
        while not done():
            self.check()
            if time.monotonic() + interval > self.deadline:
                raise RunError(f"the run ran out of time waiting for {what}; raise --timeout")
            time.sleep(interval)


class Workload(ABC):
    name: ClassVar[str]
    summary: ClassVar[str]
    options_model: ClassVar[type[WorkloadOptions]] = WorkloadOptions
    # Whether it needs Ready hollow nodes (pods do; API-machinery workloads run on a master alone).
    needs_nodes: ClassVar[bool] = True

    def __init__(self, options: WorkloadOptions) -> None:
        self.options = options

    def prepare(self, run: RunContext) -> None:
        """Before the measurements start: install what the workload needs (a CRD, recorded
        through run.cluster_object so the runner removes it)."""
        return None

    def watched(self, run: RunContext) -> str | None:
        """The collection (all namespaces) the informer logger lists and watches, with the
        run's label; None when the workload has none."""
        return None

    def results(self) -> list[Result]:
        """Figures of the workload's own (rates, per-operation latency), beside the measurements'."""
        return []

    def close(self) -> None:
        """Whatever ended the run, before the runner deletes its namespaces and cluster-scoped
        objects: delete what only the workload's own server can, and stop what prepare() started."""
        return None

    @abstractmethod
    def plan(self, nodes: int) -> Plan:
        """What a run on `nodes` Ready nodes will make."""

    @abstractmethod
    def run(self, run: RunContext) -> None:
        """Its phases, in order; returns when the last is done."""


def sizes(total: int, size: int) -> list[int]:
    """total split into groups of size (the last one smaller)."""
    count = math.ceil(total / size) if total else 0
    return [min(size, total - i * size) for i in range(count)]


def pod_template(run: RunContext, app: str, image: str, *, volumes: list[dict] | None = None,
                 env: dict[str, str] | None = None) -> dict:
    """A pause pod that starts no process on a hollow node, labelled for the run."""
    container: dict[str, Any] = {"name": "pause", "image": image, "imagePullPolicy": "IfNotPresent"}
    spec: dict[str, Any] = {"containers": [container], "terminationGracePeriodSeconds": 1}
    if volumes:
        spec["volumes"] = [v["volume"] for v in volumes]
        container["volumeMounts"] = [v["mount"] for v in volumes]
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return {"metadata": {"labels": {**run.labels, "app": app}}, "spec": spec}


def deployment(run: RunContext, name: str, replicas: int, template: dict) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {RUN_LABEL: run.run_id, "app": template["metadata"]["labels"]["app"]}},
            "template": template,
        },
    }


def settled(run: RunContext, namespaces: list[int], replicas: dict[tuple[int, str], int]) -> bool:
    """Every Deployment named in replicas ((namespace index, name) -> size) at its size,
    rolled out to its current template, all Ready, and its pods (those not being deleted)
    that many and all Running. Ready alone is not enough: a hollow kubelet (v1.36) can
    report a pod Ready while its container is still ContainerCreating. The pods are
    listed only once every Deployment says so, not on every poll of a long wait."""
    for index in namespaces:
        listing = run.kube.request("GET", f"/apis/apps/v1/namespaces/{run.namespace(index)}/deployments")
        for item in listing["items"]:
            want = replicas.get((index, item["metadata"]["name"]))
            if want is None:
                continue
            status = item.get("status") or {}
            if (status.get("observedGeneration", 0) < item["metadata"].get("generation", 0)
                    or status.get("replicas", 0) != want or status.get("updatedReplicas", 0) != want
                    or status.get("readyReplicas", 0) != want):
                return False
    for index in namespaces:
        pods = run.kube.request("GET", f"/api/v1/namespaces/{run.namespace(index)}/pods",
                                query={"labelSelector": f"{RUN_LABEL}={run.run_id}"})
        wanted = {name: want for (i, name), want in replicas.items() if i == index}
        running = dict.fromkeys(wanted, 0)
        for pod in pods["items"]:
            app = pod["metadata"].get("labels", {}).get("app", "")
            if app not in wanted or pod["metadata"].get("deletionTimestamp"):
                continue
            if not all_running(pod):
                return False
            running[app] += 1
        if running != wanted:
            return False
    return True


def pods_left(run: RunContext, namespace: str) -> bool:
    listing = run.kube.request("GET", f"/api/v1/namespaces/{namespace}/pods", query={"limit": 1})
    return bool(listing["items"])
