"""The informer logger: what a controller would see of a run's writes.

An informer (one LIST, then watches from its resourceVersion, each window ended by
the server after `window` seconds and resumed from the last version seen, bookmarks
on) on the collection a workload writes, filtered by the run's label, hands every
notification to a work queue; one worker takes them off. For each change it records
the moment the notification arrived and the moment it was dequeued, and matches it
to the write that caused it (the WriteLog: when each create, update and delete was
sent, by object), so that per change the delay from the write to the notification
and to the dequeue is known. The queue is a plain FIFO (no key de-duplication as
client-go's has), so every change is dequeued once and the counts add up: matched
notifications equal the changes the workload made, unless a watch broke and a
relist had to fill the gap (counted, and those changes marked).

Matching happens at the end, so a notification that arrives before its write's
response (it can) still finds its write.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import defaultdict
from dataclasses import dataclass

from kubemark_up.errors import RunError
from kubemark_up.run.model import Kube, Metric, Result, percentile

OPS = {"ADDED": "create", "MODIFIED": "update", "DELETED": "delete"}


class WriteLog:
    """When each write of a run was sent, by resource (its plural: configmaps) and
    (operation, namespace, name); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sent: dict[str, dict[tuple[str, str, str], list[float]]] = defaultdict(lambda: defaultdict(list))
        self._counts: dict[str, int] = defaultdict(int)

    def note(self, resource: str, op: str, namespace: str, name: str, sent: float) -> None:
        with self._lock:
            self._sent[resource][(op, namespace, name)].append(sent)
            self._counts[resource] += 1

    def count(self, resource: str) -> int:
        with self._lock:
            return self._counts[resource]

    def snapshot(self, resource: str) -> dict[tuple[str, str, str], list[float]]:
        with self._lock:
            return {k: sorted(v) for k, v in self._sent[resource].items()}


@dataclass
class Notification:
    op: str  # create, update, delete
    namespace: str
    name: str
    resource_version: str
    notified: float  # wall clock, when the event was read off the watch
    relist: bool = False  # made up from a relist's difference, not seen on a watch
    dequeued: float | None = None


