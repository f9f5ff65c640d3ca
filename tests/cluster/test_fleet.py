"""The fleet node engine against the real local master: many hollow nodes in
kubemark-fleet processes (kubemark_up/fleet), each node with its own identity
and connections. One cluster for the module; the tests run in file order (the SIGKILL
test and the stop come last)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import kubernetes
import psutil
import pytest

from kubemark_up import binaries, pki
from kubemark_up.hosts import MARKER_ENV
from tests.support.cli import CLI, RunningCluster, kubemark_tmp_files, marked_processes

NODES = 6
PODS = 12
WATCHES = 9  # per node at rest: the kubelet's five, kube-proxy's four


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, bin_dir: Path):
    cli = CLI(home=tmp_path_factory.mktemp("fleet-home"), bin_dir=bin_dir)
    name = "fleet"
    result = cli.run("start", "--name", name, "--nodes", str(NODES), "--node-engine", "fleet", "--fleet-processes", "2",
                     "--audit-nodes", timeout=600, KUBEMARK_UP_FLEET_START_WINDOW="3")
    cluster = RunningCluster(cli, name, result, kubemark_tmp_files())
    try:
        assert result.returncode == 0, result.stderr
        cluster.started_at = time.monotonic()  # type: ignore[attr-defined]
        yield cluster
    finally:
        if (cluster.dir / "state.json").exists():
            cli.run("stop", "--name", name)


def fleet_records(cluster: RunningCluster) -> list[dict]:
    return [r for r in cluster.state()["processes"].values() if r["role"] == "fleet"]


def fleet_status(cluster: RunningCluster) -> list[dict]:
    """Every fleet process's status file, written on demand (SIGUSR1)."""
    records = fleet_records(cluster)
    for record in records:
        os.kill(record["pid"], signal.SIGUSR1)
    time.sleep(1)
    return [json.loads(Path(r["argv"][-1].removesuffix(".json") + ".status.json").read_text()) for r in records]


def nodes(cluster: RunningCluster) -> list[dict]:
    result = cluster.kubectl("get", "nodes", "-o", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["items"]


def ready(node: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])


