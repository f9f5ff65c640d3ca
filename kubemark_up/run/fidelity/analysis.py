"""Judging the nodes' traffic (audit.py's tallies) against the reference.

Rules:
- the nodes judged are the hollow nodes the cluster's state lists, all of them: rates
  are per such node and minute, and a node whose kubelet sent nothing in the window,
  or went silent for more than SILENCE seconds of it (its lease renews every 10 s),
  fails by name;
- a WATCH bucket is judged on its steady-state rate, open watches per node over the
  mean lifetime of its watches that ended in the window: watches re-open when they
  end, and the nodes of a fleet started together all opened theirs at once, so a
  count over the first half hour runs about 10 % low of the rate those same nodes
  reach later (the renewal function of U[300, 600) s lifetimes); the count is
  reported beside it;
- a bucket passes within the tolerance of its reference rate; a bucket the window
  cannot judge (fewer than MIN_EXPECTED requests expected in it) says so instead of
  passing, unless it got none at all of ZERO_FAILS or more expected (a faithful node
  does that less than once in a hundred windows); a bucket with no reference passes
  only below NOISE per node and minute (a real node sends about none of it at rest);
- open watches per node, at the end of the window, must equal the reference exactly;
- requests a pod's lifecycle made (audit.py's LIFECYCLE_RESOURCES, put to their pod)
  leave the at-rest buckets; pods that started in the window are counted, and judged
  per pod when their lifecycles can be told apart, are whole and lived MIN_LIFETIME
  seconds (see lifecycles());
- connections per node are judged where they can be told apart (see connections());
- response codes other than 2xx are shown, with the nodes that got them; they fail
  nothing by themselves: a 429 says the master was loaded, and the rates it skews
  are judged on their own.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

from kubemark_up.run.fidelity.audit import Call, Tally, tally
from kubemark_up.run.fidelity.reference import Key, Reference
from kubemark_up.run.model import percentile

MIN_EXPECTED = 20  # requests a window must expect of a bucket to judge its rate
ZERO_FAILS = 5  # a bucket that got none of this many expected fails
NOISE = 0.02  # requests per node and minute a bucket with no reference may have
SILENCE = 40.0  # seconds a node's kubelet may send nothing: four lease renewals
MIN_PODS = 5  # lifecycles needed to judge a per-pod bucket
# Seconds from a pod's first request to its DELETE for its lifecycle to be judged: the
# pod worker's first resync comes 60 to 90 s after Running and sends one more GET and
# status PATCH (measured on the real kubelet: tests/unit/real_pod_statuses.json), so a
# shorter-lived pod sends fewer on a real node as on a hollow one.
MIN_LIFETIME = 90.0
POD_NOISE = 0.1  # requests per pod a lifecycle bucket with no reference may have
MIN_TIMING = {"bound_to_running_p50": 20, "bound_to_running_p99": 100}  # pods to judge a percentile
LOOPBACK = ("127.0.0.1", "::1", "")

PASS, FAIL, FEW, NA, UNREFERENCED = "pass", "fail", "too few to judge", "n/a", "no reference"


@dataclass
class Bucket:
    component: str
    verb: str
    resource: str  # group/resource, or resource for the core group
    subresource: str
    count: int
    rate: float  # per node and minute
    reference: float | None
    basis: str = ""
    verdict: str = ""
    # WATCH: open watches per node / mean lifetime of those that ended in the window.
    steady_rate: float | None = None
    lifetimes: int = 0  # watches of the bucket that ended in the window


@dataclass
class WatchBucket:
    component: str
    resource: str
    open: int  # across all nodes at the end of the window
    per_node: float
    reference: int
    basis: str = ""
    verdict: str = ""


@dataclass
class NodeRow:
    name: str
    requests: int  # its kubelet's, in the window
    address: str  # the source address its kubelet's requests came from
    silence: float  # the longest stretch of the window its kubelet sent nothing in, seconds
    kube_proxy: int | None = None  # requests from its address, when the address is its own
    node_problem_detector: int | None = None
    connections: int | None = None
    codes: dict[int, int] = field(default_factory=dict)  # non-2xx answers to any of its components
    verdict: str = ""
    why: str = ""


@dataclass
class CodeRow:
    component: str
    verb: str
    resource: str
    subresource: str
    code: int
    count: int
    nodes: list[str]  # the nodes that got it, where known


@dataclass
class LifecycleBucket:
    component: str
    verb: str
    resource: str
    subresource: str
    count: int
    per_pod: float
    reference: float | None
    basis: str = ""
    verdict: str = ""


@dataclass
class TimingRow:
    figure: str
    pods: int
    value: float | None
    reference: float | None
    verdict: str = ""


@dataclass
class LifecycleReport:
    started: int  # pods whose kubelet first named them in the window
    judged: int  # of those, the whole lifecycles the per-pod buckets are over
    running: int  # started, not deleted by the time the log was read
    shared: int  # deleted, but beside older pods of the same node and namespace
    short: int = 0  # whole, but beside a pod of its node and namespace deleted before MIN_LIFETIME
    pod: str = ""  # the reference's pod
    requests: list[LifecycleBucket] = field(default_factory=list)
    timing: list[TimingRow] = field(default_factory=list)


@dataclass
class ConnectionBucket:
    component: str
    reference: int | None
    basis: str = ""
    nodes: int = 0  # nodes measured
    low: int | None = None
    high: int | None = None
    off: list[str] = field(default_factory=list)  # nodes with another count
    above: dict[str, str] = field(default_factory=dict)  # of those, the ones above it: when they first held most
    verdict: str = ""
    why: str = ""


@dataclass
class Report:
    start: str
    end: str
    minutes: float
    nodes: int  # expected: the hollow nodes the cluster's state lists
    heard: int  # of those, the nodes whose kubelet sent something in the window
    tolerance: float
    requests: list[Bucket] = field(default_factory=list)
    watches: list[WatchBucket] = field(default_factory=list)
    node_rows: list[NodeRow] = field(default_factory=list)
    codes: list[CodeRow] = field(default_factory=list)
    lifecycle: LifecycleReport | None = None
    connections: list[ConnectionBucket] = field(default_factory=list)
    strangers: dict[str, int] = field(default_factory=dict)  # kubelets not in the state: requests left out
    source: str = ""
    received: int = 0  # node requests received in the window
    notes: list[str] = field(default_factory=list)

    def _verdicts(self) -> Iterable[str]:
        yield from (b.verdict for b in self.requests)
        yield from (w.verdict for w in self.watches)
        yield from (n.verdict for n in self.node_rows)
        yield from (c.verdict for c in self.connections)
        if self.lifecycle:
            yield from (b.verdict for b in self.lifecycle.requests)
            yield from (t.verdict for t in self.lifecycle.timing)

    @property
    def judged(self) -> int:
        """Verdicts the window gave, pass or fail; none when no node request reached it."""
        return sum(1 for v in self._verdicts() if v in (PASS, FAIL)) if self.received else 0

    @property
    def ok(self) -> bool:
        return self.judged > 0 and FAIL not in set(self._verdicts())

    @property
    def failing_nodes(self) -> list[NodeRow]:
        return [n for n in self.node_rows if n.verdict == FAIL]

    def to_json(self) -> dict:
        return {**asdict(self), "ok": self.ok, "judged": self.judged,
                "failing_nodes": [n.name for n in self.failing_nodes]}


def analyse(lines: Iterable[str], *, start: dt.datetime, end: dt.datetime, npd_user: str,
            reference: Reference | dict, nodes: Sequence[str], tolerance: float = 0.10,
            peers: dict[str, int] | None = None, master_addresses: Sequence[str] = (),
            startups: list[float] | None = None, peaks: dict[str, str] | None = None) -> Report:
    """Judge the audit log's lines over [start, end) for the hollow nodes `nodes`.
    peers: the most TCP connections to the apiserver open at once, by peer address,
    over the window (None: not measured), and peaks when each address first held that
    many; startups: seconds from bound to Running of the pods bound in the window
    (None: not measured)."""
    ref = reference if isinstance(reference, Reference) else Reference.model_validate(reference)
    t = tally(lines, start=start, end=end, nodes=nodes, npd_user=npd_user)
    minutes = (end - start).total_seconds() / 60
    report = Report(start=start.isoformat(), end=end.isoformat(), minutes=round(minutes, 2), nodes=len(nodes),
                    heard=sum(1 for n in nodes if t.heard.get(n)), tolerance=tolerance, source=ref.describe(),
                    strangers=dict(t.strangers), received=t.requests)
    rest, report.lifecycle = lifecycles(t, ref, tolerance, startups)
    report.requests = _requests(t, rest, ref, minutes, tolerance)
    report.watches = _watches(t, ref)
    owners = _owners(t, master_addresses)
    report.node_rows = _nodes(t, owners)
    report.codes = _codes(t, owners)
    report.connections = connections(report.node_rows, ref, peers, owners, peaks)
    return report


# Requests at rest ----------------------------------------------------------------


def _requests(t: Tally, counts: Counter[Key], ref: Reference, minutes: float, tolerance: float) -> list[Bucket]:
    nodes = len(t.nodes)
    wanted = {r.key: r for r in ref.requests}
    buckets = []
    for key in sorted(set(counts) | set(wanted)):
        count = counts.get(key, 0)
        row = wanted.get(key)
        component, verb, resource, subresource = key
        bucket = Bucket(component=component, verb=verb, resource=resource, subresource=subresource, count=count,
                        rate=round(count / nodes / minutes, 4) if nodes and minutes > 0 else 0.0,
                        reference=row.rate if row else None, basis=row.basis if row else "")
        if verb == "WATCH" and nodes:
            ended = t.lifetimes.get((component, resource), [])
            bucket.lifetimes = len(ended)
            if ended:
                still_open = sum(1 for w in t.opened.values() if w[:2] == (component, resource)) / nodes
                bucket.steady_rate = round(still_open / (sum(ended) / len(ended) / 60), 4)
        bucket.verdict = _judge(bucket, nodes * minutes, tolerance)
        buckets.append(bucket)
    return buckets


def _judge(bucket: Bucket, node_minutes: float, tolerance: float) -> str:
    if node_minutes <= 0:
        return FEW
    if bucket.reference is None:
        return PASS if bucket.rate <= NOISE else FAIL
    expected = bucket.reference * node_minutes
    if bucket.count == 0 and expected >= ZERO_FAILS:
        return FAIL
    if bucket.verb == "WATCH":
        if bucket.lifetimes < MIN_EXPECTED or bucket.steady_rate is None:
            return FEW
        rate = bucket.steady_rate
    elif expected < MIN_EXPECTED:
        return FEW
    else:
        rate = bucket.rate
    return PASS if abs(rate - bucket.reference) <= tolerance * bucket.reference else FAIL


def _watches(t: Tally, ref: Reference) -> list[WatchBucket]:
    nodes = len(t.nodes)
    open_now = Counter(w[:2] for w in t.opened.values())
    rows = []
    for item in ref.watches:
        total = open_now.pop((item.component, item.resource), 0)
        verdict = PASS if nodes and total == item.open * nodes else FAIL
        rows.append(WatchBucket(component=item.component, resource=item.resource, open=total,
                                per_node=round(total / nodes, 3) if nodes else 0.0, reference=item.open,
                                basis=item.basis, verdict=verdict))
    for (component, resource), total in sorted(open_now.items()):
        # Watches the reference has no row for: the per-object ConfigMap and Secret watches
        # of pods, or something a node should not hold.
        rows.append(WatchBucket(component=component, resource=resource, open=total,
                                per_node=round(total / nodes, 3) if nodes else 0.0, reference=0,
                                verdict=UNREFERENCED))
    return rows


# Nodes, their addresses and codes ---------------------------------------------------


def _owners(t: Tally, master_addresses: Sequence[str]) -> dict[str, str]:
    """Source address -> the one node whose kubelet leaves from it: an address two
    nodes share, or the master's own, tells no node apart."""
    users: dict[str, set[str]] = defaultdict(set)
    for node, seen in t.addresses.items():
        for address in seen:
            users[address].add(node)
    shared = set(LOOPBACK) | set(master_addresses)
    return {a: next(iter(n)) for a, n in users.items() if len(n) == 1 and a not in shared}


