"""The pods engine against a real root cluster (tests/support/rootcluster.py) when
things are not as they should be: a user with rights in one namespace only, an image
the registry does not have (seen from here, or only by the root cluster), a root
cluster that refuses connections."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.support.cli import CLI, assert_one_line_error, marked_processes
from tests.support.rootcluster import GATEWAY, RootCluster

TEAM = "team-a"  # the namespace the namespace-admin may use
RUNNER = "runner"  # its ServiceAccount
# Exactly what the pods engine asks of the root cluster in its namespace (README: the
# rights it needs); no Namespace, nothing at the cluster scope.
MINIMAL_RULES = [
    {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["get", "list", "create", "delete"]},
    {"apiGroups": ["apps"], "resources": ["statefulsets/scale"], "verbs": ["patch"]},
    {"apiGroups": [""], "resources": ["secrets", "configmaps"], "verbs": ["get", "create", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
]


def _config(path: Path, kubeconfig: Path, image: str, **pods: object) -> Path:
    path.write_text(yaml.safe_dump({
        "hollow_nodes": "pods",
        "local": {"address": GATEWAY},  # the pods reach the master on the bridge's address
        "pods": {"kubeconfig": str(kubeconfig), "image": image, **pods},
    }))
    return path


def _apply(root: RootCluster, body: dict) -> None:
    result = subprocess.run(["kubectl", "--kubeconfig", str(root.kubeconfig), "apply", "-f", "-"],
                            input=json.dumps(body), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def _namespace_user(root: RootCluster, folder: Path, *, minimal: bool) -> Path:
    """A ServiceAccount of TEAM bound, in TEAM only, to the admin ClusterRole (or to a
    Role of exactly what the engine needs), and a kubeconfig for it: its token (0600)."""
    assert root.kubectl("create", "namespace", TEAM).returncode == 0
    assert root.kubectl("-n", TEAM, "create", "serviceaccount", RUNNER).returncode == 0
    deadline = time.monotonic() + 60  # pods need their namespace's default ServiceAccount
    while root.kubectl("-n", TEAM, "get", "serviceaccount", "default").returncode != 0:
        assert time.monotonic() < deadline, "no default ServiceAccount in 60s"
        time.sleep(0.5)
    role = {"kind": "ClusterRole", "name": "admin"}
    if minimal:
        _apply(root, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                      "metadata": {"name": "hollow-nodes", "namespace": TEAM}, "rules": MINIMAL_RULES})
        role = {"kind": "Role", "name": "hollow-nodes"}
    _apply(root, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                  "metadata": {"name": f"{RUNNER}-{role['name']}", "namespace": TEAM},
                  "roleRef": {"apiGroup": "rbac.authorization.k8s.io", **role},
                  "subjects": [{"kind": "ServiceAccount", "name": RUNNER, "namespace": TEAM}]})
    token = root.kubectl("-n", TEAM, "create", "token", RUNNER, "--duration=2h")
    assert token.returncode == 0, token.stderr
    admin = yaml.safe_load(root.kubeconfig.read_text())
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / "team-a.kubeconfig"
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": RUNNER,
        "clusters": [{"name": "root", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": RUNNER, "user": {"token": token.stdout.strip()}}],
        "contexts": [{"name": RUNNER, "context": {"cluster": "root", "user": RUNNER, "namespace": TEAM}}],
    }))
    return path


def _as(kubeconfig: Path, *args: str) -> str:
    """What kubectl says as the user of kubeconfig."""
    result = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True,
                            timeout=60)
    return result.stdout + result.stderr


@pytest.mark.parametrize("rights", ["admin", "minimal"])
def test_a_user_with_rights_in_one_namespace_runs_the_pods_engine(rights, root_cluster, hollow_image, tmp_path,
                                                                  bin_dir):
    user = _namespace_user(root_cluster, tmp_path / "user", minimal=rights == "minimal")
    try:
        # What the root cluster's RBAC says of this user: its namespace, nothing beyond.
        assert "forbidden" in _as(user, "get", "namespaces").lower()
        assert "forbidden" in _as(user, "-n", "default", "get", "statefulsets").lower()
        if rights == "minimal":
            assert "forbidden" in _as(user, "get", "namespace", TEAM).lower()
        cli = CLI(home=tmp_path / "home", bin_dir=bin_dir)
        config = _config(tmp_path / "c.yaml", user, hollow_image, namespace=TEAM)
        start = cli.run("start", "--name", "teama", "--nodes", "2", "--config", str(config), "--node-engine", "fleet",
                        timeout=900, KUBEMARK_UP_FLEET_START_WINDOW="2")
        try:
            assert start.returncode == 0, start.stderr
            assert "2 hollow nodes Ready" in start.stdout
            pods = json.loads(root_cluster.kubectl("-n", TEAM, "get", "pods", "-o", "json").stdout)["items"]
            assert [p["metadata"]["name"] for p in pods] == ["hollow-fleet-0"]
            assert pods[0]["status"]["phase"] == "Running"
            where = cli.run("pod-for-node", "hollow-node-1", "--name", "teama")
            assert where.returncode == 0 and f"pod {TEAM}/hollow-fleet-0" in where.stdout, where.stderr
        finally:
            stop = cli.run("stop", "--name", "teama", timeout=600)
        assert stop.returncode == 0, stop.stderr
        assert "could not" not in stop.stderr
        left = root_cluster.kubectl("-n", TEAM, "get", "statefulsets,pods,secrets,configmaps", "-o", "name").stdout
        assert not [name for name in left.split() if "hollow" in name], left
        # The namespace was there before: it stays, with what start did not make.
        assert root_cluster.kubectl("get", "namespace", TEAM).returncode == 0
        assert root_cluster.kubectl("-n", TEAM, "get", "serviceaccount", RUNNER).returncode == 0
        assert root_cluster.kubectl("get", "namespace", "kubemark").returncode != 0
        assert not (cli.home / "teama" / "state.json").exists()
        assert marked_processes(cli.home / "teama") == []  # the kubemark master is gone too
    finally:
        root_cluster.kubectl("delete", "namespace", TEAM, "--wait=true", timeout=180)


def test_a_namespace_the_user_has_no_rights_in_is_refused_in_one_line(root_cluster, hollow_image, tmp_path,
                                                                       bin_dir):
    user = _namespace_user(root_cluster, tmp_path / "user", minimal=False)
    try:
        cli = CLI(home=tmp_path / "home", bin_dir=bin_dir)
        config = _config(tmp_path / "c.yaml", user, hollow_image)  # pods.namespace: kubemark, not its own
        result = cli.run("start", "--name", "elsewhere", "--nodes", "1", "--config", str(config), timeout=300)
        assert_one_line_error(result, 1, "refused to read StatefulSet kubemark/", "403",
                              "pods.namespace must be a namespace this user may use")
        assert not (cli.home / "elsewhere").exists()
    finally:
        root_cluster.kubectl("delete", "namespace", TEAM, "--wait=true", timeout=180)


def test_a_tag_the_registry_lacks_is_refused_before_anything_is_made(root_cluster, tmp_path, bin_dir):
    cli = CLI(home=tmp_path / "home", bin_dir=bin_dir)
    missing = f"{root_cluster.registry}/kubemark:no-such-tag"
    config = _config(tmp_path / "c.yaml", root_cluster.kubeconfig, missing)
    result = cli.run("start", "--name", "notag", "--nodes", "1", "--config", str(config), timeout=300)
    assert_one_line_error(result, 2, f"pods.image {missing}: its registry has no such image")
    assert not (cli.home / "notag").exists()  # no master, no token, no StatefulSet
    assert root_cluster.kubectl("get", "namespace", "kubemark").returncode != 0


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_image_only_the_root_cluster_finds_missing_fails_start_within_a_minute(root_cluster, tmp_path, bin_dir):
    """A registry this machine cannot reach (here: a closed port) but the root cluster's
    runtime can (containerd's hosts.toml sends that name to the real registry, as a
    root cluster's own network would): start warns and goes on, then fails as soon as
    the root cluster says the image is not found, once per pod, in one line."""
    port = _closed_port()
    mirror = root_cluster.folder / "certs.d" / f"127.0.0.1:{port}"
    mirror.mkdir(parents=True)
    (mirror / "hosts.toml").write_text(f'server = "http://{root_cluster.registry}"\n\n'
                                       f'[host."http://{root_cluster.registry}"]\n'
                                       '  capabilities = ["pull", "resolve"]\n')
    missing = f"127.0.0.1:{port}/kubemark:no-such-tag"
    cli = CLI(home=tmp_path / "home", bin_dir=bin_dir)
    config = _config(tmp_path / "c.yaml", root_cluster.kubeconfig, missing)
    # The stock engine: three containers a pod, all of the one image.
    start = cli.popen("start", "--name", "nopull", "--nodes", "2", "--config", str(config), "--node-engine",
                      "kubemark", KUBEMARK_UP_NODES_READY_TIMEOUT="900")
    out: dict[str, list[str]] = {"stdout": [], "stderr": []}
    readers = [threading.Thread(target=lambda name=name: out[name].extend(getattr(start, name)), daemon=True)
               for name in out]
    for reader in readers:
        reader.start()
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and start.poll() is None and root_cluster.kubectl(
                "-n", "kubemark", "get", "statefulset", "hollow-node").returncode != 0:
            time.sleep(0.5)
        # From the StatefulSet's creation, a minute at most to give up (not
        # nodes_ready_timeout's 900 s); then it stops what it made.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("start did not finish" in line for line in out["stderr"]):
            time.sleep(0.5)
        assert any("start did not finish" in line for line in out["stderr"]), "".join(out["stderr"])
        start.wait(timeout=600)
    finally:
        if start.poll() is None:
            start.kill()
            start.wait(timeout=10)
            cli.run("stop", "--name", "nopull", timeout=600)
        shutil.rmtree(mirror)
    for reader in readers:
        reader.join(timeout=10)
    stdout, stderr = "".join(out["stdout"]), "".join(out["stderr"])
    result = type("Result", (), {"returncode": start.returncode, "stdout": stdout, "stderr": stderr})()
    assert_one_line_error(result, 1, "hollow node(s) failed", f"the root cluster cannot pull {missing}: not found")
    # From here the registry was out of reach: said in one warning, and start went on.
    assert f"cannot look up {missing} in its registry from here (connection refused)" in stderr
    error = next(line for line in stderr.splitlines() if line.startswith("error: "))
    assert "MaxRetryError" not in stderr and len(error) < 300, error
    # The runtime's own message once, under the error line: not once per container.
    assert stderr.count("failed to pull") <= 1, stderr
    assert "ImagePullBackOff" not in stderr
    assert not (cli.home / "nopull" / "state.json").exists()
    assert root_cluster.kubectl("get", "namespace", "kubemark").returncode != 0


def test_a_root_cluster_that_refuses_connections_says_so(root_cluster, hollow_image, tmp_path, bin_dir):
    admin = yaml.safe_load(root_cluster.kubeconfig.read_text())
    admin["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{_closed_port()}"
    closed = tmp_path / "closed.kubeconfig"
    closed.touch(mode=0o600)
    closed.write_text(yaml.safe_dump(admin))
    cli = CLI(home=tmp_path / "home", bin_dir=bin_dir)
    config = _config(tmp_path / "c.yaml", closed, hollow_image)
    result = cli.run("start", "--name", "closed", "--nodes", "1", "--config", str(config), timeout=300)
    assert_one_line_error(result, 1, "did not answer (connection refused)")
    assert "MaxRetryError" not in result.stderr
    assert not (cli.home / "closed").exists()