def wait_for(what: str, check, timeout: float = 120, every: float = 2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(every)
    pytest.fail(f"timed out waiting for {what}")


def test_nodes_register_as_real_nodes_and_stay_ready(fleet: RunningCluster) -> None:
    records = fleet_records(fleet)
    assert len(records) == 2 and all(Path(r["argv"][0]).name == "kubemark-fleet" for r in records)
    # Past the node-monitor grace period (40-50 s), on leases and status alone.
    time.sleep(max(0.0, fleet.started_at + 60 - time.monotonic()))  # type: ignore[attr-defined]
    found = nodes(fleet)
    assert sorted(n["metadata"]["name"] for n in found) == sorted(f"hollow-node-{i}" for i in range(NODES))
    assert all(ready(n) for n in found), [n["status"]["conditions"] for n in found]
    addresses = [a["address"] for n in found for a in n["status"]["addresses"] if a["type"] == "InternalIP"]
    assert len(set(addresses)) == NODES and all(ipaddress.ip_address(a).is_loopback for a in addresses)
    for node in found:
        assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.36.3"
        assert node["spec"].get("podCIDR")
        # node-problem-detector's conditions beside the kubelet's.
        assert {"KernelDeadlock", "ReadonlyFilesystem"} <= {c["type"] for c in node["status"]["conditions"]}
    leases = json.loads(fleet.kubectl("-n", "kube-node-lease", "get", "leases", "-o", "json").stdout)["items"]
    held = {lease["spec"]["holderIdentity"]: lease for lease in leases}
    assert set(held) >= {n["metadata"]["name"] for n in found}
    assert all(held[n["metadata"]["name"]]["metadata"]["ownerReferences"][0]["uid"] == n["metadata"]["uid"] for n in found)
    csinodes = fleet.kubectl("get", "csinodes", "-o", "name").stdout.split()
    assert len(csinodes) == NODES
    events = json.loads(fleet.kubectl("get", "events", "-n", "default", "-o", "json").stdout)["items"]
    starting = {e["source"].get("host") for e in events if e["reason"] == "Starting" and e["source"].get("component") == "kubelet"}
    assert starting == {n["metadata"]["name"] for n in found}
    # Every node holds its five kubelet watches and kube-proxy's four (its own Node too).
    statuses = fleet_status(fleet)
    assert sum(s["registered"] for s in statuses) == NODES
    assert sum(s["open_watches"] for s in statuses) == NODES * WATCHES
    # The kubelets' Events all sent, none dropped; every response counted by its code.
    assert sum(s["events"]["sent"] for s in statuses) >= NODES * 5
    assert all(s["events"]["dropped"] == 0 for s in statuses), [s["events"] for s in statuses]
    responses = {key: count for s in statuses for key, count in s["responses"].items()}
    assert responses.get("kubelet POST nodes 201", 0) + responses.get("kubelet POST nodes 409", 0) >= NODES / 2
    assert any(key.startswith("kube-proxy WATCH nodes 200") for key in responses), sorted(responses)


def audit_events(cluster: RunningCluster) -> list[dict]:
    with (cluster.dir / "logs" / "audit.log").open(errors="replace") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def stamped_commit() -> str:
    """The commit client-go's default User-Agent carries in binaries built by kubemark-up's
    recipe: its gitCommit stamp cut to 7 characters, or client-go's unstamped
    placeholder cut the same way (rest.DefaultKubernetesUserAgent's adjustCommit)."""
    match = re.search(r"k8s\.io/client-go/pkg/version\.gitCommit=(\S+)", binaries._ldflags(binaries.pinned_version()))
    return (match[1] if match else "$Format:%H$")[:7]


def test_every_request_carries_its_components_user_agent(fleet: RunningCluster) -> None:
    """From the apiserver's audit log: each kubelet, kube-proxy and node-problem-detector
    request carries what the real component's binary sends (not Go's default)."""
    version = binaries.pinned_version()
    platform = f"(linux/amd64) kubernetes/{stamped_commit()}"
    want = {"kubelet": f"kubelet/{version} {platform}", "kube-proxy": f"kube-proxy/{version} {platform}",
            "node-problem-detector": "node-problem-detector/v1.34.0"}
    seen: dict[str, set[str]] = {}
    for event in audit_events(fleet):
        user = event["user"]["username"]
        component = ("kubelet" if user.startswith("system:node:") else "kube-proxy" if user == "system:kube-proxy"
                     else "node-problem-detector" if user == pki.NPD_USER else None)
        if component:
            seen.setdefault(component, set()).add(event.get("userAgent", ""))
    assert seen == {component: {agent} for component, agent in want.items()}


def test_each_node_is_held_to_itself(fleet: RunningCluster) -> None:
    own = fleet.dir / "pki" / "kubeconfigs" / "nodes" / "hollow-node-0.kubeconfig"
    who = fleet.kubectl("auth", "whoami", "-o", "json", kubeconfig=own)
    assert who.returncode == 0, who.stderr
    user = json.loads(who.stdout)["status"]["userInfo"]
    assert user["username"] == "system:node:hollow-node-0" and "system:nodes" in user["groups"]
    patch = '{"metadata":{"labels":{"fleet-test":"x"}}}'
    other = fleet.kubectl("patch", "node", "hollow-node-1", "--type=merge", "-p", patch, kubeconfig=own)
    assert other.returncode != 0 and "forbidden" in other.stderr.lower(), other.stderr
    secrets = fleet.kubectl("get", "secrets", "-A", kubeconfig=own)
    assert secrets.returncode != 0 and "forbidden" in secrets.stderr.lower()


def test_pods_run_with_unique_ips_and_the_kubelets_events(fleet: RunningCluster) -> None:
    ns = "fleet-pods"
    assert fleet.kubectl("create", "namespace", ns).returncode == 0
    assert fleet.kubectl("-n", ns, "create", "configmap", "settings", "--from-literal=a=b").returncode == 0
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": ns},
        "spec": {"replicas": PODS, "selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                                     "envFrom": [{"configMapRef": {"name": "settings"}}]}]}}},
    }
    applied = subprocess.run(["kubectl", "--kubeconfig", str(fleet.kubeconfig), "apply", "-f", "-"],
                             input=json.dumps(deployment), capture_output=True, text=True, timeout=60)
    assert applied.returncode == 0, applied.stderr

    def running() -> list[dict] | None:
        pods = json.loads(fleet.kubectl("-n", ns, "get", "pods", "-o", "json").stdout)["items"]
        ok = [p for p in pods if p["status"].get("phase") == "Running" and p["status"].get("podIP")]
        return pods if len(ok) == PODS and len(pods) == PODS else None

    pods = wait_for("the pods Running", running)
    cidrs = {n["metadata"]["name"]: ipaddress.ip_network(n["spec"]["podCIDR"]) for n in nodes(fleet)}
    ips = [p["status"]["podIP"] for p in pods]
    assert len(set(ips)) == PODS
    for pod in pods:
        assert ipaddress.ip_address(pod["status"]["podIP"]) in cidrs[pod["spec"]["nodeName"]]
        assert pod["status"]["hostIP"].startswith("127.")
        assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "True"
        assert pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
    names = {p["metadata"]["name"] for p in pods}

    def kubelet_events(*reasons: str) -> bool:
        # Events go out from the fleet's event queue, a moment after the status.
        events = json.loads(fleet.kubectl("-n", ns, "get", "events", "-o", "json").stdout)["items"]
        return all({e["involvedObject"]["name"] for e in events
                    if e["reason"] == reason and e["source"].get("component") == "kubelet"} == names for reason in reasons)

    wait_for("the kubelet's Pulled, Created and Started events", lambda: kubelet_events("Pulled", "Created", "Started"),
             timeout=60)
    # The projected token was asked for, and the kubelets watch kube-root-ca.crt and the
    # ConfigMap the pods take their environment from (one watch per object per node).
    statuses = fleet_status(fleet)
    requests: dict[str, int] = {}
    for status in statuses:
        for key, count in status["requests"].items():
            requests[key] = requests.get(key, 0) + count
    assert requests.get("kubelet POST serviceaccounts/token", 0) >= PODS
    used = {p["spec"]["nodeName"] for p in pods}
    wait_for("the per-object watches open", lambda: sum(s["open_watches"] for s in fleet_status(fleet))
             == NODES * WATCHES + 2 * len(used), timeout=60)

    assert fleet.kubectl("-n", ns, "delete", "deployment", "web", "--wait=true").returncode == 0
    wait_for("the pods deleted", lambda: not json.loads(fleet.kubectl("-n", ns, "get", "pods", "-o", "json").stdout)["items"])
    wait_for("the kubelet's Killing events", lambda: kubelet_events("Killing"), timeout=60)
    # Their per-object watches end with the last pod that needed them.
    wait_for("the per-object watches closed", lambda: sum(s["open_watches"] for s in fleet_status(fleet)) == NODES * WATCHES)
    assert fleet.kubectl("delete", "namespace", ns, "--wait=false").returncode == 0


def test_an_endpointslice_change_reaches_every_proxy(fleet: RunningCluster) -> None:
    def seen() -> dict[str, int]:
        counts: dict[str, int] = {}
        for status in fleet_status(fleet):
            for node, events in status["watch_events"].items():
                counts[node] = events["kube-proxy endpointslices"]
            # The totals, the only figures in the file written every 30 s, are the nodes' sum.
            assert status["watch_events_total"]["kube-proxy endpointslices"] == sum(
                events["kube-proxy endpointslices"] for events in status["watch_events"].values())
        return counts

    before = seen()
    assert len(before) == NODES
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "fleet-svc", "namespace": "default"},
               "spec": {"ports": [{"port": 80}], "selector": {"app": "nothing"}}}
    made = subprocess.run(["kubectl", "--kubeconfig", str(fleet.kubeconfig), "apply", "-f", "-"],
                          input=json.dumps(service), capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    try:
        after = wait_for("every node's kube-proxy to see the EndpointSlice",
                         lambda: (now := seen()) and all(now[n] > before[n] for n in before) and now, timeout=60)
        assert set(after) == set(before)
    finally:
        fleet.kubectl("delete", "service", "fleet-svc", "-n", "default")


def test_fidelity_of_a_small_fleet_passes(fleet: RunningCluster) -> None:
    out = fleet.dir.parent / "fidelity.json"
    result = fleet.cli.run("fidelity", "--name", fleet.name, "--minutes", "1", "--settle", "2", "--out", str(out),
                           timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert report["ok"] and report["nodes"] == report["heard"] == NODES and not report["failing_nodes"]
    leases = next(b for b in report["requests"] if b["verb"] == "PUT" and b["resource"] == "coordination.k8s.io/leases")
    assert leases["verdict"] == "pass" and abs(leases["rate"] - 5.9) <= 0.59
    watches = {(w["component"], w["resource"]): w for w in report["watches"]}
    assert watches[("kubelet", "pods")]["open"] == NODES
    assert watches[("kube-proxy", "discovery.k8s.io/endpointslices")]["open"] == NODES
    assert watches[("kube-proxy", "nodes")]["open"] == NODES
    assert all(w["verdict"] == "pass" for w in report["watches"] if w["reference"])


REFUSE_STATUS = """
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: fleet-test-refuse-status}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - {apiGroups: [""], apiVersions: [v1], operations: [UPDATE], resources: [nodes/status]}
  validations:
  - {expression: "request.userInfo.username != 'system:node:NODE'", message: refused by the fleet test}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: fleet-test-refuse-status}
spec: {policyName: fleet-test-refuse-status, validationActions: [Deny]}
"""


def restart(record: dict) -> None:
    """SIGKILL a fleet process and start it again at once, as its supervisor would."""
    victim = psutil.Process(record["pid"])
    marker = victim.environ()[MARKER_ENV]
    victim.kill()
    victim.wait(10)
    with open(record["log"], "ab") as log:
        subprocess.Popen(record["argv"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                         env={**os.environ, MARKER_ENV: marker})


def test_a_refused_status_patch_is_retried_as_the_kubelet_does(fleet: RunningCluster) -> None:
    """An admission policy refuses one node's status updates; its fleet process restarted
    (a status PATCH at once), the kubelet's tick tries 5 times, each retry from a fresh
    GET of the node, then waits for the next tick; once the policy is gone it gets
    through. The last fleet process's first node: the kill test below takes the first."""
    record = fleet_records(fleet)[-1]
    node = json.loads(Path(record["argv"][-1]).read_text())["nodes"][0]["name"]
    policy = REFUSE_STATUS.replace("NODE", node)
    own = fleet.dir / "pki" / "kubeconfigs" / "nodes" / f"{node}.kubeconfig"
    applied = subprocess.run(["kubectl", "--kubeconfig", str(fleet.kubeconfig), "apply", "-f", "-"],
                             input=policy, capture_output=True, text=True, timeout=60)
    assert applied.returncode == 0, applied.stderr
    try:
        # A dry-run status patch as the node itself (kubectl patch would GET nodes/status
        # first, which the Node authorizer refuses), to see the policy in force.
        api = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(str(own)))
        probe = {"metadata": {"labels": {"fleet-test-probe": "x"}}}
        tried: list[str] = []

        def refused() -> bool:
            try:
                api.patch_node_status(node, probe, dry_run="All")
            except kubernetes.client.ApiException as e:
                tried.append(f"{e.status}: {e.body}")
                return "refused by the fleet test" in str(e.body)
            tried.append("accepted")
            return False

        deadline = time.monotonic() + 60
        while not refused():
            assert time.monotonic() < deadline, f"the policy never refused the node's own status patch: {tried[-1]}"
            time.sleep(1)
        since = dt.datetime.now(dt.UTC)
        restart(record)

        def own_node(verb: str, subresource: str) -> list[tuple[dt.datetime, int]]:
            return sorted((dt.datetime.fromisoformat(e["requestReceivedTimestamp"]), e["responseStatus"]["code"])
                          for e in audit_events(fleet)
                          if e["user"]["username"] == f"system:node:{node}" and e["verb"] == verb
                          and e["objectRef"].get("resource") == "nodes" and e["objectRef"].get("name") == node
                          and e["objectRef"].get("subresource", "") == subresource
                          and dt.datetime.fromisoformat(e["requestReceivedTimestamp"]) > since)

        # Two ticks' worth: the first tick's tries all refused, then the next tick's.
        refused = wait_for("two ticks of refused status patches",
                           lambda: len(p := [t for t, code in own_node("patch", "status") if code >= 400]) >= 6 and p,
                           timeout=90)
        first = refused[:5]
        assert (first[-1] - first[0]).total_seconds() < 5, refused  # one tick: the tries back to back
        assert (refused[5] - first[-1]).total_seconds() >= 5, refused  # then the next tick, not a sixth try
        gets = [t for t, code in own_node("get", "") if first[0] <= t <= first[-1]]
        assert len(gets) >= 4, (first, gets)  # each retry read the node afresh
    finally:
        subprocess.run(["kubectl", "--kubeconfig", str(fleet.kubeconfig), "delete", "-f", "-", "--ignore-not-found"],
                       input=policy, capture_output=True, text=True, timeout=60)
    wait_for("a status patch through", lambda: any(code == 200 for _, code in own_node("patch", "status")), timeout=90)
    wait_for("every node Ready", lambda: all(ready(n) for n in nodes(fleet)) and len(nodes(fleet)) == NODES, timeout=120)


def test_a_killed_fleet_goes_notready_and_a_restarted_one_takes_its_nodes_back(fleet: RunningCluster) -> None:
    record = fleet_records(fleet)[0]
    victim = psutil.Process(record["pid"])
    marker = victim.environ()[MARKER_ENV]
    config = json.loads(Path(record["argv"][-1]).read_text())
    mine = {n["name"] for n in config["nodes"]}
    victim.kill()
    victim.wait(10)

    def states() -> dict[str, bool]:
        return {n["metadata"]["name"]: ready(n) for n in nodes(fleet)}

    wait_for("its nodes NotReady", lambda: not any(ready for name, ready in states().items() if name in mine), timeout=150)
    assert all(ready for name, ready in states().items() if name not in mine)
    with open(record["log"], "ab") as log:
        subprocess.Popen(record["argv"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                         env={**os.environ, MARKER_ENV: marker})
    wait_for("its nodes Ready again", lambda: all(states().values()), timeout=120)


def test_stop_leaves_no_fleet_process(fleet: RunningCluster) -> None:
    result = fleet.cli.run("stop", "--name", fleet.name)
    assert result.returncode == 0, result.stderr
    assert marked_processes(fleet.dir) == []
    assert not [p for p in psutil.process_iter(["cmdline"])
                if p.info["cmdline"] and str(fleet.dir) in " ".join(p.info["cmdline"]) and "kubemark-fleet" in p.info["cmdline"][0]]