def _address(t: Tally, node: str) -> str:
    seen = t.addresses.get(node)
    return seen.most_common(1)[0][0] if seen else ""


def _nodes(t: Tally, owners: dict[str, str]) -> list[NodeRow]:
    window = (t.end - t.start).total_seconds()
    unnamed: dict[str, Counter[str]] = defaultdict(Counter)  # node -> component -> requests
    for (key, address), count in t.unnamed.items():
        if address in owners:
            unnamed[owners[address]][key[0]] += count
    codes: dict[str, Counter[int]] = defaultdict(Counter)
    for (node, address, _key, code), count in t.codes.items():
        if owner := node or owners.get(address):
            codes[owner][code] += count
    rows = []
    for name in t.nodes:
        heard = sorted(t.heard.get(name, []))
        address = _address(t, name)
        own = owners.get(address) == name
        edges = [t.start, *heard, t.end]
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(edges)]
        silence = max(gaps) if heard else window
        row = NodeRow(name=name, requests=len(heard), address=address, silence=round(silence, 1),
                      kube_proxy=unnamed[name]["kube-proxy"] if own else None,
                      node_problem_detector=unnamed[name]["node-problem-detector"] if own else None,
                      codes=dict(sorted(codes[name].items())))
        if not heard:
            row.verdict, row.why = FAIL, "its kubelet sent nothing in the window"
        elif silence > SILENCE:
            at = edges[gaps.index(silence)]
            row.verdict = FAIL
            row.why = f"its kubelet sent nothing for {silence:.0f} s from {at.strftime('%H:%M:%S')}"
        else:
            row.verdict = PASS
        rows.append(row)
    return rows


