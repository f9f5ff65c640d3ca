"""The counting behind the measured fidelity reference (tests/support/nodetraffic.py), on
audit events, socket listings and watch lines made here."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter

import yaml

from kubemark_up import pki
from tests.support import nodetraffic

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
NODE = "system:node:root-node"


def _stamp(seconds: float) -> str:
    return (T0 + dt.timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


def event(audit_id: str, user: str, verb: str, resource: str, at: float, *, stage: str = "ResponseComplete",
          ended: float | None = None, group: str = "", subresource: str = "", namespace: str = "") -> str:
    ref = {"resource": resource, "apiGroup": group, "namespace": namespace,
           **({"subresource": subresource} if subresource else {})}
    return json.dumps({"auditID": audit_id, "stage": stage, "verb": verb, "user": {"username": user},
                       "objectRef": ref, "requestReceivedTimestamp": _stamp(at),
                       "stageTimestamp": _stamp(ended if ended is not None else at)})


def test_components_are_told_apart_by_identity_and_others_skipped():
    lines = [
        event("1", NODE, "update", "leases", 10, group="coordination.k8s.io"),
        event("2", "system:kube-proxy", "watch", "nodes", 11, stage="ResponseStarted"),
        event("3", pki.NPD_USER, "patch", "nodes", 12, subresource="status"),
        event("4", "system:kube-scheduler", "create", "pods", 13, subresource="binding"),
        event("5", NODE, "get", "pods", 14, stage="RequestReceived"),
        "{torn",
    ]
    found = nodetraffic.parse(lines)
    assert [(r.component, r.verb, r.resource, r.subresource) for r in found] == [
        ("kubelet", "PUT", "coordination.k8s.io/leases", ""),
        ("kube-proxy", "WATCH", "nodes", ""),
        ("node-problem-detector", "PATCH", "nodes", "status"),
    ]


def test_a_watch_counts_when_opened_and_other_requests_when_done_inside_the_window():
    lines = [
        event("w1", NODE, "watch", "pods", 5, stage="ResponseStarted"),  # opened before the window
        event("w1", NODE, "watch", "pods", 5, ended=400),
        event("w2", NODE, "watch", "pods", 400, stage="ResponseStarted"),
        event("w2", NODE, "watch", "pods", 400, ended=900),  # ends after the window: not counted again
        event("l1", NODE, "update", "leases", 30, group="coordination.k8s.io"),
        event("l2", NODE, "update", "leases", 700, group="coordination.k8s.io"),  # after the window
        event("p1", NODE, "get", "pods", 40, namespace="churn"),
    ]
    requests = nodetraffic.parse(lines)
    start, end = T0 + dt.timedelta(seconds=10), T0 + dt.timedelta(seconds=610)
    assert nodetraffic.count(requests, start, end) == Counter({
        ("kubelet", "WATCH", "pods", ""): 1, ("kubelet", "PUT", "coordination.k8s.io/leases", ""): 1,
        ("kubelet", "GET", "pods", ""): 1,
    })
    assert nodetraffic.count(requests, start, end, namespace="churn") == Counter({("kubelet", "GET", "pods", ""): 1})
    assert nodetraffic.open_watches(requests, end) == Counter({("kubelet", "pods"): 1})
    assert nodetraffic.open_watches(requests, T0 + dt.timedelta(seconds=950)) == Counter()


def test_connections_are_counted_from_the_apiservers_side_by_the_peers_process():
    listing = "\n".join([
        '0 0 10.245.0.1:6443 10.245.0.1:40001 users:(("kube-apiserver",pid=10,fd=7))',
        '0 0 10.245.0.1:40001 10.245.0.1:6443 users:(("kubelet",pid=20,fd=9))',
        '0 0 10.245.0.1:6443 10.245.0.1:40002 users:(("kube-apiserver",pid=10,fd=8))',
        '0 0 10.245.0.1:40002 10.245.0.1:6443 users:(("node-problem-d",pid=30,fd=3))',
        '0 0 10.245.0.1:6443 10.245.0.2:50000 users:(("kube-apiserver",pid=10,fd=11))',  # from the namespace
        '0 0 10.245.0.1:6443 10.245.0.1:40003 users:(("kube-apiserver",pid=10,fd=12))',
        '0 0 10.245.0.1:40003 10.245.0.1:6443 users:(("kube-controller",pid=40,fd=3))',  # not a node's
        '0 0 127.0.0.1:2379 127.0.0.1:40004 users:(("etcd",pid=50,fd=3))',
    ])
    rows = nodetraffic.parse_ss(listing)
    assert rows[1] == ("10.245.0.1:40001", "10.245.0.1:6443", 20)
    found = nodetraffic.connections(rows, "10.245.0.1:6443", {20: "kubelet", 30: "node-problem-detector"},
                                    {"10.245.0.2": "kube-proxy"})
    assert found == Counter({"kubelet": 1, "node-problem-detector": 1, "kube-proxy": 1})


def test_bound_to_running_from_the_watch_lines_as_received():
    times = nodetraffic.PodTimes()
    for line, at in [("churn-0  Pending", 1.0), ("churn-0 root-node Pending", 1.5), ("churn-1  Pending", 2.0),
                     ("churn-0 root-node Running", 2.4), ("churn-1 root-node Pending", 2.5),
                     ("churn-0 root-node Running", 9.0), ("churn-1 root-node Running", 3.7)]:
        times.see(line, at)
    assert sorted(round(v, 3) for v in times.bound_to_running()) == [0.9, 1.2]
    assert nodetraffic.percentile([0.9, 1.2, 3.0], 50) == 1.2
    assert nodetraffic.percentile([0.9, 1.2, 3.0], 99) == 3.0


def test_kubelet_reported_start_from_the_pods_status():
    pod = {"status": {"conditions": [{"type": "PodScheduled", "lastTransitionTime": "2026-01-01T00:00:01Z"}],
                      "containerStatuses": [{"state": {"running": {"startedAt": "2026-01-01T00:00:03Z"}}}]}}
    assert nodetraffic.kubelet_reported(pod) == 2.0
    assert nodetraffic.kubelet_reported({"status": {}}) is None


def test_the_reference_document_keeps_the_schema_and_says_each_rows_basis():
    rest = nodetraffic.AtRest(
        minutes=25, counts=Counter({("kubelet", "PUT", "coordination.k8s.io/leases", ""): 150,
                                    ("node-problem-detector", "PATCH", "nodes", "status"): 5,
                                    ("kubelet", "WATCH", "pods", ""): 3}),
        watches=Counter({("kubelet", "pods"): 1, ("kube-proxy", "nodes"): 1}),
        sockets=Counter({"kubelet": 1, "kube-proxy": 1}))
    life = nodetraffic.Churn(pods=4, counts=Counter({("kubelet", "GET", "pods", ""): 8,
                                                     ("kubelet", "POST", "serviceaccounts", "token"): 4}),
                             bound_to_running=[0.8, 0.9, 1.0, 1.4], kubelet_reported=[1.0, 1.0, 1.0, 2.0])
    stamp = {"kubernetes": "v1.36.3", "node-problem-detector": "v1.34.0", "containerd": "1.6.20~ds1",
             "runc": "1.1.5+ds1", "date": "2026-12-07", "command": "python3 benchmarks/fidelity_reference.py",
             "minutes": 25}
    doc = nodetraffic.reference(rest, life, stamp, "one real node: a test")
    parsed = yaml.safe_load(nodetraffic.render(doc, ["a comment"]))
    assert parsed == doc
    rows = {(r["component"], r["verb"], r["resource"], r.get("subresource", "")): r for r in parsed["requests"]}
    assert rows[("kubelet", "PUT", "coordination.k8s.io/leases", "")] == {
        "component": "kubelet", "verb": "PUT", "resource": "coordination.k8s.io/leases", "rate": 6.0,
        "basis": "measured"}
    assert rows[("node-problem-detector", "PATCH", "nodes", "status")]["rate"] == 0.2
    # A watch's rate is derived from the watches open, also one that was not re-opened in the window.
    assert rows[("kube-proxy", "WATCH", "nodes", "")] == {
        "component": "kube-proxy", "verb": "WATCH", "resource": "nodes", "rate": 0.1333, "basis": "derived"}
    assert parsed["lifecycle"]["requests"] == [
        {"component": "kubelet", "verb": "GET", "resource": "pods", "per_pod": 2.0, "basis": "measured"},
        {"component": "kubelet", "verb": "POST", "resource": "serviceaccounts", "subresource": "token",
         "per_pod": 1.0, "basis": "measured"},
    ]
    assert parsed["lifecycle"]["timing"]["bound_to_running_p50"] == 0.9
    assert parsed["lifecycle"]["timing"]["bound_to_running_p99"] == 1.4
    assert parsed["measured"]["containerd"] == "1.6.20~ds1"
    assert all(row["basis"] in ("measured", "derived") for section in ("requests", "watches", "connections")
               for row in parsed[section])
