"""Hollow nodes as pods on a real root cluster (tests/support/rootcluster.py: a real kubelet
with containerd, runc and a CNI bridge, and a registry on loopback): the pods run as
real containers and register Ready nodes with the kubemark master, each with its own
identity from the kubelet's TLS bootstrap. These are about stock kubemark's pods (its
three containers, their logs): they run with node_engine kubemark; the fleet's pods
have a test of their own, which says --node-engine fleet."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.support.cli import CLI, assert_one_line_error
from tests.support.rootcluster import GATEWAY, NODE, RootCluster

NODES = 3
SHARED = "hollow-shared"  # the namespace of the cluster the read-only tests share


def pods_config(path: Path, root: RootCluster, image: str, **pods: object) -> Path:
    path.write_text(yaml.safe_dump({
        "hollow_nodes": "pods",
        "local": {"address": GATEWAY},  # the pods reach the master on the bridge's address
        "pods": {"kubeconfig": str(root.kubeconfig), "image": image, **pods},
    }))
    return path


def _ki(quantity: str) -> int:
    """A memory quantity as the apiserver writes it back (100Mi for 102400Ki), in KiB."""
    for suffix, factor in (("Ki", 1), ("Mi", 1024), ("Gi", 1024 * 1024)):
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    return int(quantity) // 1024


def _tag(pushed: str) -> str:
    return pushed.split("@")[0] + ":test"


@pytest.fixture(scope="module")
def pods_cluster(root_cluster, hollow_image, tmp_path_factory, bin_dir):
    folder = tmp_path_factory.mktemp("pods-cluster")
    cli = CLI(home=folder / "home", bin_dir=bin_dir, engine="kubemark")
    # Its own namespace: the tests that start clusters of their own use the default one.
    config = pods_config(folder / "config.yaml", root_cluster, _tag(hollow_image), namespace=SHARED)
    result = cli.run("start", "--name", "pods", "--nodes", str(NODES), "--config", str(config), timeout=900)
    assert result.returncode == 0, result.stderr
    yield cli, result
    cli.run("stop", "--name", "pods", timeout=600)


def _kubectl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True,
                          timeout=60)


def _root_pods(root: RootCluster, namespace: str = "kubemark") -> list[dict]:
    got = root.kubectl("-n", namespace, "get", "pods", "-o", "json")
    return json.loads(got.stdout)["items"] if got.returncode == 0 else []


def test_hollow_nodes_run_as_pods_and_are_ready(pods_cluster, root_cluster, hollow_image):
    cli, start = pods_cluster
    assert f"{NODES} hollow nodes Ready" in start.stdout
    assert "hollow-node pods Running" in start.stderr
    master = cli.home / "pods" / "kubeconfig.kubemark"
    nodes = json.loads(_kubectl(master, "get", "nodes", "-o", "json").stdout)["items"]
    assert sorted(n["metadata"]["name"] for n in nodes) == [f"hollow-node-{i}" for i in range(NODES)]
    assert all(any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"]) for n in nodes)
    pods = _root_pods(root_cluster, SHARED)
    assert sorted(p["metadata"]["name"] for p in pods) == [f"hollow-node-{i}" for i in range(NODES)]
    for pod in pods:
        assert pod["spec"]["nodeName"] == NODE and pod["status"]["phase"] == "Running"
        assert {c["name"] for c in pod["spec"]["containers"]} == {
            "hollow-kubelet", "hollow-proxy", "hollow-node-problem-detector"}
        # The pods run the image by its digest, the one the registry gave at push.
        assert all(c["image"] == hollow_image for c in pod["spec"]["containers"])
        # Requests as the legacy scripts sized them (proxy: 100 MiB + 50 KiB per node).
        requests = {c["name"]: c["resources"]["requests"] for c in pod["spec"]["containers"]}
        assert requests["hollow-kubelet"]["cpu"] == "40m" and _ki(requests["hollow-kubelet"]["memory"]) == 102400
        assert requests["hollow-proxy"]["cpu"] == "20m"
        assert _ki(requests["hollow-proxy"]["memory"]) == 102400 + 50 * NODES
    state = json.loads((cli.home / "pods" / "state.json").read_text())
    assert state["image"]["digest"] == hollow_image.split("@")[1]


def test_each_hollow_node_has_its_own_identity(pods_cluster, root_cluster, tmp_path):
    cli, _ = pods_cluster
    master = cli.home / "pods" / "kubeconfig.kubemark"
    csrs = json.loads(_kubectl(master, "get", "csr", "-o", "json").stdout)["items"]
    assert len(csrs) >= NODES
    for csr in csrs:
        assert csr["spec"]["username"].startswith("system:bootstrap:")
        assert any(c["type"] == "Approved" for c in csr["status"]["conditions"])
    # hollow-node-0's own certificate, from its pod's emptyDir on the root node's disk.
    pod = next(p for p in _root_pods(root_cluster, SHARED) if p["metadata"]["name"] == "hollow-node-0")
    # (kubelet-client-current.pem links to it by its path inside the container)
    pem = next((root_cluster.folder / "kubelet" / "pods" / pod["metadata"]["uid"]).rglob("kubelet-client-2*.pem"))
    server = yaml.safe_load(master.read_text())["clusters"][0]["cluster"]
    own = tmp_path / "node0.kubeconfig"
    own.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": server}],
        "users": [{"name": "u", "user": {"client-certificate-data": base64.b64encode(pem.read_bytes()).decode(),
                                         "client-key-data": base64.b64encode(pem.read_bytes()).decode()}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))
    assert _kubectl(own, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").stdout == "system:node:hollow-node-0"
    assert _kubectl(own, "get", "node", "hollow-node-0").returncode == 0
    patch = json.dumps({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Stolen"}]}})
    other = _kubectl(own, "patch", "node", "hollow-node-1", "--subresource=status", "-p", patch)
    assert other.returncode != 0 and "forbidden" in other.stderr.lower()


def test_a_deployment_runs_on_the_hollow_nodes(pods_cluster):
    cli, _ = pods_cluster
    master = cli.home / "pods" / "kubeconfig.kubemark"
    assert _kubectl(master, "create", "deployment", "web", "--image=registry.k8s.io/pause:3.10", "--replicas=4").returncode == 0
    deadline, pods = time.monotonic() + 120, []
    while time.monotonic() < deadline:
        pods = json.loads(_kubectl(master, "get", "pods", "-l", "app=web", "-o", "json").stdout)["items"]
        if len(pods) == 4 and all(p["status"].get("phase") == "Running" for p in pods):
            break
        time.sleep(1)
    assert len(pods) == 4 and all(p["status"].get("phase") == "Running" for p in pods)
    assert {p["spec"]["nodeName"] for p in pods} <= {f"hollow-node-{i}" for i in range(NODES)}
    assert _kubectl(master, "delete", "deployment", "web", "--wait=false").returncode == 0


def test_pod_for_node_answers_from_the_root_cluster(pods_cluster, root_cluster):
    cli, _ = pods_cluster
    result = cli.run("pod-for-node", "hollow-node-1", "--name", "pods", "-o", "json")
    assert result.returncode == 0, result.stderr
    where = json.loads(result.stdout)
    assert where["where"].startswith(f"pod {SHARED}/hollow-node-1 on root node {NODE}, pod IP 10.244.0.")
    assert {c["container"] for c in where["processes"]} == {"hollow-kubelet", "hollow-proxy",
                                                            "hollow-node-problem-detector"}
    logs = next(c["logs"] for c in where["processes"] if c["container"] == "hollow-kubelet")
    shown = subprocess.run(logs.split(), capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "hollow-node-1" in shown.stdout + shown.stderr
    # By one of its addresses, as the kubemark master knows them.
    node = json.loads(_kubectl(cli.home / "pods" / "kubeconfig.kubemark", "get", "node", "hollow-node-1", "-o",
                               "json").stdout)
    address = next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")
    by_address = cli.run("pod-for-node", address, "--name", "pods", "-o", "json")
    assert by_address.returncode == 0, by_address.stderr
    assert json.loads(by_address.stdout)["node"] == "hollow-node-1"
    assert_one_line_error(cli.run("pod-for-node", "hollow-node-7", "--name", "pods"), 1, "no hollow node 'hollow-node-7'")


def test_logs_collects_every_container(pods_cluster, tmp_path):
    cli, _ = pods_cluster
    out = tmp_path / "logs"
    result = cli.run("logs", "--name", "pods", "--out", str(out), timeout=300)
    assert result.returncode == 0, result.stderr
    names = {p.name for p in out.iterdir()}
    for i in range(NODES):
        for container in ("hollow-kubelet", "hollow-proxy", "hollow-node-problem-detector"):
            assert f"hollow-node-{i}.{container}.log" in names
    assert "kube-apiserver.log" in names
    assert (out / "hollow-node-0.hollow-kubelet.log").stat().st_size > 0


def test_stop_deletes_only_what_start_made(root_cluster, hollow_image, tmp_path, bin_dir):
    # A namespace that was there, holding an object of someone else's.
    namespace = "shared-root"
    assert root_cluster.kubectl("create", "namespace", namespace).returncode == 0
    assert root_cluster.kubectl("-n", namespace, "create", "configmap", "theirs", "--from-literal=a=b").returncode == 0
    cli = CLI(home=tmp_path / "home", bin_dir=bin_dir, engine="kubemark")
    config = pods_config(tmp_path / "c.yaml", root_cluster, hollow_image, namespace=namespace)
    try:
        assert cli.run("start", "--name", "shared", "--nodes", "1", "--config", str(config), timeout=900).returncode == 0
        assert len(_root_pods(root_cluster, namespace)) == 1
        stop = cli.run("stop", "--name", "shared", timeout=600)
        assert stop.returncode == 0, stop.stderr
        assert _root_pods(root_cluster, namespace) == []
        kinds = root_cluster.kubectl("-n", namespace, "get", "statefulsets,secrets,configmaps", "-o", "name").stdout.split()
        assert "configmap/theirs" in kinds
        assert not any(name.startswith(("statefulset.apps/hollow-node", "secret/hollow-node", "configmap/hollow-node"))
                       for name in kinds)
    finally:
        root_cluster.kubectl("delete", "namespace", namespace, "--wait=true", timeout=180)


def test_start_killed_while_it_prepares_the_pods_is_cleaned_by_stop(root_cluster, hollow_image, tmp_path, bin_dir):
    cli = CLI(home=tmp_path / "home", bin_dir=bin_dir, engine="kubemark")
    config = pods_config(tmp_path / "c.yaml", root_cluster, hollow_image)
    start = cli.popen("start", "--name", "killed", "--nodes", "2", "--config", str(config))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and root_cluster.kubectl("get", "namespace", "kubemark").returncode != 0:
        time.sleep(0.2)
    start.send_signal(signal.SIGKILL)
    start.wait(timeout=10)
    result = cli.run("stop", "--name", "killed", timeout=600)
    assert result.returncode == 0, result.stderr
    assert root_cluster.kubectl("get", "namespace", "kubemark").returncode != 0
    assert _root_pods(root_cluster) == []


def test_a_master_only_cluster_makes_nothing_on_the_root_cluster(root_cluster, tmp_path, bin_dir):
    cli = CLI(home=tmp_path / "home", bin_dir=bin_dir, engine="kubemark")
    config = pods_config(tmp_path / "c.yaml", root_cluster, "unused")
    result = cli.run("start", "--name", "empty", "--nodes", "0", "--config", str(config), timeout=300)
    try:
        assert result.returncode == 0, result.stderr
        assert "master-only" in result.stdout
        assert root_cluster.kubectl("get", "namespace", "kubemark").returncode != 0
    finally:
        assert cli.run("stop", "--name", "empty").returncode == 0
    negative = cli.run("start", "--name", "empty", "--nodes", "-2", "--config", str(config))
    assert_one_line_error(negative, 2, "nodes: Input should be greater than or equal to 0")


@pytest.mark.parametrize("case", ["missing", "garbage", "nowhere", "context", "no-image"])
def test_bad_root_cluster_input_is_one_line(case, root_cluster, hollow_image, tmp_path, bin_dir):
    cli = CLI(home=tmp_path / "home", bin_dir=bin_dir, engine="kubemark")
    kubeconfig, extra, needle = root_cluster.kubeconfig, {}, ""
    if case == "missing":
        kubeconfig, needle = tmp_path / "none", "does not exist"
    elif case == "garbage":
        kubeconfig, needle = tmp_path / "garbage", "cannot be read"
        kubeconfig.write_text("{not: [yaml")
    elif case == "nowhere":
        kubeconfig, needle = tmp_path / "nowhere", "did not answer (connection refused)"
        config = yaml.safe_load(root_cluster.kubeconfig.read_text())
        config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:9"
        kubeconfig.write_text(yaml.safe_dump(config))
    elif case == "context":
        extra, needle = {"context": "no-such-context"}, "no-such-context"
    config = pods_config(tmp_path / "c.yaml", root_cluster, hollow_image, kubeconfig=str(kubeconfig), **extra)
    if case == "no-image":
        data = yaml.safe_load(config.read_text())
        del data["pods"]["image"]
        config.write_text(yaml.safe_dump(data))
        needle = "pods.image is not set"
    result = cli.run("start", "--name", "bad", "--nodes", "1", "--config", str(config), timeout=300)
    assert_one_line_error(result, 1 if case == "nowhere" else 2, needle)
    assert not (cli.home / "bad").exists()


def test_pods_with_the_master_over_ssh(root_cluster, hollow_image, sshd, tmp_path, bin_dir):
    """The pods engine with the preexisting provider: the master on the SSH host, at an
    address the pods reach (this machine's bridge address, as the host is this machine)."""
    cli = CLI(home=tmp_path / "home", bin_dir=bin_dir, engine="kubemark")
    remote_root = sshd.home / f"kmup-pods-{os.getpid()}"
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "provider": "preexisting", "hollow_nodes": "pods",
        "preexisting": {"host": sshd.host, "port": sshd.port, "user": sshd.user, "identity_file": str(sshd.client_key),
                        "known_hosts": str(sshd.known_hosts), "remote_root": str(remote_root), "address": GATEWAY},
        "pods": {"kubeconfig": str(root_cluster.kubeconfig), "image": hollow_image},
    }))
    result = cli.run("start", "--name", "sshpods", "--nodes", "2", "--config", str(config), timeout=900)
    try:
        assert result.returncode == 0, result.stderr
        assert "2 hollow nodes Ready" in result.stdout
        state = json.loads((cli.home / "sshpods" / "state.json").read_text())
        assert state["endpoint"] == f"https://{GATEWAY}:{state['ports']['apiserver']}"
        # The master runs on the SSH host; the kubemark processes are in the root cluster's pods.
        assert not any(r["role"] in ("kubelet", "proxy") for r in state["processes"].values())
        assert len(_root_pods(root_cluster)) == 2
    finally:
        stop = cli.run("stop", "--name", "sshpods", timeout=600)
    assert stop.returncode == 0, stop.stderr
    assert not remote_root.exists()
    assert root_cluster.kubectl("get", "namespace", "kubemark").returncode != 0


