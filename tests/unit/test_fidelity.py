"""The fidelity analysis on audit events made here: what is counted, what is judged."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from rich.console import Console

from kubemark_up import cluster
from kubemark_up.errors import ConfigError
from kubemark_up.run.fidelity import Reference, analyse, load_reference
from kubemark_up.run.fidelity.tables import tables
from tests.support.cli import assert_one_line_error
from tests.unit.test_engine import kubemark_up, quiet, settings

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
NPD = "system:kubemark-up:node-problem-detector"
PROXY = "system:kube-proxy"
START, END = T0 + dt.timedelta(minutes=5), T0 + dt.timedelta(minutes=35)


def stamp(at: float) -> str:
    return (T0 + dt.timedelta(seconds=at)).isoformat().replace("+00:00", "Z")


def event(audit_id: str, user: str, verb: str, resource: str, at: float, *, stage: str = "ResponseComplete",
          ended: float | None = None, group: str = "", subresource: str = "", namespace: str = "", name: str = "",
          ip: str = "127.0.0.1", code: int = 200) -> str:
    ref = {"resource": resource, "apiGroup": group, **({"subresource": subresource} if subresource else {}),
           **({"namespace": namespace} if namespace else {}), **({"name": name} if name else {})}
    return json.dumps({
        "auditID": audit_id, "stage": stage, "verb": verb, "user": {"username": user}, "objectRef": ref,
        "sourceIPs": [ip], "responseStatus": {"metadata": {}, "code": code},
        "requestReceivedTimestamp": stamp(at), "stageTimestamp": stamp(ended if ended is not None else at),
    })


def node(n: int) -> str:
    return f"hollow-node-{n}"


def address(n: int) -> str:
    return f"127.1.0.{n + 1}"


def watch(audit_id: str, user: str, resource: str, start: float, life: float, minutes: int, **kw) -> list[str]:
    lines = [event(audit_id, user, "watch", resource, start, stage="ResponseStarted", **kw)]
    if start + life < minutes * 60:
        lines.append(event(audit_id, user, "watch", resource, start, ended=start + life, **kw))
    return lines


def fleet_log(nodes: int, minutes: int, *, stock: bool = False, until: dict[int, float] | None = None) -> list[str]:
    """What `nodes` nodes send over `minutes` minutes: a lease every 10.17 s, a pods
    watch each living 450 s, kube-proxy's services and nodes watches, the
    node-problem-detector's heartbeat every 5 minutes, and a controller's requests
    that are no node's. Each node leaves from its own address; stock kubemark's
    nodes all from 127.0.0.1, with no node-problem-detector and no kube-proxy Node
    watch. until: node -> second its traffic stops."""
    lines = []
    for n in range(nodes):
        user, ip = f"system:node:{node(n)}", "127.0.0.1" if stock else address(n)
        stop = min(minutes * 60, (until or {}).get(n, minutes * 60))
        t = 0.0
        while t < stop:
            lines.append(event(f"l{n}-{t}", user, "update", "leases", t, group="coordination.k8s.io", ip=ip))
            t += 10.17
        for i, start in enumerate(range(0, int(stop), 450)):
            life = min(450, stop - start)
            lines += watch(f"w{n}-{i}", user, "pods", start, life, minutes, ip=ip)
            lines += watch(f"ps{n}-{i}", PROXY, "services", start + 1, life, minutes, ip=ip)
            if not stock:
                lines += watch(f"pn{n}-{i}", PROXY, "nodes", start + 2, life, minutes, ip=ip)
        if not stock:
            for i, at in enumerate(range(7 + n, int(stop), 300)):
                lines.append(event(f"npd{n}-{i}", NPD, "patch", "nodes", at, subresource="status", name=node(n), ip=ip))
    lines.append(event("c1", "system:kube-controller-manager", "update", "leases", 30, group="coordination.k8s.io"))
    return lines


def reference(**extra) -> dict:
    """The rows fleet_log's nodes send, stock kubemark's without the last three."""
    return {"source": "test",
            "requests": [{"component": "kubelet", "verb": "PUT", "resource": "coordination.k8s.io/leases", "rate": 5.9,
                          "basis": "measured"},
                         {"component": "kubelet", "verb": "WATCH", "resource": "pods", "rate": 0.1333},
                         {"component": "kube-proxy", "verb": "WATCH", "resource": "services", "rate": 0.1333},
                         {"component": "node-problem-detector", "verb": "PATCH", "resource": "nodes",
                          "subresource": "status", "rate": 0.2},
                         {"component": "kube-proxy", "verb": "WATCH", "resource": "nodes", "rate": 0.1333}],
            "watches": [{"component": "kubelet", "resource": "pods", "open": 1},
                        {"component": "kube-proxy", "resource": "services", "open": 1},
                        {"component": "kube-proxy", "resource": "nodes", "open": 1}], **extra}


def names(n: int) -> list[str]:
    return [node(i) for i in range(n)]


def judge(lines: list[str], nodes: int | list[str] = 10, ref: dict | None = None, **kw):
    expected = names(nodes) if isinstance(nodes, int) else nodes
    return analyse(lines, start=kw.pop("start", START), end=kw.pop("end", END), npd_user=NPD,
                   reference=ref or reference(), nodes=expected, **kw)


def shown(report) -> str:
    console = Console(width=250, record=True, file=open("/dev/null", "w"))  # noqa: SIM115 (closed with the console)
    for part in tables(report):
        console.print(part)
    return console.export_text()


def test_faithful_nodes_pass() -> None:
    report = judge(fleet_log(10, 40))
    buckets = {(b.verb, b.resource): b for b in report.requests}
    assert report.nodes == 10 and report.heard == 10 and report.ok
    lease = buckets[("PUT", "coordination.k8s.io/leases")]
    assert lease.verdict == "pass" and abs(lease.rate - 60 / 10.17) < 0.01 and lease.basis == "measured"
    watch = buckets[("WATCH", "pods")]
    assert watch.steady_rate == round(60 / 450, 4) and watch.verdict == "pass" and watch.basis == "derived"
    assert report.watches[0].open == 10 and report.watches[0].verdict == "pass"
    assert all(n.verdict == "pass" and n.silence < 11 for n in report.node_rows)
    # kube-proxy and node-problem-detector put to their node by its own address.
    assert report.node_rows[3].address == address(3) and report.node_rows[3].node_problem_detector == 6
    assert "measured" in shown(report)


def test_a_slow_lease_and_a_missing_watch_fail() -> None:
    lines = [line for line in fleet_log(10, 40) if '"w3-' not in line]  # node 3 holds no pods watch
    slow = judge(lines, ref={**reference(), "requests": [
        {"component": "kubelet", "verb": "PUT", "resource": "coordination.k8s.io/leases", "rate": 8.0}]})
    assert not slow.ok
    assert next(b for b in slow.requests if b.verb == "PUT").verdict == "fail"
    assert slow.watches[0].open == 9 and slow.watches[0].verdict == "fail"


def test_a_short_window_judges_only_what_it_can() -> None:
    report = judge(fleet_log(2, 3), 2, start=T0 + dt.timedelta(seconds=30), end=T0 + dt.timedelta(minutes=2))
    buckets = {(b.verb, b.resource): b for b in report.requests}
    assert buckets[("WATCH", "pods")].verdict == "too few to judge"
    assert buckets[("PUT", "coordination.k8s.io/leases")].verdict == "too few to judge"  # 2 nodes x 1.5 min
    assert report.ok and report.judged > 0


def test_requests_a_real_node_does_not_send_fail() -> None:
    lines = fleet_log(10, 40) + [event(f"g{i}", "system:node:hollow-node-1", "get", "nodes", 400 + i,
                                       ip=address(1)) for i in range(200)]
    report = judge(lines)
    get = next(b for b in report.requests if b.verb == "GET")
    assert get.reference is None and get.verdict == "fail" and not report.ok


def test_the_expected_nodes_come_from_the_state_and_one_that_sent_nothing_fails() -> None:
    report = judge(fleet_log(10, 40), 12)  # the state lists 12; two never spoke
    assert report.nodes == 12 and report.heard == 10 and not report.ok
    assert [n.name for n in report.failing_nodes] == ["hollow-node-10", "hollow-node-11"]
    assert report.failing_nodes[0].why == "its kubelet sent nothing in the window"
    lease = next(b for b in report.requests if b.verb == "PUT")
    assert abs(lease.rate - 60 / 10.17 * 10 / 12) < 0.01 and lease.verdict == "fail"  # per node of the state
    assert report.watches[0].open == 10 and report.watches[0].verdict == "fail"
    text = shown(report)
    assert "12 in the cluster's state, 10 heard from" in text and "hollow-node-11" in text


def test_a_node_gone_silent_in_the_window_fails_by_name() -> None:
    # A fleet process killed at minute 20 takes nodes 2 and 7 with it.
    report = judge(fleet_log(10, 40, until={2: 1200, 7: 1200}))
    assert [n.name for n in report.failing_nodes] == ["hollow-node-2", "hollow-node-7"]
    assert all(n.silence > 800 and "sent nothing for" in n.why for n in report.failing_nodes)
    assert not report.ok


def test_a_window_with_no_node_request_judged_nothing() -> None:
    later = T0 + dt.timedelta(minutes=50)
    report = judge(fleet_log(3, 40), 3, start=later, end=later + dt.timedelta(minutes=2))
    assert report.received == 0 and report.judged == 0 and not report.ok


def test_kubelets_not_in_the_state_are_left_out() -> None:
    report = judge(fleet_log(10, 40), 8)
    assert report.nodes == 8 and report.strangers.keys() == {"hollow-node-8", "hollow-node-9"}
    lease = next(b for b in report.requests if b.verb == "PUT")
    assert abs(lease.rate - 60 / 10.17) < 0.01 and report.ok
    assert "left out: 2 kubelet(s)" in shown(report)


# Pod lifecycles ---------------------------------------------------------------------


def lifecycle(pod: str, n: int, at: float, *, namespace: str = "churn", end: float | None = 100, events: bool = True,
              tag: str = "") -> list[str]:
    """What a kubelet sends for one pod with a projected token, a ConfigMap and a
    Secret: created `at`, deleted `end` seconds later (None: still running)."""
    user, ip, tag = f"system:node:{node(n)}", address(n), tag or pod
    ns = {"namespace": namespace, "ip": ip}
    lines = [event(f"{tag}-get", user, "get", "pods", at, name=pod, **ns),
             event(f"{tag}-tok", user, "create", "serviceaccounts", at + 0.2, subresource="token", name="default", **ns),
             event(f"{tag}-cm", user, "watch", "configmaps", at + 0.3, stage="ResponseStarted", name="conf", **ns),
             event(f"{tag}-sec", user, "watch", "secrets", at + 0.3, stage="ResponseStarted", name="key", **ns),
             event(f"{tag}-p1", user, "patch", "pods", at + 0.5, subresource="status", name=pod, **ns),
             event(f"{tag}-p2", user, "patch", "pods", at + 1.5, subresource="status", name=pod, **ns)]
    if events:
        lines += [event(f"{tag}-e{i}", user, "create", "events", at + 1 + i / 10, name=f"{pod}.18eefdf9{i:08x}", **ns)
                  for i in range(3)]
    if end is not None:
        lines += [event(f"{tag}-p3", user, "patch", "pods", at + end, subresource="status", name=pod, **ns),
                  event(f"{tag}-del", user, "delete", "pods", at + end + 0.2, name=pod, **ns),
                  event(f"{tag}-cm", user, "watch", "configmaps", at + 0.3, ended=at + end + 0.3, name="conf", **ns),
                  event(f"{tag}-sec", user, "watch", "secrets", at + 0.3, ended=at + end + 0.3, name="key", **ns)]
        if events:
            lines.append(event(f"{tag}-kill", user, "create", "events", at + end, name=f"{pod}.18eefdfa00000000", **ns))
    return lines


LIFECYCLE = {"pod": "pause, projected token, a ConfigMap and a Secret", "pods": 30,
             "requests": [
                 {"component": "kubelet", "verb": "GET", "resource": "pods", "per_pod": 1, "basis": "measured"},
                 {"component": "kubelet", "verb": "PATCH", "resource": "pods", "subresource": "status", "per_pod": 3},
                 {"component": "kubelet", "verb": "create", "resource": "serviceaccounts", "subresource": "token",
                  "per_pod": 1},
                 {"component": "kubelet", "verb": "WATCH", "resource": "configmaps", "per_pod": 1},
                 {"component": "kubelet", "verb": "WATCH", "resource": "secrets", "per_pod": 1},
                 {"component": "kubelet", "verb": "POST", "resource": "events", "per_pod": 4},
                 {"component": "kubelet", "verb": "DELETE", "resource": "pods", "per_pod": 1}],
             "timing": {"bound_to_running_p50": 1200, "bound_to_running_p99": 2500, "unit": "ms"}}


def churn(**kw) -> list[str]:
    """Ten nodes at rest, twenty pods started and deleted inside the window, two per
    node, one namespace per node."""
    lines = fleet_log(10, 40)
    for i in range(20):
        lines += lifecycle(f"pod-{i}", i % 10, 600 + 30 * i, namespace=f"churn-{i % 10}", **kw)
    return lines


def test_pods_churned_in_the_window_are_judged_per_pod() -> None:
    report = judge(churn(), ref=reference(lifecycle=LIFECYCLE), startups=[1.1 + i / 100 for i in range(30)])
    life = report.lifecycle
    assert life is not None and (life.started, life.judged, life.running, life.shared) == (20, 20, 0, 0)
    per_pod = {(b.verb, b.resource, b.subresource): b for b in life.requests}
    assert per_pod[("GET", "pods", "")].per_pod == 1 and per_pod[("GET", "pods", "")].basis == "measured"
    assert per_pod[("PATCH", "pods", "status")].per_pod == 3
    assert per_pod[("POST", "serviceaccounts", "token")].per_pod == 1
    assert per_pod[("WATCH", "configmaps", "")].count == 20 and per_pod[("WATCH", "secrets", "")].per_pod == 1
    assert per_pod[("POST", "events", "")].per_pod == 4 and per_pod[("DELETE", "pods", "")].per_pod == 1
    assert all(b.verdict == "pass" for b in life.requests), life.requests
    # None of it is at-rest traffic.
    assert {(b.verb, b.resource) for b in report.requests} == {
        ("PUT", "coordination.k8s.io/leases"), ("WATCH", "pods"), ("WATCH", "services"), ("WATCH", "nodes"),
        ("PATCH", "nodes")}
    assert all(b.verdict == "pass" for b in report.requests)
    p50, p99 = life.timing
    assert (p50.verdict, p50.reference, p50.pods) == ("pass", 1.2, 30) and p99.verdict == "too few to judge"
    assert report.ok
    text = shown(report)
    assert "20 pod(s) started in the window, 20 judged whole" in text and "bound_to_running_p50" in text


def test_a_lifecycle_off_the_reference_fails() -> None:
    heavy = {**LIFECYCLE, "requests": [*LIFECYCLE["requests"][:1], {**LIFECYCLE["requests"][1], "per_pod": 2}]}
    report = judge(churn(), ref=reference(lifecycle=heavy))
    verdicts = {(b.verb, b.resource, b.subresource): b.verdict for b in report.lifecycle.requests}
    assert verdicts[("PATCH", "pods", "status")] == "fail"  # 3 per pod, the reference says 2
    assert verdicts[("DELETE", "pods", "")] == "fail"  # sent, and the reference has no row for it
    assert report.lifecycle.timing[0].verdict == "n/a" and not report.ok


def test_only_whole_lifecycles_are_judged() -> None:
    lines = fleet_log(10, 40)
    for i in range(8):  # whole ones, on nodes 0-7
        lines += lifecycle(f"whole-{i}", i, 600 + 10 * i)
    lines += lifecycle("old", 8, 100, end=900)  # began before the window, on node 8
    lines += lifecycle("beside-old", 8, 700)  # its name-less requests cannot be told from old's
    lines += lifecycle("running", 9, 1800, end=None)  # not deleted when the log was read
    report = judge(lines, ref=reference(lifecycle=LIFECYCLE))
    life = report.lifecycle
    assert (life.started, life.judged, life.running, life.shared) == (10, 8, 1, 1)
    per_pod = {(b.verb, b.resource, b.subresource): b for b in life.requests}
    assert per_pod[("POST", "serviceaccounts", "token")].count == 8 and per_pod[("GET", "pods", "")].count == 8
    assert all(b.verdict == "pass" for b in life.requests)
    # No pod started: no lifecycle section.
    assert judge(fleet_log(10, 40), ref=reference(lifecycle=LIFECYCLE)).lifecycle is None


def test_pods_deleted_before_their_first_resync_are_shown_not_judged() -> None:
    lines = fleet_log(10, 40)
    for i in range(8):  # held past the first resync, on nodes 0-7
        lines += lifecycle(f"long-{i}", i, 600 + 10 * i)
    for i in range(4):  # deleted 30 s after their start, on nodes 8 and 9: a GET and a PATCH fewer
        lines += [line for line in lifecycle(f"short-{i}", 8 + i % 2, 700 + 40 * i, end=30) if "-p2" not in line]
    report = judge(lines, ref=reference(lifecycle=LIFECYCLE))
    life = report.lifecycle
    assert (life.started, life.judged, life.short) == (12, 8, 4)
    per_pod = {(b.verb, b.resource, b.subresource): b for b in life.requests}
    assert per_pod[("PATCH", "pods", "status")].count == 24 and per_pod[("POST", "serviceaccounts", "token")].count == 8
    assert all(b.verdict == "pass" for b in life.requests) and report.ok
    assert "4 not judged: their node and namespace had a pod deleted within 90 s" in shown(report)
    # Only short-lived pods: nothing judged per pod, and it says so.
    short = fleet_log(10, 40)
    for i in range(10):
        short += lifecycle(f"short-{i}", i, 600 + 10 * i, end=30)
    life = judge(short, ref=reference(lifecycle=LIFECYCLE)).lifecycle
    assert (life.started, life.judged, life.short) == (10, 0, 10)
    assert {b.verdict for b in life.requests} == {"too few to judge"}


def test_a_watch_kept_for_a_pod_long_gone_is_traffic_at_rest() -> None:
    lines = fleet_log(10, 40) + lifecycle("gone", 3, 60, namespace="old")  # deleted before the window
    # Its ConfigMap watch never stopped: re-opened every 10 s through the window.
    lines += [event(f"leak-{i}", "system:node:hollow-node-3", "watch", "configmaps", 400 + 10 * i,
                    stage="ResponseStarted", namespace="old", name="conf", ip=address(3)) for i in range(150)]
    report = judge(lines, ref=reference(lifecycle=LIFECYCLE))
    assert report.lifecycle is None  # no pod started in the window
    leak = next(b for b in report.requests if b.resource == "configmaps")
    assert leak.count == 150 and leak.reference is None and leak.verdict == "fail" and not report.ok


# Codes, connections, stock kubemark -------------------------------------------------


def test_nodes_that_got_429s_or_5xx_are_shown() -> None:
    lines = fleet_log(10, 40) + [
        event("r1", "system:node:hollow-node-2", "update", "leases", 700, group="coordination.k8s.io",
              ip=address(2), code=429),
        event("r2", "system:node:hollow-node-2", "update", "leases", 701, group="coordination.k8s.io",
              ip=address(2), code=429),
        # A refused watch never opens: it counts as it completes, with its code.
        event("r3", PROXY, "watch", "services", 800, ip=address(4), code=503),
        event("r4", "system:node:hollow-node-5", "get", "pods", 900, namespace="x", name="gone", ip=address(5),
              code=404),
    ]
    report = judge(lines)
    codes = {(c.verb, c.resource, c.code): c for c in report.codes}
    assert codes[("PUT", "coordination.k8s.io/leases", 429)].nodes == ["hollow-node-2"]
    assert codes[("PUT", "coordination.k8s.io/leases", 429)].count == 2
    assert codes[("WATCH", "services", 503)].nodes == ["hollow-node-4"] and codes[("WATCH", "services", 503)].count == 1
    assert report.node_rows[2].codes == {429: 2} and report.node_rows[4].codes == {503: 1}
    text = shown(report)
    assert "nodes that got 429 or 5xx: hollow-node-2 (429 x2), hollow-node-4 (503 x1)" in text
    assert "404" in text and "hollow-node-5 (404" not in text


CONNECTIONS = [{"component": "kubelet", "open": 1, "basis": "measured"},
               {"component": "kube-proxy", "open": 1, "basis": "measured"},
               {"component": "node-problem-detector", "open": 1, "basis": "measured"}]


def test_connections_per_node_are_judged_where_a_node_has_its_own_address() -> None:
    peers = {address(n): 3 for n in range(10)} | {address(6): 2, "127.0.0.1": 7}
    report = judge(fleet_log(10, 40), ref=reference(connections=CONNECTIONS), peers=peers,
                   master_addresses=["127.0.0.1"])
    *components, summary = report.connections
    assert [c.verdict for c in components] == ["n/a"] * 3
    assert (summary.reference, summary.nodes, summary.low, summary.high) == (3, 10, 2, 3)
    assert summary.off == ["hollow-node-6"] and summary.verdict == "fail" and not report.ok
    assert report.node_rows[6].connections == 2 and summary.above == {}
    # A node above the reference is named with when it first held that many.
    above = judge(fleet_log(10, 40), ref=reference(connections=CONNECTIONS), peers=peers | {address(1): 5},
                  peaks={address(1): "2026-12-07T21:40:12+00:00"}, master_addresses=["127.0.0.1"])
    assert above.connections[-1].above == {"hollow-node-1": "2026-12-07T21:40:12+00:00"}
    assert "hollow-node-1 (first at 2026-12-07T21:40:12+00:00)" in shown(above)
    # Not counted, or every node from one address (stock kubemark): n/a, never a pass.
    assert judge(fleet_log(10, 40), ref=reference(connections=CONNECTIONS)).connections[-1].verdict == "n/a"
    stock = judge(fleet_log(10, 40, stock=True), ref=reference(connections=CONNECTIONS), peers={"127.0.0.1": 30},
                  master_addresses=["127.0.0.1"])
    assert stock.connections[-1].verdict == "n/a" and "address of its own" in stock.connections[-1].why
    assert stock.node_rows[0].kube_proxy is None  # nor can its kube-proxy be put to a node


def test_stock_kubemark_fails_the_rows_it_lacks() -> None:
    """No node-problem-detector, no kube-proxy Node watch, no Events: each of these
    rows fails on stock kubemark's traffic, the rest pass as on the fleet."""
    ref = reference(lifecycle=LIFECYCLE)
    columns = {}
    for engine, stock in (("fleet", False), ("stock kubemark", True)):
        lines = fleet_log(10, 40, stock=stock)
        for i in range(20):
            lines += lifecycle(f"pod-{i}", i % 10, 600 + 30 * i, namespace=f"ns-{i % 10}", events=not stock)
        columns[engine] = judge(lines, ref=ref)
    fleet, stock = columns["fleet"], columns["stock kubemark"]
    assert fleet.ok, [b for b in fleet.requests if b.verdict != "pass"]

    def failing(report) -> set[tuple[str, ...]]:
        rows = {("request", b.component, b.verb, b.resource) for b in report.requests if b.verdict == "fail"}
        rows |= {("watch", w.component, w.resource) for w in report.watches if w.verdict == "fail"}
        return rows | {("per pod", b.component, b.verb, b.resource) for b in report.lifecycle.requests
                       if b.verdict == "fail"}

    assert failing(stock) == {("request", "node-problem-detector", "PATCH", "nodes"),
                              ("request", "kube-proxy", "WATCH", "nodes"),
                              ("watch", "kube-proxy", "nodes"),
                              ("per pod", "kubelet", "POST", "events")}
    assert not stock.failing_nodes  # the nodes themselves are heard throughout


