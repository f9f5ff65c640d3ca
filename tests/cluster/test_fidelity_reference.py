"""The fidelity reference's measurement (benchmarks/fidelity_reference.py) on a real node:
the real kubelet, kube-proxy and node-problem-detector of tests/support/realnode.py, a
short window at rest and a small churn. What is checked is that the reference holds the
buckets a real node must have, not their numbers (those are the benchmark's).

Needs root, and the root cluster's machine lock: it runs before the session's root
cluster (tests/conftest.py) is made, as the tier runs its files in order."""

from __future__ import annotations

import os

import pytest
import yaml

from tests.support import nodetraffic
from tests.support.cli import CLI
from tests.support.realnode import RealNode

# Longer than the 5-minute heartbeats of the kubelet's node status and of
# node-problem-detector's conditions, so that the window holds one of each.
MINUTES = 6
PODS = 5


@pytest.fixture(scope="module")
def reference(tmp_path_factory, bin_dir) -> dict:
    if os.geteuid() != 0:
        pytest.fail("the real node needs root (containerd, runc, a bridge, a network namespace); CI runs as root")
    folder = tmp_path_factory.mktemp("real-node")
    node = RealNode(folder=folder / "node", cli=CLI(home=folder / "home", bin_dir=bin_dir))
    node.start()
    try:
        rest = nodetraffic.at_rest(node, MINUTES, progress=lambda _: None)
        life = nodetraffic.churn(node, PODS, hold=10, progress=lambda _: None)
        stamp = {**nodetraffic.versions(node), "date": "test", "command": "tests/cluster", "minutes": MINUTES}
    finally:
        node.stop()
    assert not (folder / "node").exists()
    # Through the file's own form: what the script writes is what is read back.
    return yaml.safe_load(nodetraffic.render(nodetraffic.reference(rest, life, stamp, "a test"), []))


def _rows(doc: dict) -> dict:
    return {(r["component"], r["verb"], r["resource"], r.get("subresource", "")): r for r in doc["requests"]}


def test_the_node_is_stamped_with_the_versions_that_ran(reference):
    measured = reference["measured"]
    assert measured["kubernetes"] == "v1.36.3"
    assert measured["node-problem-detector"] == "v1.34.0"
    assert measured["containerd"] != "unknown" and measured["runc"] != "unknown"


def test_at_rest_the_kubelet_renews_its_lease_and_reports_its_status(reference):
    rows = _rows(reference)
    lease = rows[("kubelet", "PUT", "coordination.k8s.io/leases", "")]
    assert lease["basis"] == "measured" and lease["rate"] > 0
    assert rows[("kubelet", "PATCH", "nodes", "status")]["rate"] > 0
    assert rows[("node-problem-detector", "PATCH", "nodes", "status")]["rate"] > 0


def test_the_watches_of_a_real_node_include_kube_proxys_own_node(reference):
    watches = {(w["component"], w["resource"]): w["open"] for w in reference["watches"]}
    for resource in ("nodes", "pods", "services", "storage.k8s.io/csidrivers", "node.k8s.io/runtimeclasses"):
        assert watches[("kubelet", resource)] == 1, resource
    for resource in ("nodes", "services", "discovery.k8s.io/endpointslices", "networking.k8s.io/servicecidrs"):
        assert watches[("kube-proxy", resource)] == 1, resource
    rows = _rows(reference)
    assert rows[("kube-proxy", "WATCH", "nodes", "")]["basis"] == "derived"


def test_each_component_holds_a_connection_to_the_apiserver(reference):
    connections = {c["component"]: c["open"] for c in reference["connections"]}
    assert set(connections) == {"kubelet", "kube-proxy", "node-problem-detector"}
    assert all(n >= 1 for n in connections.values())


def test_a_pods_lifecycle_is_counted_per_pod(reference):
    life = reference["lifecycle"]
    assert life["pods"] == PODS
    rows = {(r["component"], r["verb"], r["resource"], r.get("subresource", "")): r["per_pod"]
            for r in life["requests"]}
    assert rows[("kubelet", "GET", "pods", "")] >= 1
    assert rows[("kubelet", "PATCH", "pods", "status")] >= 1
    assert rows[("kubelet", "POST", "serviceaccounts", "token")] >= 1
    assert rows[("kubelet", "POST", "events", "")] >= 1
    assert rows[("kubelet", "WATCH", "configmaps", "")] >= 1  # its own, and kube-root-ca.crt's
    assert rows[("kubelet", "WATCH", "secrets", "")] >= 1
    assert rows[("kubelet", "DELETE", "pods", "")] == 1.0
    timing = life["timing"]
    assert 0 < timing["bound_to_running_p50"] <= timing["bound_to_running_p99"]
    assert timing["unit"] == "s"
