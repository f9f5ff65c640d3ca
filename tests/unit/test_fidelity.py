"""The fidelity analysis on audit events made here: what is counted, what is judged."""

from __future__ import annotations

import datetime as dt
import json

from kubemark_up.run.fidelity import analyse, load_reference

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
NPD = "system:kubemark-up:node-problem-detector"


def event(audit_id: str, user: str, verb: str, resource: str, at: float, *, stage: str = "ResponseComplete",
          ended: float | None = None, group: str = "", subresource: str = "") -> str:
    ref = {"resource": resource, "apiGroup": group, **({"subresource": subresource} if subresource else {})}
    return json.dumps({
        "auditID": audit_id, "stage": stage, "verb": verb, "user": {"username": user}, "objectRef": ref,
        "requestReceivedTimestamp": (T0 + dt.timedelta(seconds=at)).isoformat().replace("+00:00", "Z"),
        "stageTimestamp": (T0 + dt.timedelta(seconds=ended if ended is not None else at)).isoformat().replace("+00:00", "Z"),
    })


def fleet_log(nodes: int, minutes: int) -> list[str]:
    """What `nodes` faithful nodes send over `minutes` minutes: a lease every 10.17 s,
    one pods watch each living 450 s, and a controller's requests that are no node's."""
    lines = []
    for n in range(nodes):
        user = f"system:node:n{n}"
        t = 0.0
        while t < minutes * 60:
            lines.append(event(f"l{n}-{t}", user, "update", "leases", t, group="coordination.k8s.io"))
            t += 10.17
        for i, start in enumerate(range(0, minutes * 60, 450)):
            lines.append(event(f"w{n}-{i}", user, "watch", "pods", start, stage="ResponseStarted"))
            if start + 450 < minutes * 60:
                lines.append(event(f"w{n}-{i}", user, "watch", "pods", start, ended=start + 450))
    lines.append(event("c1", "system:kube-controller-manager", "update", "leases", 30, group="coordination.k8s.io"))
    return lines


def reference(**extra: list) -> dict:
    return {"source": "test",
            "requests": [{"component": "kubelet", "verb": "PUT", "resource": "coordination.k8s.io/leases", "rate": 5.9},
                         {"component": "kubelet", "verb": "WATCH", "resource": "pods", "rate": 0.1333}],
            "watches": [{"component": "kubelet", "resource": "pods", "open": 1}], **extra}


def test_faithful_nodes_pass() -> None:
    report = analyse(fleet_log(10, 40), start=T0 + dt.timedelta(minutes=5), end=T0 + dt.timedelta(minutes=35),
                     npd_user=NPD, reference=reference())
    buckets = {(b.verb, b.resource): b for b in report.requests}
    assert report.nodes == 10 and report.ok
    lease = buckets[("PUT", "coordination.k8s.io/leases")]
    assert lease.verdict == "pass" and abs(lease.rate - 60 / 10.17) < 0.01
    watch = buckets[("WATCH", "pods")]
    assert watch.steady_rate == round(60 / 450, 4) and watch.verdict == "pass"
    assert report.watches[0].open == 10 and report.watches[0].verdict == "pass"


def test_a_slow_lease_and_a_missing_watch_fail() -> None:
    lines = [line for line in fleet_log(10, 40) if '"w3-' not in line]  # node 3 holds no pods watch
    slow = analyse(lines, start=T0 + dt.timedelta(minutes=5), end=T0 + dt.timedelta(minutes=35), npd_user=NPD,
                   reference={**reference(), "requests": [{"component": "kubelet", "verb": "PUT",
                                                           "resource": "coordination.k8s.io/leases", "rate": 8.0}]})
    assert not slow.ok
    assert next(b for b in slow.requests if b.verb == "PUT").verdict == "fail"
    assert slow.watches[0].open == 9 and slow.watches[0].verdict == "fail"


def test_a_short_window_judges_only_what_it_can() -> None:
    report = analyse(fleet_log(2, 3), start=T0 + dt.timedelta(seconds=30), end=T0 + dt.timedelta(minutes=2),
                     npd_user=NPD, reference=reference())
    buckets = {(b.verb, b.resource): b for b in report.requests}
    assert buckets[("WATCH", "pods")].verdict == "too few to judge"
    assert buckets[("PUT", "coordination.k8s.io/leases")].verdict == "too few to judge"  # 2 nodes x 1.5 min
    assert report.ok


def test_requests_a_real_node_does_not_send_fail() -> None:
    lines = fleet_log(10, 40) + [event(f"g{i}", "system:node:n1", "get", "nodes", 400 + i) for i in range(200)]
    report = analyse(lines, start=T0 + dt.timedelta(minutes=5), end=T0 + dt.timedelta(minutes=35), npd_user=NPD,
                     reference=reference())
    get = next(b for b in report.requests if b.verb == "GET")
    assert get.reference is None and get.verdict == "fail" and not report.ok


def test_the_packaged_reference_is_section_7() -> None:
    ref = load_reference()
    rates = {(r["component"], r["verb"], r["resource"], r.get("subresource", "")): r["rate"] for r in ref["requests"]}
    # Measured on a real node (benchmarks/fidelity_reference.py): a lease every 10 s and a bit.
    assert 5.7 <= rates[("kubelet", "PUT", "coordination.k8s.io/leases", "")] <= 6.0
    assert rates[("node-problem-detector", "PATCH", "nodes", "status")] == 0.2
    assert sum(w["open"] for w in ref["watches"] if w["component"] == "kubelet") == 5
    assert sum(w["open"] for w in ref["watches"] if w["component"] == "kube-proxy") == 4  # its own Node too