# The reference ------------------------------------------------------------------------


MEASURED = """
source: a real v1.36.3 node, scripts/reference
measured: {kubernetes: v1.36.3, node-problem-detector: v1.34.0, containerd: 2.1.4, runc: 1.3.0, date: 2026-12-07,
           command: "python3 scripts/fidelity_reference.py --minutes 25", minutes: 25}
requests:
  - {component: kubelet, verb: PUT, resource: coordination.k8s.io/leases, rate: 5.91, basis: measured}
  - {component: kubelet, verb: PATCH, resource: nodes, subresource: status, rate: 0.2, basis: derived}
watches:
  - {component: kube-proxy, resource: nodes, open: 1, basis: measured}
connections:
  - {component: kubelet, open: 1, basis: measured}
lifecycle:
  pod: pause with a projected token, a ConfigMap and a Secret
  pods: 50
  requests:
    - {component: kubelet, verb: GET, resource: pods, per_pod: 1, basis: measured}
    - {component: kubelet, verb: POST, resource: serviceaccounts, subresource: token, per_pod: 1, basis: measured}
  timing: {bound_to_running_p50: 1.1, bound_to_running_p99: 2.4, unit: s}
"""


def test_a_measured_reference_loads_with_its_stamp_and_basis(tmp_path: Path) -> None:
    path = tmp_path / "reference.yaml"
    path.write_text(MEASURED)
    ref = load_reference(path)
    assert ref.measured is not None and ref.measured.node_problem_detector == "v1.34.0"
    assert "Kubernetes v1.36.3" in ref.describe() and "25 min" in ref.describe()
    assert [r.basis for r in ref.requests] == ["measured", "derived"]
    assert ref.lifecycle is not None and ref.lifecycle.timing is not None
    assert ref.lifecycle.requests[1].key == ("kubelet", "POST", "serviceaccounts", "token")
    assert ref.connections[0].open == 1 and ref.watches[0].resource == "nodes"


