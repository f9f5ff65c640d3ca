"""Counting the nodes' requests in an audit log, and judging them against the reference.

Rules:
- a request counts in the window when the apiserver received it inside the window;
  a WATCH counts when it was opened (its ResponseStarted stage), every other request
  when it completed;
- the component is the identity: users in system:nodes are kubelets, kube-proxy and
  node-problem-detector have their own users;
- rates are per node and minute, the node count being the kubelets seen in the window;
- a WATCH bucket is judged on its steady-state rate, open watches per node over the
  mean lifetime of its watches that ended in the window: watches re-open when they
  end, and the nodes of a fleet started together all opened theirs at once, so a
  count over the first half hour runs about 10 % low of the rate those same nodes
  reach later (the renewal function of U[300, 600) s lifetimes); the count is
  reported beside it;
- a bucket passes within the tolerance of its reference rate; a bucket the window
  cannot judge (fewer than MIN_EXPECTED requests expected in it) says so instead of
  passing; a bucket with no reference passes only below NOISE per node and minute
  (a real node sends about none of it in steady state);
- open watches per node, at the end of the window, must equal the reference exactly.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

MIN_EXPECTED = 20  # requests a window must expect of a bucket to judge its rate
NOISE = 0.02  # requests per node and minute a bucket with no reference may have
_VERBS = {"get": "GET", "list": "LIST", "watch": "WATCH", "create": "POST", "update": "PUT", "patch": "PATCH",
          "delete": "DELETE", "deletecollection": "DELETECOLLECTION"}


@dataclass
class Bucket:
    component: str
    verb: str
    resource: str  # group/resource, or resource for the core group
    subresource: str
    count: int
    rate: float  # per node and minute
    reference: float | None
    verdict: str = ""  # pass, fail, too few to judge
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
    verdict: str = ""


@dataclass
class Report:
    start: str
    end: str
    minutes: float
    nodes: int
    tolerance: float
    requests: list[Bucket] = field(default_factory=list)
    watches: list[WatchBucket] = field(default_factory=list)
    source: str = ""

    @property
    def ok(self) -> bool:
        return not any(b.verdict == "fail" for b in self.requests) and not any(w.verdict == "fail" for w in self.watches)

    def to_json(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def load_reference(path: Path | None = None) -> dict:
    path = path or Path(__file__).with_name("reference.yaml")
    return yaml.safe_load(path.read_text())


def component_of(user: str, npd_user: str) -> str | None:
    if user.startswith("system:node:"):
        return "kubelet"
    if user in ("system:kube-proxy", "system:serviceaccount:kube-system:kube-proxy"):
        return "kube-proxy"
    if user in (npd_user, "system:serviceaccount:kube-system:node-problem-detector"):
        return "node-problem-detector"
    return None


def _when(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def analyse(lines: Iterable[str], *, start: dt.datetime, end: dt.datetime, npd_user: str, reference: dict,
            tolerance: float = 0.10) -> Report:
    counts: Counter[tuple[str, str, str, str]] = Counter()
    opened: dict[str, tuple[str, str]] = {}  # auditID -> (component, resource) of a watch open at `end`
    lifetimes: dict[tuple[str, str], list[float]] = {}  # seconds, of watches that ended in the window
    kubelets: set[str] = set()
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        user = (event.get("user") or {}).get("username", "")
        component = component_of(user, npd_user)
        if component is None:
            continue
        ref = event.get("objectRef") or {}
        group, resource = ref.get("apiGroup", ""), ref.get("resource", "")
        name = f"{group}/{resource}" if group else resource
        verb = _VERBS.get(event.get("verb", ""), event.get("verb", "").upper())
        stage = event.get("stage")
        received = _when(event["requestReceivedTimestamp"])
        finished = _when(event["stageTimestamp"])
        if verb == "WATCH":
            if stage == "ResponseStarted" and received <= end:
                opened[event["auditID"]] = (component, name)
            elif stage in ("ResponseComplete", "Panic") and finished <= end:
                opened.pop(event["auditID"], None)
                if finished >= start:
                    lifetimes.setdefault((component, name), []).append((finished - received).total_seconds())
            if stage != "ResponseStarted":
                continue
        elif stage not in ("ResponseComplete", "Panic"):
            continue
        if start <= received < end:
            counts[(component, verb, name, ref.get("subresource", ""))] += 1
            if component == "kubelet":
                kubelets.add(user)
    minutes = (end - start).total_seconds() / 60
    nodes = len(kubelets)
    report = Report(start=start.isoformat(), end=end.isoformat(), minutes=round(minutes, 2), nodes=nodes,
                    tolerance=tolerance, source=reference.get("source", ""))
    wanted = {(r["component"], r["verb"], r["resource"], r.get("subresource", "")): float(r["rate"])
              for r in reference.get("requests", [])}
    for key in sorted(set(counts) | set(wanted)):
        count = counts.get(key, 0)
        rate = count / nodes / minutes if nodes and minutes > 0 else 0.0
        component, verb, resource, subresource = key
        bucket = Bucket(component=component, verb=verb, resource=resource, subresource=subresource, count=count,
                        rate=round(rate, 4), reference=wanted.get(key))
        if verb == "WATCH" and nodes:
            ended = lifetimes.get((component, resource), [])
            bucket.lifetimes = len(ended)
            if ended:
                still_open = sum(1 for w in opened.values() if w == (component, resource)) / nodes
                bucket.steady_rate = round(still_open / (sum(ended) / len(ended) / 60), 4)
        bucket.verdict = _judge(bucket, nodes * minutes, tolerance)
        report.requests.append(bucket)
    open_now = Counter(opened.values())
    for item in reference.get("watches", []):
        total = open_now.pop((item["component"], item["resource"]), 0)
        per_node = total / nodes if nodes else 0.0
        verdict = "pass" if nodes and total == int(item["open"]) * nodes else "fail"
        report.watches.append(WatchBucket(component=item["component"], resource=item["resource"], open=total,
                                          per_node=round(per_node, 3), reference=int(item["open"]), verdict=verdict))
    for (component, resource), total in sorted(open_now.items()):
        # Watches the reference has no row for: the per-object ConfigMap and Secret watches
        # of pods, or something a node should not hold.
        report.watches.append(WatchBucket(component=component, resource=resource, open=total,
                                          per_node=round(total / nodes, 3) if nodes else 0.0, reference=0,
                                          verdict="no reference"))
    return report


def _judge(bucket: Bucket, node_minutes: float, tolerance: float) -> str:
    if node_minutes <= 0:
        return "too few to judge"
    if bucket.reference is None:
        return "pass" if bucket.rate <= NOISE else "fail"
    if bucket.verb == "WATCH":
        if bucket.lifetimes < MIN_EXPECTED or bucket.steady_rate is None:
            return "too few to judge"
        rate = bucket.steady_rate
    elif bucket.reference * node_minutes < MIN_EXPECTED:
        return "too few to judge"
    else:
        rate = bucket.rate
    return "pass" if abs(rate - bucket.reference) <= tolerance * bucket.reference else "fail"
