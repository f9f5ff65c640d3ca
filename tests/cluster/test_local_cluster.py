"""The local provider end to end, on one shared cluster of real processes that no
test changes for the others (the default engine, the fleet); the tests about stock
kubemark's own processes (their PIDs, logs, /tmp files, iptables) share a stock
cluster; the tests that kill or stop something start their own."""

from __future__ import annotations

import json
import re
import shutil
import stat
import time
from pathlib import Path

import psutil
import pytest

from tests.support.cli import (
    CLI,
    CLUSTER_NODES,
    RunningCluster,
    assert_one_line_error,
    host_tables,
    kubemark_tmp_files,
    listening,
    marked_processes,
    mounts,
)

NODE_NAMES = {f"hollow-node-{i}" for i in range(CLUSTER_NODES)}


@pytest.fixture(scope="module")
def stock_cluster(tmp_path_factory, bin_dir):
    """A cluster of CLUSTER_NODES stock kubemark hollow nodes (a kubelet and a proxy
    process each), for the tests about those processes."""
    cli = CLI(home=tmp_path_factory.mktemp("stock-home"), bin_dir=bin_dir, engine="kubemark")
    before = kubemark_tmp_files()
    tables = host_tables() if shutil.which("iptables-save") else ""
    result = cli.run("start", "--name", "stock", "--nodes", str(CLUSTER_NODES), timeout=600)
    cluster = RunningCluster(cli, "stock", result, before)
    cluster.host_before = (tables, mounts())
    try:
        assert result.returncode == 0, result.stderr
        yield cluster
    finally:
        if (cluster.dir / "state.json").exists():
            cli.run("stop", "--name", "stock")


def test_start_reports_endpoint_and_kubeconfig(local_cluster):
    out = local_cluster.start.stdout
    assert f"{CLUSTER_NODES} hollow nodes Ready" in out
    assert str(local_cluster.kubeconfig) in out
    endpoint = local_cluster.state()["endpoint"]
    assert re.fullmatch(r"https://127\.0\.0\.1:\d+", endpoint)
    assert endpoint in out


def test_hollow_nodes_are_ready_through_kubectl(local_cluster):
    result = local_cluster.kubectl("get", "nodes", "-o", "json")
    assert result.returncode == 0, result.stderr
    nodes = {n["metadata"]["name"]: n for n in json.loads(result.stdout)["items"]}
    assert set(nodes) == NODE_NAMES
    for node in nodes.values():
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True"
        # Stamped at build time: otherwise v0.0.0-master+$Format:%H$.
        assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.36.3"


def test_aggregation_layer_is_configured(local_cluster):
    result = local_cluster.kubectl(
        "get", "configmap", "extension-apiserver-authentication", "-n", "kube-system", "-o", "json"
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)["data"]
    front_proxy_ca = (local_cluster.dir / "pki" / "front-proxy-ca.crt").read_text()
    assert data["requestheader-client-ca-file"].strip() == front_proxy_ca.strip()
    assert json.loads(data["requestheader-allowed-names"]) == ["front-proxy-client"]
    assert json.loads(data["requestheader-username-headers"]) == ["X-Remote-User"]


