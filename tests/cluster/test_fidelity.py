"""`kubemark-up fidelity` on a live fleet cluster with the real master: pods churned
inside a window as the reference's were are counted per lifecycle from the apiserver's
own audit log and pass the reference's per-pod buckets; a fleet
process killed during a window makes it fail, naming its nodes; a window no node
spoke in exits non-zero with its own message. One cluster for the module; the tests
run in file order (the churn on the whole fleet, then one process killed, then the
other)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.support.cli import CLI, RunningCluster, assert_one_line_error, kubemark_tmp_files

NODES = 4
PODS = 6  # the per-pod buckets are judged from 5 lifecycles
NAMESPACE = "fidelity-churn"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, bin_dir: Path):
    cli = CLI(home=tmp_path_factory.mktemp("fidelity-home"), bin_dir=bin_dir)
    name = "fidelity"
    result = cli.run("start", "--name", name, "--nodes", str(NODES), "--node-engine", "fleet", "--fleet-processes", "2",
                     "--audit-nodes", timeout=600, KUBEMARK_UP_FLEET_START_WINDOW="2")
    cluster = RunningCluster(cli, name, result, kubemark_tmp_files())
    try:
        assert result.returncode == 0, result.stderr
        yield cluster
    finally:
        if (cluster.dir / "state.json").exists():
            cli.run("stop", "--name", name)


def fidelity(cluster: RunningCluster, minutes: float, out: Path, settle: float = 0) -> subprocess.Popen:
    return cluster.cli.popen("fidelity", "--name", cluster.name, "--minutes", str(minutes), "--settle", str(settle),
                             "--out", str(out))


def finish(process: subprocess.Popen, timeout: float = 240) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def fleet_processes(cluster: RunningCluster) -> list[dict]:
    return [r for r in cluster.state()["processes"].values() if r["role"] == "fleet"]


def apply(cluster: RunningCluster, *objects: dict) -> None:
    made = subprocess.run(["kubectl", "--kubeconfig", str(cluster.kubeconfig), "apply", "-f", "-"],
                          input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}),
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr


def wait_for(what: str, check, timeout: float = 90, every: float = 1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(every)
    pytest.fail(f"timed out waiting for {what}")


def pod(name: str) -> list[dict]:
    """The reference's pod: a pause pod with a projected token, and a ConfigMap and a
    Secret of its own."""
    meta = {"name": name, "namespace": NAMESPACE}
    return [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"a": "b"}},
            {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "stringData": {"c": "d"}},
            {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
             # All on one node, as the reference's were: the namespace's kube-root-ca.crt
             # is watched once a node, and counted per pod.
             "spec": {"nodeSelector": {"kubernetes.io/hostname": "hollow-node-0"},
                      "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                                      "volumeMounts": [{"name": "conf", "mountPath": "/conf"},
                                                       {"name": "key", "mountPath": "/key"}]}],
                      "volumes": [{"name": "conf", "configMap": {"name": name}},
                                  {"name": "key", "secret": {"secretName": name}}]}}]


# Held Running past the pod worker's first resync (60-90 s after Running), as the
# reference's pods were: its GET and status PATCH are in the reference's per-pod counts.
HOLD = 95


def test_pods_churned_in_a_window_pass_the_per_pod_buckets(fleet: RunningCluster) -> None:
    apply(fleet, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    wait_for("the namespace's default service account",
             lambda: fleet.kubectl("get", "serviceaccount", "default", "-n", NAMESPACE).returncode == 0)
    out = fleet.dir.parent / "churn.json"
    # Past the nodes' start-up requests (their leases, first status) before counting.
    window = fidelity(fleet, 3.2, out, settle=30)
    try:
        time.sleep(40)  # inside the window
        apply(fleet, *(part for i in range(PODS) for part in pod(f"churn-{i}")))

        def running() -> bool:
            found = fleet.kubectl("get", "pods", "-n", NAMESPACE, "-o", "json")
            items = json.loads(found.stdout)["items"] if found.returncode == 0 else []
            return len(items) == PODS and all(p["status"].get("phase") == "Running" for p in items)

        wait_for("the pods Running", running, timeout=45)
        time.sleep(HOLD)
        deleted = fleet.kubectl("delete", "pods", "--all", "-n", NAMESPACE, "--wait=true", timeout=60)
        assert deleted.returncode == 0, deleted.stderr
    finally:
        result = finish(window, timeout=360)
    assert result.returncode in (0, 3), result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert report["nodes"] == report["heard"] == NODES and not report["failing_nodes"]
    life = report["lifecycle"]
    assert (life["started"], life["judged"], life["running"], life["shared"], life["short"]) == (PODS, PODS, 0, 0, 0)
    per_pod = {(b["verb"], b["resource"], b["subresource"]): b for b in life["requests"]}
    # Every bucket the reference measured per pod, within its tolerance of the real kubelet's ...
    for key in (("GET", "pods", ""), ("PATCH", "pods", "status"), ("POST", "events", ""),
                ("POST", "serviceaccounts", "token"), ("DELETE", "pods", ""), ("WATCH", "secrets", "")):
        assert per_pod[key]["verdict"] == "pass", (key, per_pod[key])
    # ... but the ConfigMap watches: each pod's own, and kube-root-ca.crt's once for the node,
    # which 6 pods share where the reference's 30 did (1.167 a pod here, 1.067 there).
    assert per_pod[("WATCH", "configmaps", "")]["count"] == PODS + 1
    # Taken out of the at-rest buckets, where the reference has no row for them: nothing
    # a real node does not send at rest is left there.
    rest = {(b["verb"], b["resource"], b["subresource"]) for b in report["requests"]}
    assert not rest & {key for key in per_pod if key != ("POST", "events", "")}
    assert not [b for b in report["requests"] if b["reference"] is None and b["verdict"] == "fail"]
    timing = {t["figure"]: t for t in life["timing"]}
    assert timing["bound_to_running_p50"]["pods"] == PODS and timing["bound_to_running_p50"]["value"] is not None


def test_a_fleet_process_killed_in_the_window_fails_it_by_name(fleet: RunningCluster) -> None:
    record = fleet_processes(fleet)[0]
    mine = sorted(n["name"] for n in json.loads(Path(record["argv"][-1]).read_text())["nodes"])
    assert mine and len(mine) < NODES
    out = fleet.dir.parent / "killed.json"
    window = fidelity(fleet, 1.5, out)
    try:
        time.sleep(25)  # a part of the window heard from every node
        victim = psutil.Process(record["pid"])
        victim.kill()
        victim.wait(10)
    finally:
        result = finish(window)
    assert_one_line_error(result, 3, "outside the reference", *mine)
    report = json.loads(out.read_text())
    assert not report["ok"] and report["nodes"] == NODES and report["heard"] == NODES
    assert report["failing_nodes"] == mine
    assert all("sent nothing for" in n["why"] for n in report["node_rows"] if n["name"] in mine)
    # Their watches went with them.
    watches = {(w["component"], w["resource"]): w for w in report["watches"]}
    assert watches[("kubelet", "pods")]["open"] == NODES - len(mine) and watches[("kubelet", "pods")]["verdict"] == "fail"
    assert "hollow" in result.stdout and "its kubelet sent nothing for" in result.stdout


def test_a_window_no_node_spoke_in_judged_nothing(fleet: RunningCluster) -> None:
    for record in fleet_processes(fleet):
        if psutil.pid_exists(record["pid"]):
            victim = psutil.Process(record["pid"])
            victim.kill()
            victim.wait(10)
    time.sleep(2)  # their watches end as their connections close
    result = finish(fidelity(fleet, 0.5, fleet.dir.parent / "empty.json"))
    assert_one_line_error(result, 1, "the window judged nothing", f"{NODES} hollow node(s)")
