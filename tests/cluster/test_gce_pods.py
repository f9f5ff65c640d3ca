"""The whole gce start, up to hollow nodes Ready: the strict test Compute endpoint
hands back the root cluster's bridge address (tests/support/rootcluster.py) as the VM's
external IP, a real sshd listens there (the "VM"), and the hollow nodes run as pods on
the real root cluster, reaching the master at that address. stop leaves the endpoint,
the root cluster and the "VM" empty."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import psutil
import pytest
import yaml

from tests.support.cli import CLI, marked_processes
from tests.support.gce_cloud import LABEL, PROJECT, ZONE, _free_port, remote_processes
from tests.support.gce_endpoint import ComputeEndpoint
from tests.support.rootcluster import GATEWAY, POD_SUBNET
from tests.support.sshd import SSHServer

NODES = 3


class BridgeSSHServer(SSHServer):
    """The sshd of the "VM", on the address the pods reach (the root cluster's bridge)."""

    host = GATEWAY


@pytest.fixture
def vm_sshd(root_cluster):
    server = BridgeSSHServer()
    server.start()
    yield server
    server.cleanup()


def test_start_to_nodes_ready_and_stop_leaves_nothing(root_cluster, hollow_image, vm_sshd, bin_dir, tmp_path):
    keys = vm_sshd.dir / "authorized_keys"
    keys_before = keys.read_text()
    remote_root = vm_sshd.home / f"kmup-gce-pods-{os.getpid()}"
    remote_root.mkdir(mode=0o755)
    shutil.chown(remote_root, vm_sshd.user)
    cli = CLI(home=tmp_path / "home", bin_dir=bin_dir, engine="kubemark")  # a pod per node
    config = tmp_path / "gce.yaml"
    config.write_text(yaml.safe_dump({
        "provider": "gce", "hollow_nodes": "pods",
        "gce": {"project": PROJECT, "zone": ZONE, "source_ranges": [POD_SUBNET], "ssh_user": vm_sshd.user,
                "ssh_port": vm_sshd.port, "remote_root": str(remote_root), "bind_address": GATEWAY,
                "connect_timeout": 5, "ssh_wait_timeout": 30},
        "pods": {"kubeconfig": str(root_cluster.kubeconfig), "image": hollow_image.split("@")[0] + ":test",
                 "namespace": "kubemark-gce"},
    }))
    host_key = " ".join(vm_sshd.host_key.with_suffix(".pub").read_text().split()[:2])
    with ComputeEndpoint(op_seconds=0.05, external_ip=GATEWAY, authorized_keys=keys, host_keys=[host_key]) as endpoint:
        env = {"KUBEMARK_UP_GCE_ENDPOINT": endpoint.url}
        try:
            began = time.time()
            result = cli.run("start", "--name", "gcepods", "--nodes", str(NODES), "--config", str(config),
                             "--apiserver-port", str(_free_port()), timeout=900, **env)
            assert result.returncode == 0, result.stderr
            assert f"{NODES} hollow nodes Ready" in result.stdout
            state = json.loads((cli.home / "gcepods" / "state.json").read_text())
            assert state["endpoint"] == f"https://{GATEWAY}:{state['ports']['apiserver']}"
            kubeconfig = cli.home / "gcepods" / "kubeconfig.kubemark"
            nodes = json.loads(subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "get", "nodes", "-o", "json"],
                                              capture_output=True, text=True, timeout=60).stdout)["items"]
            assert sorted(n["metadata"]["name"] for n in nodes) == [f"hollow-node-{i}" for i in range(NODES)]
            assert all(any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
                       for n in nodes)
            pods = json.loads(root_cluster.kubectl("-n", "kubemark-gce", "get", "pods", "-o", "json").stdout)["items"]
            assert len(pods) == NODES and all(p["status"]["phase"] == "Running" for p in pods)
            assert {r["labels"][LABEL] for r in endpoint.items() if "labels" in r} == {"gcepods"}
            start_calls = len(endpoint.calls(began))

            stopped = time.time()
            result = cli.run("stop", "--name", "gcepods", timeout=600, **env)
            assert result.returncode == 0, result.stderr
            assert endpoint.items() == []
            assert root_cluster.kubectl("get", "namespace", "kubemark-gce").returncode != 0
            assert remote_processes(vm_sshd.user, remote_root) == []
            assert list(remote_root.iterdir()) == []
            assert keys.read_text() == keys_before
            assert start_calls > 0 and len(endpoint.calls(stopped)) > 0
        finally:
            if (cli.home / "gcepods" / "state.json").exists():
                cli.run("stop", "--name", "gcepods", timeout=600, **env)
            for process in marked_processes(cli.home / "gcepods"):
                process.kill()
            psutil.wait_procs(remote_processes(vm_sshd.user, remote_root), timeout=10)
            shutil.rmtree(remote_root, ignore_errors=True)