def test_controller_manager_allocates_pod_cidrs(local_cluster):
    # Its node-ipam controller starts a few seconds after it wins leader election,
    # which can be just after the nodes turn Ready.
    deadline = time.monotonic() + 60
    cidrs = {}
    while time.monotonic() < deadline:
        nodes = json.loads(local_cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
        cidrs = {n["metadata"]["name"]: n["spec"].get("podCIDR") for n in nodes}
        if all(cidrs.values()):
            break
        time.sleep(1)
    assert set(cidrs) == NODE_NAMES
    assert all(cidr and cidr.startswith("10.6") and cidr.endswith("/24") for cidr in cidrs.values()), cidrs
    assert len(set(cidrs.values())) == CLUSTER_NODES


def test_deployment_runs_on_hollow_nodes(local_cluster):
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "pause", "namespace": "default"},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "pause"}},
            "template": {
                "metadata": {"labels": {"app": "pause"}},
                "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}]},
            },
        },
    }
    path = local_cluster.dir / "pause.json"
    path.write_text(json.dumps(manifest))
    assert local_cluster.kubectl("apply", "-f", str(path)).returncode == 0
    deadline = time.monotonic() + 120
    pods = []
    while time.monotonic() < deadline:
        listing = local_cluster.kubectl("get", "pods", "-l", "app=pause", "-o", "json")
        pods = json.loads(listing.stdout)["items"] if listing.returncode == 0 else []
        if len(pods) == 4 and all(p["status"].get("phase") == "Running" for p in pods):
            break
        time.sleep(1)
    assert len(pods) == 4 and all(p["status"].get("phase") == "Running" for p in pods), pods
    assert {p["spec"]["nodeName"] for p in pods} <= NODE_NAMES
    assert local_cluster.kubectl("delete", "-f", str(path), "--wait=false").returncode == 0


def test_pod_for_node_names_the_real_processes(stock_cluster):
    result = stock_cluster.cli.run("pod-for-node", "hollow-node-1", "--name", stock_cluster.name, "-o", "json")
    assert result.returncode == 0, result.stderr
    where = json.loads(result.stdout)
    assert where["node"] == "hollow-node-1" and where["provider"] == "local"
    assert {p["process"] for p in where["processes"]} == {"kubelet", "proxy"}
    for entry in where["processes"]:
        process = psutil.Process(entry["pid"])
        assert "--name=hollow-node-1" in process.cmdline()
        assert f"--morph={entry['process']}" in process.cmdline()
        assert Path(entry["log"]).stat().st_size > 0
    text = stock_cluster.cli.run("pod-for-node", "hollow-node-1", "--name", stock_cluster.name)
    assert text.returncode == 0 and "hollow-node-1" in text.stdout and "pid" in text.stdout


def test_pod_for_node_finds_a_node_by_an_address(stock_cluster):
    # Stock kubemark gives every hollow node the InternalIP 192.0.2.2: that one is ambiguous.
    shared = stock_cluster.cli.run("pod-for-node", "192.0.2.2", "--name", stock_cluster.name)
    assert_one_line_error(shared, 2, "same fake InternalIP")
    # A unique address is found. The hollow kubelet rewrites its addresses every 10 s,
    # so the address is added just before each try.
    patch = json.dumps([{"op": "add", "path": "/status/addresses/-", "value": {"type": "ExternalIP", "address": "198.51.100.7"}}])
    where = {}
    for _ in range(5):
        added = stock_cluster.kubectl("patch", "node", "hollow-node-2", "--subresource=status", "--type=json", "-p", patch)
        assert added.returncode == 0, added.stderr
        result = stock_cluster.cli.run("pod-for-node", "198.51.100.7", "--name", stock_cluster.name, "-o", "json")
        if result.returncode == 0:
            where = json.loads(result.stdout)
            break
    assert where.get("node") == "hollow-node-2"


def test_pod_for_node_rejects_a_made_up_node(local_cluster):
    result = local_cluster.cli.run("pod-for-node", "hollow-node-99", "--name", local_cluster.name)
    assert_one_line_error(result, 1, "no hollow node 'hollow-node-99'")


def test_status_json(local_cluster):
    result = local_cluster.cli.run("status", "--name", local_cluster.name, "--output", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["phase"] == "running" and report["healthy"] is True
    assert report["master"]["healthy"] is True
    names = [c["name"] for c in report["master"]["components"]]
    assert names == ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]
    for component in report["master"]["components"]:
        assert psutil.pid_exists(component["pid"])
    assert report["nodes"] == {"total": CLUSTER_NODES, "ready": CLUSTER_NODES, "processes_running": CLUSTER_NODES, "error": None}