def _subject(pem: bytes, kind: str) -> str:
    """The subject of a PEM CSR (kind req) or certificate (x509), as openssl prints it."""
    shown = subprocess.run(["openssl", kind, "-noout", "-subject", "-nameopt", "RFC2253"], input=pem,
                           capture_output=True, timeout=30)
    assert shown.returncode == 0, shown.stderr
    return shown.stdout.decode().strip().removeprefix("subject=").strip()


def test_fleet_pods_carry_many_nodes_each_with_its_own_identity(root_cluster, hollow_image, tmp_path, bin_dir):
    """node_engine: fleet on the root cluster: 2 kubemark-fleet pods carry 5 nodes (3 + 2),
    every node bootstrapped to a certificate of its own and sending as itself."""
    nodes, per_pod = 5, 3
    cli = CLI(home=tmp_path / "home", bin_dir=bin_dir, engine="kubemark")
    config = pods_config(tmp_path / "c.yaml", root_cluster, hollow_image, nodes_per_pod=per_pod)
    start = cli.run("start", "--name", "fleetpods", "--nodes", str(nodes), "--config", str(config),
                    "--node-engine", "fleet", "--audit-nodes", timeout=900, KUBEMARK_UP_FLEET_START_WINDOW="2")
    try:
        assert start.returncode == 0, start.stderr
        assert f"{nodes} hollow nodes Ready" in start.stdout
        assert "nodes in fleet pods Running" in start.stderr
        master = cli.home / "fleetpods" / "kubeconfig.kubemark"
        listed = json.loads(_kubectl(master, "get", "nodes", "-o", "json").stdout)["items"]
        assert sorted(n["metadata"]["name"] for n in listed) == sorted(f"hollow-node-{i}" for i in range(nodes))
        for node in listed:
            assert any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])
            index = int(node["metadata"]["name"].rsplit("-", 1)[1])
            # A unique InternalIP from the benchmarking range, by the node's index.
            assert {"type": "InternalIP", "address": f"198.18.0.{index + 1}"} in node["status"]["addresses"]
            assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.36.3"

        pods = sorted(_root_pods(root_cluster), key=lambda p: p["metadata"]["name"])
        assert [p["metadata"]["name"] for p in pods] == ["hollow-fleet-0", "hollow-fleet-1"]
        for pod in pods:
            assert pod["spec"]["nodeName"] == NODE and pod["status"]["phase"] == "Running"
            (container,) = pod["spec"]["containers"]
            assert container["name"] == "hollow-fleet" and container["image"] == hollow_image
            # Sized from a fleet node's cost: 5 mCPU + 0.1 per node, 32 MiB + 0.7 MiB per node.
            assert container["resources"]["requests"]["cpu"] == "6m"
            assert _ki(container["resources"]["requests"]["memory"]) == 32 * 1024 + 717 * per_pod

        # Each node its own identity: one CSR per node from the bootstrap token, for
        # CN=system:node:<node>, O=system:nodes, approved and signed by the controller-manager.
        csrs = json.loads(_kubectl(master, "get", "csr", "-o", "json").stdout)["items"]
        subjects = set()
        for csr in csrs:
            assert csr["spec"]["username"].startswith("system:bootstrap:")
            assert csr["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet"
            assert csr["metadata"]["name"].startswith("node-csr-")
            assert any(c["type"] == "Approved" for c in csr["status"]["conditions"])
            requested = _subject(base64.b64decode(csr["spec"]["request"]), "req")
            assert _subject(base64.b64decode(csr["status"]["certificate"]), "x509") == requested
            subjects.add(requested)
        assert len(csrs) == nodes
        assert subjects == {f"CN=system:node:hollow-node-{i},O=system:nodes" for i in range(nodes)}
        # ... and each node sends as itself, about itself only (the apiserver's audit log).
        deadline, senders = time.monotonic() + 60, {}
        while time.monotonic() < deadline:
            audit = (cli.home / "fleetpods" / "logs" / "audit.log").read_text().splitlines()
            senders = {}
            for line in audit:
                event = json.loads(line)
                ref = event.get("objectRef") or {}
                user = event["user"]["username"]
                if ref.get("resource") == "nodes" and ref.get("subresource") == "status" and user.startswith(
                        "system:node:"):  # (node-problem-detector's shared identity patches them all)
                    senders.setdefault(user, set()).add(ref.get("name"))
            if len(senders) == nodes:
                break
            time.sleep(2)
        assert senders == {f"system:node:hollow-node-{i}": {f"hollow-node-{i}"} for i in range(nodes)}

        # pod-for-node: hollow-node-4 is in the second fleet pod.
        result = cli.run("pod-for-node", "hollow-node-4", "--name", "fleetpods", "-o", "json")
        assert result.returncode == 0, result.stderr
        where = json.loads(result.stdout)
        assert where["where"].startswith(f"pod kubemark/hollow-fleet-1 on root node {NODE}, pod IP 10.244.0.")
        assert where["where"].endswith(", Running; a fleet carrying hollow-node-3 .. hollow-node-4")
        (part,) = where["processes"]
        assert part["container"] == "hollow-fleet" and part["running"]
        shown = subprocess.run(part["logs"].split(), capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0 and "hollow-node-4" in shown.stdout + shown.stderr
        by_address = cli.run("pod-for-node", "198.18.0.2", "--name", "fleetpods", "-o", "json")
        assert by_address.returncode == 0, by_address.stderr
        assert json.loads(by_address.stdout)["where"].startswith("pod kubemark/hollow-fleet-0 ")
    finally:
        stop = cli.run("stop", "--name", "fleetpods", timeout=600)
    assert stop.returncode == 0, stop.stderr
    assert root_cluster.kubectl("get", "namespace", "kubemark").returncode != 0
    assert _root_pods(root_cluster) == []


def test_fleet_pods_that_dropped_events_fail_start_and_leave_nothing(root_cluster, hollow_image, tmp_path, bin_dir):
    """A fleet pod with no room for an Event waiting to be sent drops most of the five a
    kubelet records as it starts; its status file stays in the pod, so start reads the
    drops from its log and fails, saying how many, and takes everything away."""
    cli = CLI(home=tmp_path / "home", bin_dir=bin_dir)
    config = pods_config(tmp_path / "c.yaml", root_cluster, hollow_image, nodes_per_pod=2)
    start = cli.run("start", "--name", "dropping", "--nodes", "2", "--config", str(config), "--node-engine", "fleet",
                    timeout=900, KUBEMARK_UP_FLEET_EVENT_QUEUE_PER_NODE="0", KUBEMARK_UP_FLEET_START_WINDOW="1")
    try:
        assert_one_line_error(start, 1, "the hollow nodes are Ready but fleet pod kubemark/hollow-fleet-0 dropped at least",
                              "kubelet Events (its log: Unable to record event: too many queued events, dropped event)")
    finally:
        assert cli.run("stop", "--name", "dropping", timeout=600).returncode == 0
    assert _root_pods(root_cluster) == []
    assert root_cluster.kubectl("get", "namespace", "kubemark").returncode != 0