def _codes(t: Tally, owners: dict[str, str]) -> list[CodeRow]:
    grouped: dict[tuple[str, str, str, str, int], tuple[int, set[str]]] = {}
    for (node, address, key, code), count in t.codes.items():
        total, nodes = grouped.get((*key, code), (0, set()))
        owner = node or owners.get(address)
        grouped[(*key, code)] = (total + count, nodes | ({owner} if owner else set()))
    return [CodeRow(component=c, verb=v, resource=r, subresource=s, code=code, count=count, nodes=sorted(nodes))
            for (c, v, r, s, code), (count, nodes) in sorted(grouped.items())]


def connections(rows: list[NodeRow], ref: Reference, peers: dict[str, int] | None,
                owners: dict[str, str], peaks: dict[str, str] | None = None) -> list[ConnectionBucket]:
    """The most TCP connections per node open at once to the apiserver in the window. The
    audit log sees no connection, so they are counted on the master's host, by peer
    address (measure.py), and put to a node by its kubelet's address when that is the
    node's own: then they are all of the node's components together (the fleet's leave
    from one address per node), judged against the sum of the reference's rows.
    Where the address is not a node's own, or nothing was counted, n/a: never a pass."""
    if not ref.connections:
        return []
    total = sum(r.open for r in ref.connections)
    basis = ref.connections[0].basis if len({r.basis for r in ref.connections}) == 1 else "measured+derived"
    buckets = [ConnectionBucket(component=r.component, reference=r.open, basis=r.basis, verdict=NA,
                                why="one address per node carries all its components")
               for r in ref.connections]
    summary = ConnectionBucket(component="all, per node", reference=total, basis=basis)
    measured = []
    for row in rows:
        if peers is not None and owners.get(row.address) == row.name:
            row.connections = peers.get(row.address, 0)
            measured.append(row)
    if not measured:
        summary.verdict = NA
        summary.why = ("not counted on the master's host" if peers is None else
                       "no node leaves from an address of its own (shared, or the master's)")
    else:
        counts = [r.connections or 0 for r in measured]
        summary.nodes, summary.low, summary.high = len(measured), min(counts), max(counts)
        summary.off = [r.name for r in measured if r.connections != total]
        when = peaks or {}
        summary.above = {r.name: when.get(r.address, "") for r in measured if (r.connections or 0) > total}
        summary.verdict = FAIL if summary.off else PASS
        if len(measured) < len(rows):
            summary.why = f"{len(rows) - len(measured)} node(s) without an address of their own not counted"
    return [*buckets, summary]


