"""What one real node sends its master, counted: the audit log of a RealNode's master
(every request of its kubelet, kube-proxy and node-problem-detector), its sockets,
and a pod watch's receipt times, turned into the rows of the fidelity reference
(kubemark_up/run/fidelity/reference.yaml). The counting is pure (unit-tested); the
live part drives a RealNode (tests/support/realnode.py).

Counting rules (those of kubemark_up/run/fidelity/analysis.py): a WATCH counts when it
was opened (its ResponseStarted stage), any other request when it completed; a
request is in a window when the apiserver received it inside it.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from kubemark_up import pki

VERBS = {"get": "GET", "list": "LIST", "watch": "WATCH", "create": "POST", "update": "PUT", "patch": "PATCH",
         "delete": "DELETE", "deletecollection": "DELETECOLLECTION"}
# client-go's reflector asks each watch for U[300, 600) s (minWatchTimeout), so an open
# watch is re-opened once per 7.5 minutes on average.
WATCH_REOPEN_PER_MINUTE = round(1 / 7.5, 4)

Key = tuple[str, str, str, str]  # component, verb, resource (group/resource), subresource


def component_of(user: str) -> str | None:
    if user.startswith("system:node:"):
        return "kubelet"
    if user == "system:kube-proxy":
        return "kube-proxy"
    if user == pki.NPD_USER:
        return "node-problem-detector"
    return None


@dataclass(frozen=True)
class Request:
    audit_id: str
    component: str
    verb: str
    resource: str
    subresource: str
    namespace: str
    stage: str
    received: dt.datetime
    finished: dt.datetime

    @property
    def key(self) -> Key:
        return (self.component, self.verb, self.resource, self.subresource)


def _when(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def parse(lines: Iterable[str]) -> list[Request]:
    """The node components' audit events (one JSON object a line; others and torn lines skipped)."""
    found = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        component = component_of((event.get("user") or {}).get("username", ""))
        if component is None or event.get("stage") not in ("ResponseStarted", "ResponseComplete", "Panic"):
            continue
        ref = event.get("objectRef") or {}
        group, resource = ref.get("apiGroup", ""), ref.get("resource", "")
        found.append(Request(
            audit_id=event["auditID"], component=component,
            verb=VERBS.get(event.get("verb", ""), event.get("verb", "").upper()),
            resource=f"{group}/{resource}" if group else resource, subresource=ref.get("subresource", ""),
            namespace=ref.get("namespace", ""), stage=event["stage"],
            received=_when(event["requestReceivedTimestamp"]), finished=_when(event["stageTimestamp"]),
        ))
    return found


def _counted(request: Request) -> bool:
    """The one event of a request that counts it: a watch's opening, another request's end."""
    return request.stage == "ResponseStarted" if request.verb == "WATCH" else request.stage != "ResponseStarted"


def count(requests: Iterable[Request], start: dt.datetime, end: dt.datetime, *,
          namespace: str | None = None) -> Counter[Key]:
    """Requests per bucket received in [start, end), only those in namespace if given."""
    return Counter(r.key for r in requests if _counted(r) and start <= r.received < end
                   and (namespace is None or r.namespace == namespace))


def open_watches(requests: Iterable[Request], at: dt.datetime) -> Counter[tuple[str, str]]:
    """Watches open at `at`, per (component, resource): opened by then, not ended by then."""
    opened: dict[str, tuple[str, str]] = {}
    ended: set[str] = set()
    for r in requests:
        if r.verb != "WATCH":
            continue
        if r.stage == "ResponseStarted" and r.received <= at:
            opened[r.audit_id] = (r.component, r.resource)
        elif r.stage != "ResponseStarted" and r.finished <= at:
            ended.add(r.audit_id)
    return Counter(w for audit_id, w in opened.items() if audit_id not in ended)


# Connections ---------------------------------------------------------------------

_SS = re.compile(r"^\S+\s+\S+\s+(?P<local>\S+)\s+(?P<peer>\S+)(?:\s+users:\(\(\"[^\"]*\",pid=(?P<pid>\d+))?")


def parse_ss(text: str) -> list[tuple[str, str, int | None]]:
    """`ss -tnpH state established` lines: (local address:port, peer address:port, pid)."""
    rows = []
    for line in text.splitlines():
        match = _SS.match(line.strip())
        if match:
            rows.append((match["local"], match["peer"], int(match["pid"]) if match["pid"] else None))
    return rows