class InformerLogger:
    def __init__(self, kube: Kube, collection: str, selector: str, writes: WriteLog, *, window: int = 5) -> None:
        self.kube = kube
        self.collection = collection
        self.resource = collection.rstrip("/").rsplit("/", 1)[-1]  # the plural its writes are noted under
        self.selector = selector
        self.writes = writes
        self.window = window
        self.notifications: list[Notification] = []
        self.relists = 0
        self.windows = 0
        self.errors: list[str] = []
        self._known: dict[tuple[str, str], str] = {}  # (namespace, name) -> resourceVersion
        self._version = ""
        self._queue: queue.Queue[Notification] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # The informer -------------------------------------------------------------

    def start(self) -> None:
        self._list()
        for target, name in ((self._watch_loop, "informer-watch"), (self._work_loop, "informer-queue")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _list(self) -> None:
        """LIST, and (after the first) tell the handlers what changed while no watch was open."""
        listing = self.kube.request("GET", self.collection, query={"labelSelector": self.selector})
        self._version = listing["metadata"]["resourceVersion"]
        seen = {}
        now = time.time()
        for item in listing["items"]:
            meta = item["metadata"]
            key = (meta.get("namespace", ""), meta["name"])
            seen[key] = meta["resourceVersion"]
            if self._threads and self._known.get(key) != meta["resourceVersion"]:
                op = "create" if key not in self._known else "update"
                self._notify(Notification(op, key[0], key[1], meta["resourceVersion"], now, relist=True))
        if self._threads:
            for key in self._known.keys() - seen.keys():
                self._notify(Notification("delete", key[0], key[1], self._known[key], now, relist=True))
        self._known = seen

    def _watch_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.windows += 1
                for event in self.kube.watch(self.collection, window=self.window,
                                             query={"labelSelector": self.selector, "resourceVersion": self._version}):
                    notified = time.time()
                    kind, obj = event.get("type"), event.get("object") or {}
                    meta = obj.get("metadata") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:  # too old: the informer relists
                            self.relists += 1
                            self._list()
                        else:
                            self.errors.append(f"watch error: {obj.get('message')}")
                        break
                    self._version = meta.get("resourceVersion", self._version)
                    if kind not in OPS:
                        continue  # BOOKMARK: only the version moves on
                    key = (meta.get("namespace", ""), meta["name"])
                    if kind == "DELETED":
                        self._known.pop(key, None)
                    else:
                        self._known[key] = meta["resourceVersion"]
                    self._notify(Notification(OPS[kind], key[0], key[1], meta["resourceVersion"], notified))
                    if self._stop.is_set():
                        break
            except RunError as exc:
                self.errors.append(exc.message)
                if self._stop.wait(1):
                    return
                try:
                    self.relists += 1
                    self._list()
                except RunError as again:
                    self.errors.append(again.message)

    def _notify(self, notification: Notification) -> None:
        self.notifications.append(notification)
        self._queue.put(notification)

    def _work_loop(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            item.dequeued = time.time()

    # The end ------------------------------------------------------------------

    def settle(self, timeout: float = 30.0) -> None:
        """Wait (at most timeout) until every write made has been notified and dequeued."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.notifications) >= self.writes.count(self.resource) and self._queue.empty() \
                    and all(n.dequeued for n in self.notifications[-50:]):
                return
            time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.window + 20)

    def result(self) -> Result:
        result = Result("informer", "Informer logger: write to notification and to dequeue")
        sent = self.writes.snapshot(self.resource)
        used: dict[tuple[str, str, str], int] = defaultdict(int)
        notify: dict[str, list[float]] = defaultdict(list)
        dequeue: dict[str, list[float]] = defaultdict(list)
        unmatched = 0
        changes = []
        for n in self.notifications:
            key = (n.op, n.namespace, n.name)
            times = sent.get(key, [])
            if used[key] >= len(times):
                unmatched += 1  # a change the workload did not make (a controller's, a status update)
                continue
            written = times[used[key]]
            used[key] += 1
            for bucket in (n.op, "all"):
                notify[bucket].append(n.notified - written)
                if n.dequeued is not None:
                    dequeue[bucket].append(n.dequeued - written)
            changes.append({"op": n.op, "namespace": n.namespace, "name": n.name, "rv": n.resource_version,
                            "written": written, "notified": n.notified, "dequeued": n.dequeued, "relist": n.relist})
        made = sum(len(v) for v in sent.values())
        matched = sum(used.values())
        result.metrics["changes_made"] = Metric(made, "", better="none")
        result.metrics["notifications"] = Metric(matched, "", better="none")
        result.metrics["dequeued"] = Metric(len(dequeue["all"]), "", better="none")
        result.metrics["missed"] = Metric(made - matched, "")
        result.metrics["other_notifications"] = Metric(unmatched, "", better="none")
        result.metrics["relists"] = Metric(self.relists, "")
        for label, values in (("notify", notify["all"]), ("dequeue", dequeue["all"])):
            for q in (50, 90, 99):
                result.metrics[f"{label}_p{q}"] = Metric(percentile(values, q), "s")
            result.metrics[f"{label}_max"] = Metric(max(values) if values else None, "s")
        for op in ("create", "update", "delete"):
            if notify[op]:
                result.metrics[f"notify_{op}_p99"] = Metric(percentile(notify[op], 99), "s")
        if made > matched:
            result.notes.append(f"{made - matched} of {made} changes were never notified")
        relisted = sum(1 for c in changes if c["relist"])
        if relisted:
            result.notes.append(f"{relisted} change(s) came from a relist, not a watch event (their delay is the relist's)")
        result.notes += self.errors[:5]
        result.data = {"collection": self.collection, "selector": self.selector, "window_seconds": self.window,
                       "watch_windows": self.windows, "queue": "FIFO, one worker, no de-duplication",
                       "changes": changes}
        return result