def test_start_refuses_a_running_cluster_of_the_same_name(local_cluster):
    result = local_cluster.cli.run("start", "--name", local_cluster.name, "--nodes", "1")
    assert_one_line_error(result, 1, "already exists")
    assert local_cluster.state()["phase"] == "running"


def test_node_identities_are_held_to_the_node_authorizer(local_cluster):
    node0 = local_cluster.dir / "pki" / "kubeconfigs" / "nodes" / "hollow-node-0.kubeconfig"
    assert local_cluster.kubectl("get", "node", "hollow-node-0", kubeconfig=node0).returncode == 0
    secrets = local_cluster.kubectl("get", "secrets", "-A", kubeconfig=node0)
    assert secrets.returncode != 0 and "forbidden" in secrets.stderr.lower()
    # NodeRestriction: a kubelet may not change another node.
    other = local_cluster.kubectl(
        "label", "node", "hollow-node-1", "stolen=yes", kubeconfig=node0
    )
    assert other.returncode != 0 and "forbidden" in other.stderr.lower()


def test_secrets_are_private_and_never_on_a_command_line(local_cluster):
    root = local_cluster.dir
    assert stat.S_IMODE((root / "state.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "cluster.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(local_cluster.kubeconfig.stat().st_mode) == 0o600
    for folder in [root, root / "pki", *[p for p in (root / "pki").rglob("*") if p.is_dir()]]:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for key in (root / "pki").rglob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    key_text = (root / "pki" / "ca.key").read_text()
    for process in marked_processes(root):
        cmdline = " ".join(process.cmdline())
        assert "PRIVATE KEY" not in cmdline and key_text.splitlines()[1] not in cmdline


def _status(cluster) -> dict:
    result = cluster.cli.run("status", "--name", cluster.name, "-o", "json")
    assert result.returncode in (0, 3), result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def own_cluster(cli):
    """A cluster of one stock hollow node for a test that kills or stops something in it."""
    cli.engine = "kubemark"
    before = kubemark_tmp_files()
    tables, mounted = host_tables(), mounts()
    result = cli.run("start", "--name", "own", "--nodes", "1", timeout=300)
    cluster = RunningCluster(cli, "own", result, before)
    cluster.host_before = (tables, mounted)
    assert result.returncode == 0, result.stderr
    yield cluster
    if (cluster.dir / "state.json").exists():
        cli.run("stop", "--name", "own")


def test_a_crashed_master_component_is_restarted_like_a_static_pod(own_cluster):
    local_cluster = own_cluster
    before = {c["name"]: c for c in _status(local_cluster)["master"]["components"]}
    apiserver = psutil.Process(before["kube-apiserver"]["pid"])
    assert apiserver.ppid() == before["kube-apiserver"]["supervisor_pid"]
    apiserver.kill()
    # Down at once (the report says so, and status exits 3), back after the kubelet's
    # 10 s crash-loop back-off.
    down = local_cluster.cli.run("status", "--name", local_cluster.name, "-o", "json")
    assert down.returncode == 3 and json.loads(down.stdout)["master"]["healthy"] is False
    deadline = time.monotonic() + 90
    report = json.loads(down.stdout)
    while time.monotonic() < deadline:
        report = _status(local_cluster)
        if report["master"]["healthy"] and report["nodes"]["ready"] == 1:
            break
        time.sleep(1)
    after = {c["name"]: c for c in report["master"]["components"]}
    assert report["master"]["healthy"], report
    assert after["kube-apiserver"]["restarts"] == 1 and after["kube-apiserver"]["pid"] != apiserver.pid
    assert after["etcd"]["restarts"] == 0
    log = Path(after["kube-apiserver"]["log"]).read_text()
    assert "kube-apiserver exited with code 137; restart 1 in 10s" in log
    assert report["nodes"]["ready"] == 1


def test_stop_leaves_nothing_and_is_idempotent(own_cluster):
    local_cluster = own_cluster
    state = local_cluster.state()
    ports = list(state["ports"].values())
    pids = [p["pid"] for p in state["processes"].values()]
    # Each master component runs under its supervisor: 4 + 4, and 2 per hollow node.
    assert len(pids) == 4 + 2
    assert len(marked_processes(local_cluster.dir)) == 8 + 2
    result = local_cluster.cli.run("stop", "--name", local_cluster.name)
    assert result.returncode == 0, result.stderr
    assert marked_processes(local_cluster.dir) == []
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)
    assert listening(ports) == []
    # Runtime files are gone, the logs are kept.
    assert not (local_cluster.dir / "state.json").exists()
    assert not (local_cluster.dir / "cluster.json").exists()
    assert not (local_cluster.dir / "pki").exists()
    assert not local_cluster.kubeconfig.exists()
    assert (local_cluster.dir / "logs" / "kube-apiserver.log").stat().st_size > 0
    # What the stock hollow kubelets put in /tmp went with them.
    for record in state["processes"].values():
        if record["role"] == "kubelet":
            log = Path(record["log"]).read_text()
            for root_dir in re.findall(r"Using (/tmp/hollow-kubelet\.\d+) as root dir", log):
                assert not Path(root_dir).exists()
    assert kubemark_tmp_files() - local_cluster.tmp_before == set()
    # The host's iptables and mounts are as start found them.
    assert (host_tables(), mounts()) == local_cluster.host_before
    again = local_cluster.cli.run("stop", "--name", local_cluster.name)
    assert again.returncode == 0 and "nothing to stop" in again.stdout
    purge = local_cluster.cli.run("stop", "--name", local_cluster.name, "--purge")
    assert purge.returncode == 0 and not local_cluster.dir.exists()


def test_hollow_nodes_leave_the_hosts_iptables_alone(stock_cluster):
    # CI installs iptables; a stock hollow kubelet would add KUBE-IPTABLES-HINT,
    # KUBE-KUBELET-CANARY and KUBE-FIREWALL to this machine's tables.
    assert shutil.which("iptables-save"), "iptables is a test dependency (.ci/run installs it)"
    # Compared with the tables before start: a machine may keep chains from elsewhere.
    kube_lines = {line for line in host_tables().splitlines() if "KUBE-" in line}
    assert kube_lines <= set(stock_cluster.host_before[0].splitlines())
    log = (stock_cluster.dir / "logs" / "hollow-node-0.kubelet.log").read_text()
    assert "No iptables support on this system" in log


def test_logs_collects_every_component_and_node(stock_cluster, tmp_path):
    out = tmp_path / "logs"
    result = stock_cluster.cli.run("logs", "--name", stock_cluster.name, "--out", str(out))
    assert result.returncode == 0, result.stderr
    names = {p.name for p in out.iterdir()}
    for component in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        assert f"{component}.log" in names and f"{component}.supervise.json" in names
    for node in NODE_NAMES:
        assert {f"{node}.kubelet.log", f"{node}.proxy.log"} <= names
    assert (out / "kube-apiserver.log").stat().st_size > 0


def test_nodes_are_listed_a_page_at_a_time(local_cluster, monkeypatch):
    # Pages of one node: every page after the first is read through the apiserver's continue token.
    from kubemark_up import readiness

    monkeypatch.setattr(readiness, "LIST_PAGE", 1)
    api = readiness._api(local_cluster.kubeconfig)
    requests: list[dict] = []
    list_node = api.list_node
    monkeypatch.setattr(api, "list_node", lambda **kw: requests.append(kw) or list_node(**kw))
    listing = readiness._list_nodes(api)
    assert {n["metadata"]["name"] for n in listing["items"]} == NODE_NAMES
    assert len(requests) == CLUSTER_NODES and all(r["limit"] == 1 for r in requests)
    assert [bool(r.get("_continue")) for r in requests] == [False] + [True] * (CLUSTER_NODES - 1)
    assert listing["metadata"]["resourceVersion"]
    assert readiness.count_ready(local_cluster.kubeconfig, NODE_NAMES) == (CLUSTER_NODES, None)