def connections(rows: list[tuple[str, str, int | None]], server: str, components: dict[int, str],
                peers: dict[str, str]) -> Counter[str]:
    """Open connections to the apiserver at server (address:port) per component, seen from
    the apiserver's side: each of its sockets' peer is a client socket on this host (whose
    process names the component), or an address of a namespace's own (peers)."""
    owner = {local: pid for local, _, pid in rows if pid is not None}
    found: Counter[str] = Counter()
    for local, peer, _ in rows:
        if local != server:
            continue
        address = peer.rsplit(":", 1)[0]
        component = peers.get(address) or components.get(owner.get(peer, -1))
        if component:
            found[component] += 1
    return found


# Timing ---------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class PodTimes:
    """When a pod watch first saw each pod bound, and Running (monotonic seconds)."""

    bound: dict[str, float] = field(default_factory=dict)
    running: dict[str, float] = field(default_factory=dict)

    def see(self, line: str, now: float) -> None:
        parts = line.split()
        if len(parts) < 2:
            return
        name, node, phase = parts[0], (parts[1] if len(parts) > 2 else ""), parts[-1]
        if node and name not in self.bound:
            self.bound[name] = now
        if phase == "Running" and name not in self.running:
            self.running[name] = now

    def bound_to_running(self) -> list[float]:
        return [self.running[n] - self.bound[n] for n in self.running if n in self.bound]


class PodWatch:
    """`kubectl get pods --watch` in a namespace, each line timed on receipt."""

    def __init__(self, kubectl: list[str], namespace: str) -> None:
        self.times = PodTimes()
        self._process = subprocess.Popen(
            [*kubectl, "get", "pods", "-n", namespace, "--watch",
             "-o", "jsonpath={.metadata.name} {.spec.nodeName} {.status.phase}{\"\\n\"}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self.times.see(line, time.monotonic())

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=10)
        self._thread.join(timeout=10)


def kubelet_reported(pod: dict) -> float | None:
    """Seconds from PodScheduled to the container's start, as the pod's status says (1 s grain)."""
    status = pod.get("status", {})
    scheduled = next((c["lastTransitionTime"] for c in status.get("conditions", []) if c["type"] == "PodScheduled"),
                     None)
    started = [s["state"]["running"]["startedAt"] for s in status.get("containerStatuses", [])
               if "running" in s.get("state", {})]
    if not scheduled or not started:
        return None
    return (max(_when(s) for s in started) - _when(scheduled)).total_seconds()


# The reference -----------------------------------------------------------------------


def rest_rows(counts: Counter[Key], minutes: float, watches: Counter[tuple[str, str]]) -> list[dict]:
    """Requests per minute at rest: measured, but a WATCH's rate derived from the watches
    measured open and the reflector's timeout (a 25-minute count of one node holds three or
    four re-opens of each, too few to be a rate)."""
    rows = []
    for key in sorted(set(counts) | {(c, "WATCH", r, "") for c, r in watches}):
        component, verb, resource, subresource = key
        row: dict = {"component": component, "verb": verb, "resource": resource}
        if subresource:
            row["subresource"] = subresource
        if verb == "WATCH":
            row["rate"] = round(watches.get((component, resource), 0) * WATCH_REOPEN_PER_MINUTE, 4)
            row["basis"] = "derived"
        else:
            row["rate"] = round(counts[key] / minutes, 4)
            row["basis"] = "measured"
        rows.append(row)
    return rows


def lifecycle_rows(counts: Counter[Key], pods: int) -> list[dict]:
    rows = []
    for key in sorted(counts):
        component, verb, resource, subresource = key
        row: dict = {"component": component, "verb": verb, "resource": resource}
        if subresource:
            row["subresource"] = subresource
        row["per_pod"] = round(counts[key] / pods, 3)
        row["basis"] = "measured"
        rows.append(row)
    return rows


def _flow(row: dict) -> str:
    return "{" + ", ".join(f"{k}: {json.dumps(v) if isinstance(v, str) and not _plain(v) else v}"
                           for k, v in row.items()) + "}"


def _plain(text: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z][A-Za-z0-9_./:-]*", text)) and text not in ("true", "false", "null", "yes",
                                                                                      "no", "on", "off")


def render(doc: dict, comments: list[str]) -> str:
    """The reference as YAML, one row a line (as the schema is written)."""
    out = [f"# {line}" if line else "#" for line in comments]
    out.append(f"source: {json.dumps(doc['source'])}")
    out.append(f"measured: {_flow(doc['measured'])}")
    for section in ("requests", "watches", "connections"):
        out.append(f"{section}:")
        out.extend(f"  - {_flow(row)}" for row in doc[section])
    life = doc["lifecycle"]
    out.append("lifecycle:")
    out.append(f"  pod: {json.dumps(life['pod'])}")
    out.append(f"  pods: {life['pods']}")
    out.append("  requests:")
    out.extend(f"    - {_flow(row)}" for row in life["requests"])
    out.append(f"  timing: {_flow(life['timing'])}")
    return "\n".join(out) + "\n"
