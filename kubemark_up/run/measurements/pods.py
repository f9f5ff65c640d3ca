"""One watch of the run's pods (all namespaces, the run's label), in a thread: for
each pod the wall-clock moments this watch first saw it, saw it bound to a node,
and saw all its containers running, with the apiserver's own timestamps beside
them. Pod startup and scheduling throughput are computed from these records,
never from Events.

creationTimestamp carries whole seconds only, so a pod's creation is the moment
its ADDED event arrived (a pod first met in a relist after a broken watch keeps
its creationTimestamp and is marked so)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from dataclasses import asdict, dataclass

from kubemark_up.errors import RunError
from kubemark_up.run.model import RUN_LABEL, Kube, all_running

WINDOW = 10  # seconds per watch request: stop() waits at most this long


@dataclass
class PodRecord:
    uid: str
    name: str
    namespace: str
    created: float  # when the watch saw it ADDED (or its creationTimestamp, see exact)
    exact: bool  # created is the watch's own moment, not the whole-second creationTimestamp
    created_api: float | None = None
    node: str | None = None
    scheduled: float | None = None  # first seen with spec.nodeName
    scheduled_api: float | None = None  # the PodScheduled condition's lastTransitionTime
    running: float | None = None  # first seen Running with every container running
    started_api: float | None = None  # the latest container startedAt
    deleted: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _time(value: str | None) -> float | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class PodWatch:
    def __init__(self, kube: Kube, run_id: str) -> None:
        self.kube = kube
        self.selector = f"{RUN_LABEL}={run_id}"
        self.pods: dict[str, PodRecord] = {}
        self.lock = threading.Lock()
        self.errors: list[str] = []
        self.relists = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._version: str | None = None
        self._users = 0
        self.synced = threading.Event()

    def start(self) -> None:
        """Start (once, for every measurement that uses it): lists first, so the run's first pod is seen ADDED."""
        self._users += 1
        if self._thread is not None:
            return
        self._relist(initial=True)
        self._thread = threading.Thread(target=self._loop, name="pod-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._users -= 1
        if self._users > 0 or self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=WINDOW + 5)

    def settle(self, timeout: float = 15, quiet: float = 3) -> None:
        """Give the watch time to deliver what has happened up to now: until every pod
        it knows is seen deleted (the workloads delete all they made), or nothing new
        came for `quiet` seconds, at most `timeout`."""
        deadline = time.monotonic() + timeout
        last, since = None, time.monotonic()
        while time.monotonic() < deadline:
            with self.lock:
                if self.pods and all(p.deleted for p in self.pods.values()):
                    return
                seen = sum(1 for p in self.pods.values() for t in (p.scheduled, p.running, p.deleted) if t)
                count = (len(self.pods), seen)
            if count != last:
                last, since = count, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.2)

    def _relist(self, *, initial: bool = False) -> None:
        listing = self.kube.request("GET", "/api/v1/pods", query={"labelSelector": self.selector})
        self._version = listing["metadata"]["resourceVersion"]
        self.relists += 0 if initial else 1
        for pod in listing["items"]:
            self._observe("ADDED", pod, exact=False)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self._version is None:
                    self._relist()
                for event in self.kube.watch("/api/v1/pods", query={
                    "labelSelector": self.selector, "resourceVersion": self._version,
                }, window=WINDOW):
                    kind = event.get("type")
                    obj = event.get("object") or {}
                    if kind == "ERROR":  # 410 Gone: the history moved on; list again
                        self._version = None
                        break
                    self._version = (obj.get("metadata") or {}).get("resourceVersion", self._version)
                    if kind != "BOOKMARK":
                        self._observe(str(kind), obj, exact=True)
                    if self._stop.is_set():
                        break
            except RunError as exc:
                self.errors.append(exc.message)
                self._version = None
                self._stop.wait(1)

    def _observe(self, kind: str, pod: dict, *, exact: bool) -> None:
        now = time.time()
        meta = pod.get("metadata") or {}
        uid = meta.get("uid")
        if not uid:
            return
        with self.lock:
            record = self.pods.get(uid)
            if record is None:
                created_api = _time(meta.get("creationTimestamp"))
                exact = exact and kind == "ADDED"
                record = PodRecord(uid=uid, name=meta.get("name", ""), namespace=meta.get("namespace", ""),
                                   created=now if exact or created_api is None else created_api, exact=exact,
                                   created_api=created_api)
                self.pods[uid] = record
            if kind == "DELETED":
                record.deleted = record.deleted or now
                return
            node = (pod.get("spec") or {}).get("nodeName")
            if node and record.scheduled is None:
                record.node, record.scheduled = node, now
                for condition in (pod.get("status") or {}).get("conditions") or []:
                    if condition.get("type") == "PodScheduled" and condition.get("status") == "True":
                        record.scheduled_api = _time(condition.get("lastTransitionTime"))
            if record.running is None and all_running(pod):
                record.running = now
                starts = [_time(((s.get("state") or {}).get("running") or {}).get("startedAt"))
                          for s in (pod.get("status") or {}).get("containerStatuses") or []]
                known = [s for s in starts if s is not None]
                record.started_api = max(known) if known else None

    def records(self) -> list[PodRecord]:
        with self.lock:
            return sorted(self.pods.values(), key=lambda p: p.created)
