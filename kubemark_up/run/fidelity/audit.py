"""Reading the apiserver's audit log of the nodes' own requests (audit_nodes: true)
into tallies: what each node's components sent in the window, the watches they held,
the response codes they got, and the requests that belong to pods' lifecycles. The
judging is analysis.py's.

- The component is the identity: users in system:nodes are kubelets (their node is
  in the name), kube-proxy and node-problem-detector have their own users. A node's
  kube-proxy and node-problem-detector carry no node name; they are put to a node by
  their source address when that address is the kubelet's of exactly one node (the
  fleet's nodes each leave from their own address; stock kubemark's share one).
- A request counts in the window when the apiserver received it inside it; a WATCH
  counts when it was opened (its ResponseStarted stage), every other request, and a
  refused watch, when it completed.
- A kubelet the cluster's state does not list is a stranger: its requests are left
  out and its name kept, and so are the kube-proxy and node-problem-detector
  requests from an address only strangers' kubelets use.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from kubemark_up.run.fidelity.reference import Key, http_verb

KUBE_PROXY_USERS = ("system:kube-proxy", "system:serviceaccount:kube-system:kube-proxy")
NPD_SERVICE_ACCOUNT = "system:serviceaccount:kube-system:node-problem-detector"
# Requests of a kubelet that a pod's lifecycle makes: on the pod itself, its Events,
# its service account's token, the ConfigMaps and Secrets it mounts.
LIFECYCLE_RESOURCES = ("pods", "events", "events.k8s.io/events", "serviceaccounts", "configmaps", "secrets")


def component_of(user: str, npd_user: str) -> str | None:
    if user.startswith("system:node:"):
        return "kubelet"
    if user in KUBE_PROXY_USERS:
        return "kube-proxy"
    if user in (npd_user, NPD_SERVICE_ACCOUNT):
        return "node-problem-detector"
    return None


def when(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Call:
    """A kubelet request on a lifecycle resource, kept until the pods are known."""

    node: str
    key: Key
    namespace: str
    name: str
    received: dt.datetime
    in_window: bool


@dataclass
class Tally:
    start: dt.datetime
    end: dt.datetime
    nodes: list[str]  # expected, from the cluster's state
    # Requests received in the window, lifecycle ones not among them yet.
    counts: Counter[Key] = field(default_factory=Counter)
    calls: list[Call] = field(default_factory=list)  # kubelets' lifecycle-resource requests, whole log
    heard: dict[str, list[dt.datetime]] = field(default_factory=lambda: defaultdict(list))  # node -> kubelet requests
    addresses: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))  # node -> source IPs
    # kube-proxy and node-problem-detector requests in the window by key and source IP
    # (in counts too once the strangers' addresses are known).
    unnamed: Counter[tuple[Key, str]] = field(default_factory=Counter)
    # Non-2xx answers to requests received in the window: (node or "", source IP, key, code).
    codes: Counter[tuple[str, str, Key, int]] = field(default_factory=Counter)
    # Watches open at the end: auditID -> (component, resource, node or "", source IP).
    opened: dict[str, tuple[str, str, str, str]] = field(default_factory=dict)
    lifetimes: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # seconds, ended in the window
    strangers: Counter[str] = field(default_factory=Counter)  # kubelets not in the state: their requests
    stranger_addresses: set[str] = field(default_factory=set)

    def in_window(self, at: dt.datetime) -> bool:
        return self.start <= at < self.end

    @property
    def requests(self) -> int:
        """Node requests received in the window, of any kind."""
        return sum(self.counts.values()) + sum(1 for c in self.calls if c.in_window)


def tally(lines: Iterable[str], *, start: dt.datetime, end: dt.datetime, nodes: Sequence[str],
          npd_user: str) -> Tally:
    out = Tally(start=start, end=end, nodes=list(nodes))
    expected = set(nodes)
    for line in lines:
        try:
            event = json.loads(line)
            user = (event.get("user") or {}).get("username", "")
            component = component_of(user, npd_user)
            if component is None:
                continue
            received = when(event["requestReceivedTimestamp"])
            finished = when(event["stageTimestamp"])
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # a line cut by rotation, or not an event
        node = user.removeprefix("system:node:") if component == "kubelet" else ""
        if node and node not in expected:
            if out.in_window(received):
                out.strangers[node] += 1
            out.stranger_addresses.add(_address(event))
            continue
        _count(out, event, component, node, received, finished)
    _leave_out_strangers(out)
    return out


def _address(event: dict) -> str:
    return str((event.get("sourceIPs") or [""])[-1])  # the last is the apiserver's own peer


def _leave_out_strangers(out: Tally) -> None:
    """Count the name-less requests, but for those from addresses only strangers use."""
    ours = {address for seen in out.addresses.values() for address in seen}
    theirs = out.stranger_addresses - ours
    for (key, address), count in list(out.unnamed.items()):
        if address in theirs:
            del out.unnamed[(key, address)]
        else:
            out.counts[key] += count
    out.opened = {k: w for k, w in out.opened.items() if w[3] not in theirs}
    out.codes = Counter({k: c for k, c in out.codes.items() if k[1] not in theirs})


def _count(out: Tally, event: dict, component: str, node: str, received: dt.datetime,
           finished: dt.datetime) -> None:
    ref = event.get("objectRef") or {}
    group, resource = ref.get("apiGroup", ""), ref.get("resource", "")
    # A request on no resource (/version, /api) is named by its path.
    name = f"{group}/{resource}" if group else resource or str(event.get("requestURI", "")).split("?")[0]
    verb = http_verb(str(event.get("verb", "")))
    stage = event.get("stage")
    address = _address(event)
    code = (event.get("responseStatus") or {}).get("code")
    if stage == "Panic":
        code = 500
    key = (component, verb, name, ref.get("subresource", ""))
    if verb == "WATCH":
        audit_id = str(event.get("auditID", ""))
        if stage == "ResponseStarted":
            if received <= out.end:
                out.opened[audit_id] = (component, name, node, address)
        elif stage in ("ResponseComplete", "Panic"):
            was_open = audit_id in out.opened
            if finished <= out.end:
                out.opened.pop(audit_id, None)
            if was_open or (code or 0) < 300:
                # It ran, and counted when it opened; its life tells the rate it re-opens at.
                if out.start <= finished <= out.end:
                    out.lifetimes.setdefault((component, name), []).append((finished - received).total_seconds())
                return
            # A refused watch never opened: it counts, with its code, as it completes.
        else:
            return
    elif stage not in ("ResponseComplete", "Panic"):
        return
    inside = out.in_window(received)
    if node and resource in LIFECYCLE_RESOURCES and ref.get("namespace"):
        out.calls.append(Call(node=node, key=key, namespace=ref["namespace"], name=ref.get("name", ""),
                              received=received, in_window=inside))
    elif inside and node:
        out.counts[key] += 1
    if not inside:
        return
    if node:
        out.heard[node].append(received)
        out.addresses[node][address] += 1
    else:
        out.unnamed[(key, address)] += 1
    if code is not None and not 200 <= int(code) < 300:
        out.codes[(node, address, key, int(code))] += 1