# Pod lifecycles -----------------------------------------------------------------------


@dataclass
class _Pod:
    node: str
    first: dt.datetime
    deleted: dt.datetime | None = None


def lifecycles(t: Tally, ref: Reference, tolerance: float,
               startups: list[float] | None) -> tuple[Counter[Key], LifecycleReport | None]:
    """Split the kubelets' lifecycle-resource requests from the at-rest counts, and judge
    per pod the pods that started in the window and lived long enough to be compared.

    A pod starts when its kubelet first names it (its GET or status PATCH) and ends with
    the kubelet's DELETE. Requests naming the pod, and its Events (named after it), are
    its own. A TokenRequest, ConfigMap or Secret request names no pod: it belongs to the
    pods of its node and namespace together. So the per-pod buckets are over the pods
    of each node and namespace whose every pod alive since the window opened started
    in it and was deleted by the time the log was read (whole lifecycles, not shared
    with older ones) and lived MIN_LIFETIME seconds each (a pod deleted before its first
    resync sends fewer); their requests count wherever they fall, and the name-less ones
    of their node and namespace from the window's start. Returns the at-rest counts (what
    no pod made) and the lifecycle report (None when no pod started in the window)."""
    rest = Counter(t.counts)
    pods: dict[tuple[str, str], _Pod] = {}
    for call in t.calls:
        if call.key[2] == "pods" and call.name:
            pod = pods.setdefault((call.namespace, call.name), _Pod(node=call.node, first=call.received))
            pod.first = min(pod.first, call.received)
            if call.key[1] == "DELETE":
                pod.deleted = max(pod.deleted or call.received, call.received)
    groups: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for (namespace, name), pod in pods.items():
        groups[(pod.node, namespace)].append((namespace, name))

    def started(pod: _Pod) -> bool:
        return t.in_window(pod.first)

    def alive(pod: _Pod) -> bool:  # at some time since the window opened
        return pod.deleted is None or pod.deleted >= t.start

    def lived(pod: _Pod) -> bool:
        return pod.deleted is not None and (pod.deleted - pod.first).total_seconds() >= MIN_LIFETIME

    live: set[tuple[str, str]] = set()  # groups with a pod alive since the window opened
    whole: set[tuple[str, str]] = set()  # of those, the groups whose lifecycles are whole
    short: set[tuple[str, str]] = set()  # of those, the groups with a pod deleted early
    for group, members in groups.items():
        living = [p for p in (pods[m] for m in members) if alive(p)]
        if living:
            live.add(group)
            if all(started(p) and p.deleted is not None for p in living):
                whole.add(group)
                if not all(lived(p) for p in living):
                    short.add(group)
    compared = whole - short  # the groups whose lifecycles are judged
    judged = {m for g in compared for m in groups[g] if started(pods[m])}
    counts: Counter[Key] = Counter()
    for call in t.calls:
        owner = _owner(call, pods)
        if owner is not None and alive(pods[owner]):
            if owner in judged:
                counts[call.key] += 1
        elif owner is None and (call.node, call.namespace) in live:
            if (call.node, call.namespace) in compared and call.received >= t.start:
                counts[call.key] += 1
        elif call.in_window:
            # No pod of its node and namespace alive in the window: no lifecycle's (a
            # watch kept open for a pod long gone, say), judged as traffic at rest.
            rest[call.key] += 1
    begun = {key: p for key, p in pods.items() if started(p)}
    if not begun:
        return rest, None
    report = LifecycleReport(
        started=len(begun), judged=len(judged), running=sum(1 for p in begun.values() if p.deleted is None),
        shared=sum(1 for (ns, _), p in begun.items() if p.deleted is not None and (p.node, ns) not in whole),
        short=sum(1 for (ns, _), p in begun.items() if (p.node, ns) in short),
        pod=ref.lifecycle.pod if ref.lifecycle else "")
    report.requests = _lifecycle_buckets(counts, ref, len(judged), tolerance)
    report.timing = _timing(ref, startups, tolerance)
    return rest, report