@pytest.mark.parametrize(("text", "where"), [
    ("requests:\n  - {component: kubelet, verb: PUT, resource: leases, rate: fast}\n", "requests.0.rate"),
    ("requests:\n  - {component: kubelet, verb: PUT, resource: leases, rate: 1, basis: guessed}\n", "requests.0.basis"),
    ("watches:\n  - {component: kubelet, open: 1}\n", "watches.0.resource"),
    ("requests: [\n", "is not YAML"),
])
def test_a_bad_reference_is_refused_with_its_place(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "reference.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        load_reference(path)


def test_the_packaged_reference_loads() -> None:
    ref = load_reference()
    assert isinstance(ref, Reference) and ref.source
    rates = {r.key: r.rate for r in ref.requests}
    # Measured on a real node (benchmarks/fidelity_reference.py): a lease every 10 s and a bit.
    assert 5.7 <= rates[("kubelet", "PUT", "coordination.k8s.io/leases", "")] <= 6.0
    assert ("node-problem-detector", "PATCH", "nodes", "status") in rates
    assert sum(w.open for w in ref.watches if w.component == "kubelet") == 5
    # kube-proxy's own Node (its NodeManager), Services, EndpointSlices, ServiceCIDRs.
    assert sum(w.open for w in ref.watches if w.component == "kube-proxy") == 4
    assert ("kube-proxy", "WATCH", "nodes", "") in rates


# The command, on the fake provider's cluster ----------------------------------------


@pytest.mark.parametrize(("flags", "needle"), [
    ({"nodes": 0, "audit_nodes": True}, "cluster c1 has no hollow nodes: fidelity has nothing to judge"),
    ({"nodes": 2}, "cluster c1 was started without audit_nodes"),
])
def test_a_cluster_fidelity_cannot_judge_is_one_line_before_any_window(fake_world, tmp_path, monkeypatch, capsys,
                                                                       flags, needle) -> None:
    home = tmp_path / "home"
    cluster.start(settings(**flags), home, quiet())
    result = kubemark_up(monkeypatch, capsys, home, "fidelity", "--name", "c1", "--minutes", "60")
    assert_one_line_error(result, 2, needle)


def test_connections_are_judged_by_the_most_open_at_once_over_the_window() -> None:
    from kubemark_up.run.fidelity.measure import first_at_most, most_open

    # node-problem-detector's connection idles out between its PATCHes: one sample misses it.
    samples = [{"127.1.0.1": 3, "127.1.0.2": 2}, None, {"127.1.0.1": 2, "127.1.0.2": 3, "127.1.0.3": 1}]
    assert most_open(samples) == {"127.1.0.1": 3, "127.1.0.2": 3, "127.1.0.3": 1}
    assert most_open([None, None]) is None and most_open([]) is None
    stamped = list(zip(["t0", "t1", "t2"], samples, strict=True))
    assert first_at_most(stamped, most_open(samples) or {}) == {"127.1.0.1": "t0", "127.1.0.2": "t2", "127.1.0.3": "t2"}