def _owner(call: Call, pods: dict[tuple[str, str], _Pod]) -> tuple[str, str] | None:
    """The pod a request names: the pod itself, or the object of its Event
    (an Event is named <object>.<hex stamp>)."""
    resource = call.key[2]
    if resource == "pods" and call.name:
        return (call.namespace, call.name)
    if resource in ("events", "events.k8s.io/events"):
        involved = (call.namespace, call.name.rsplit(".", 1)[0])
        if involved in pods:
            return involved
        return None
    return None


def _lifecycle_buckets(counts: Counter[Key], ref: Reference, pods: int, tolerance: float) -> list[LifecycleBucket]:
    wanted = {r.key: r for r in ref.lifecycle.requests} if ref.lifecycle else {}
    buckets = []
    for key in sorted(set(counts) | set(wanted)):
        row = wanted.get(key)
        count = counts.get(key, 0)
        component, verb, resource, subresource = key
        per_pod = count / pods if pods else 0.0
        bucket = LifecycleBucket(component=component, verb=verb, resource=resource, subresource=subresource,
                                 count=count, per_pod=round(per_pod, 3), reference=row.per_pod if row else None,
                                 basis=row.basis if row else "")
        if ref.lifecycle is None:
            bucket.verdict = UNREFERENCED
        elif pods < MIN_PODS:
            bucket.verdict = FEW
        elif row is None:
            bucket.verdict = PASS if per_pod <= POD_NOISE else FAIL
        elif count == 0 and row.per_pod * pods >= ZERO_FAILS:
            bucket.verdict = FAIL
        elif row.per_pod * pods < MIN_PODS:
            bucket.verdict = FEW
        else:
            bucket.verdict = PASS if abs(per_pod - row.per_pod) <= tolerance * row.per_pod else FAIL
        buckets.append(bucket)
    return buckets


def _timing(ref: Reference, startups: list[float] | None, tolerance: float) -> list[TimingRow]:
    timing = ref.lifecycle.timing if ref.lifecycle else None
    rows = []
    for figure, q in (("bound_to_running_p50", 50), ("bound_to_running_p99", 99)):
        reference = timing.seconds(getattr(timing, figure)) if timing else None
        value = percentile(startups, q) if startups else None
        row = TimingRow(figure=figure, pods=len(startups or []), value=None if value is None else round(value, 3),
                        reference=reference)
        if startups is None:
            row.verdict = NA
        elif reference is None:
            row.verdict = UNREFERENCED
        elif row.pods < MIN_TIMING[figure] or value is None:
            row.verdict = FEW
        else:
            row.verdict = PASS if abs(value - reference) <= tolerance * reference else FAIL
        rows.append(row)
    return rows
