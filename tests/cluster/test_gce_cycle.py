"""The gce provider for real, up to the master: the real CLI and google-cloud-compute
client against the strict test endpoint (tests/support/gce_endpoint/), whose VM's external
IP (127.0.0.1) leads to a real unprivileged sshd (tests/support/sshd.py) that takes the key
the provider put into the VM's ssh-keys metadata. Each fault is followed by stop,
which must leave the endpoint empty (what is not ours excepted: never deleted)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
import yaml

from tests.support.cli import CLI, assert_one_line_error, marked_processes
from tests.support.gce_endpoint import ComputeEndpoint
from tests.support.sshd import SSHServer

PROJECT, ZONE, REGION = "test-project", "us-central1-b", "us-central1"
LABEL = "kubemark-up-cluster"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cloud:
    cli: CLI
    endpoint: ComputeEndpoint
    sshd: SSHServer
    root: Path  # gce.remote_root on the "VM"
    keys_before: str = ""
    configs: list[Path] = field(default_factory=list)

    def config(self, **gce: object) -> Path:
        section = {
            "project": PROJECT, "zone": ZONE, "source_ranges": ["127.0.0.1/32"], "ssh_user": self.sshd.user,
            "ssh_port": self.sshd.port, "remote_root": str(self.root), "bind_address": "127.0.0.1",
            "events_root": str(self.root / "events-pd"), "connect_timeout": 5, "ssh_wait_timeout": 20, **gce,
        }
        path = self.cli.home.parent / f"gce-{len(self.configs)}.yaml"
        path.write_text(yaml.safe_dump({"provider": "gce", "gce": section}))
        self.configs.append(path)
        return path

    def env(self) -> dict[str, str]:
        return {"KUBEMARK_UP_GCE_ENDPOINT": self.endpoint.url}

    def args(self, name: str, nodes: int, **gce: object) -> list[str]:
        return ["start", "--name", name, "--nodes", str(nodes), "--config", str(self.config(**gce)),
                "--apiserver-port", str(_free_port())]

    def start(self, name: str, nodes: int = 0, **gce: object) -> subprocess.CompletedProcess:
        return self.cli.run(*self.args(name, nodes, **gce), timeout=600, **self.env())

    def stop(self, name: str, *extra: str) -> subprocess.CompletedProcess:
        return self.cli.run("stop", "--name", name, *extra, timeout=300, **self.env())

    def state(self, name: str) -> dict:
        return json.loads((self.cli.home / name / "state.json").read_text())

    def ours(self) -> list[dict]:
        return [r for r in self.endpoint.items() if r.get("labels", {}).get(LABEL) or r["kind"] == "compute#firewall"]


def remote_processes(user: str, root: Path) -> list[psutil.Process]:
    """The live processes of the SSH user that run from under root (the sshd user is
    shared with other tests: only what runs from this test's folder is this test's)."""
    found = []
    for process in psutil.process_iter(["username", "name", "status", "cmdline"]):
        info = process.info
        if info["username"] != user or info["status"] == psutil.STATUS_ZOMBIE or info["name"] in ("sshd", "sh"):
            continue
        if str(root) in " ".join(info["cmdline"] or []):
            found.append(process)
    return found


def assert_nothing_left(cloud: Cloud, name: str) -> None:
    assert cloud.endpoint.items() == [], cloud.endpoint.names()
    assert remote_processes(cloud.sshd.user, cloud.root) == []
    assert list(cloud.root.iterdir()) == []
    assert (cloud.sshd.dir / "authorized_keys").read_text() == cloud.keys_before
    assert not (cloud.cli.home / name / "state.json").exists()


@pytest.fixture
def cloud(tmp_path, bin_dir, sshd):
    keys = sshd.dir / "authorized_keys"
    endpoint = ComputeEndpoint(op_seconds=0.05, authorized_keys=keys, host_keys=[_host_key(sshd)]).start()
    root = sshd.home / f"kmup-gce-{os.getpid()}-{tmp_path.name}"
    root.mkdir(mode=0o755)
    shutil.chown(root, sshd.user)
    made = Cloud(cli=CLI(home=tmp_path / "home", bin_dir=bin_dir), endpoint=endpoint, sshd=sshd, root=root,
                 keys_before=keys.read_text())
    yield made
    home = made.cli.home
    for name in [p.name for p in home.iterdir() if p.is_dir() and p.name != "bin"] if home.exists() else []:
        made.stop(name)
        for process in marked_processes(home / name):
            process.kill()
    endpoint.stop()
    keys.write_text(made.keys_before)
    shutil.rmtree(root, ignore_errors=True)


def _host_key(sshd: SSHServer) -> str:
    """The "VM"'s SSH host key, as it publishes it: type and key."""
    return " ".join(sshd.host_key.with_suffix(".pub").read_text().split()[:2])


def _calls(cloud: Cloud, since: float) -> list[str]:
    return [e.method_id for e in cloud.endpoint.calls(since) if e.method_id]


# The cycle -------------------------------------------------------------------------------


def test_start_and_stop_a_master_on_the_vm(cloud):
    began = time.time()
    result = cloud.start("gce1")
    assert result.returncode == 0, result.stderr
    items = {(r["kind"].split("#")[1], r["name"]): r for r in cloud.endpoint.items()}
    # The VM's boot disk is made with it, named after it.
    assert sorted(items) == [("address", "kubemark-up-gce1-ip"), ("disk", "kubemark-up-gce1-master"),
                             ("disk", "kubemark-up-gce1-pd"), ("firewall", "kubemark-up-gce1-https"),
                             ("instance", "kubemark-up-gce1-master")]
    for key, item in items.items():
        if key[0] != "firewall":
            assert item["labels"] == {LABEL: "gce1"}, key
    made = {kind: item for (kind, name), item in items.items() if name != "kubemark-up-gce1-master" or kind != "disk"}
    firewall = made["firewall"]
    assert firewall["name"] == "kubemark-up-gce1-https" and firewall["sourceRanges"] == ["127.0.0.1/32"]
    assert firewall["description"].startswith("kubemark-up cluster gce1 ")
    state = cloud.state("gce1")
    port = state["ports"]["apiserver"]
    assert firewall["allowed"] == [{"IPProtocol": "tcp", "ports": [str(port)]}]
    assert state["endpoint"] == f"https://127.0.0.1:{port}"
    # Every cloud resource recorded, as created.
    recorded = {(r["kind"], r["id"], r["status"]) for r in state["resources"] if r["kind"].startswith("gce-")}
    assert recorded == {("gce-firewall", "kubemark-up-gce1-https", "created"), ("gce-address", "kubemark-up-gce1-ip", "created"),
                        ("gce-disk", "kubemark-up-gce1-pd", "created"), ("gce-instance", "kubemark-up-gce1-master", "created")}
    # The address was reserved before the certificates were written, and is in them.
    calls = _calls(cloud, began)
    assert calls.index("compute.addresses.insert") < calls.index("compute.instances.insert")
    cert = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in",
                           str(cloud.cli.home / "gce1" / "pki" / "apiserver.crt")], capture_output=True, text=True)
    assert "IP Address:127.0.0.1" in cert.stdout
    # The cluster's own key pair: private here (0600), public in the VM's metadata.
    key = cloud.cli.home / "gce1" / "pki" / "gce-ssh-key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    public = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True, text=True, check=True).stdout.split()
    metadata = {i["key"]: i["value"] for i in made["instance"]["metadata"]["items"]}
    assert metadata["ssh-keys"].startswith(f"{cloud.sshd.user}:{public[0]} {public[1]} ")
    assert "PRIVATE KEY" not in json.dumps(made)
    # The host key taken on first use, said so, and pinned.
    name = f"{cloud.sshd.user}@127.0.0.1:{cloud.sshd.port}"
    assert f"trusting the unknown host key of {name}" in result.stderr
    assert state["host_keys"][name].split()[1] == cloud.sshd.host_key.with_suffix(".pub").read_text().split()[1]
    # ... and found to be the one the VM published, before anything secret went to it.
    assert f"the SSH host key of {name} matches the one the VM published in its guest attributes" in result.stderr
    calls = _calls(cloud, began)
    assert "compute.instances.getGuestAttributes" in calls
    assert "compute.instances.getSerialPortOutput" not in calls
    assert {"key": "enable-guest-attributes", "value": "TRUE"} in made["instance"]["metadata"]["items"]
    # The master runs on the VM.
    status = cloud.cli.run("status", "--name", "gce1", "-o", "json", **cloud.env())
    assert status.returncode == 0, status.stdout + status.stderr
    report = json.loads(status.stdout)
    assert report["master"]["healthy"] and report["provider"] == "gce" and report["master_host"] == name

    stopped = time.time()
    result = cloud.stop("gce1")
    assert result.returncode == 0, result.stderr
    deletes = [c for c in _calls(cloud, stopped) if c.endswith(".delete")]
    assert deletes == ["compute.instances.delete", "compute.disks.delete", "compute.addresses.delete",
                       "compute.firewalls.delete"]
    assert_nothing_left(cloud, "gce1")


# Faults --------------------------------------------------------------------------------------


def test_quota_exceeded_on_the_vm(cloud):
    cloud.endpoint.fault("compute.instances.insert", op_error="QUOTA_EXCEEDED",
                         message="Quota 'CPUS' exceeded.  Limit: 8.0 in region us-central1.")
    result = cloud.start("quota")
    assert_one_line_error(result, 1, "create VM kubemark-up-quota-master", "quota", "CPUS")
    assert cloud.endpoint.items() == []  # start undid what it made
    assert cloud.stop("quota").returncode == 0
    assert_nothing_left(cloud, "quota")


def test_an_operation_that_ends_in_error(cloud):
    cloud.endpoint.fault("compute.disks.insert", op_error="RESOURCE_OPERATION_RATE_EXCEEDED",
                         message="Operation rate exceeded for resource 'projects/test-project/zones/us-central1-b/disks'.")
    result = cloud.start("operr")
    assert_one_line_error(result, 1, "create disk kubemark-up-operr-pd", "RESOURCE_OPERATION_RATE_EXCEEDED")
    assert cloud.stop("operr").returncode == 0
    assert_nothing_left(cloud, "operr")


def test_a_missing_permission_is_named(cloud):
    cloud.endpoint.fault("compute.firewalls.insert", status=403, reason="forbidden",
                         message="Required 'compute.firewalls.create' permission for "
                                 "'projects/test-project/global/firewalls/kubemark-up-perm-https'")
    result = cloud.start("perm")
    assert_one_line_error(result, 1, "lack the permission compute.firewalls.create")
    assert cloud.stop("perm").returncode == 0
    assert_nothing_left(cloud, "perm")


def test_an_address_of_ours_is_adopted(cloud):
    cloud.endpoint.put("addresses", PROJECT, f"regions/{REGION}", {"name": "kubemark-up-adopt-ip", "labels": {LABEL: "adopt"},
                                                                   "address": "127.0.0.1"})
    result = cloud.start("adopt", events_disk=True)
    assert result.returncode == 0, result.stderr
    assert "address kubemark-up-adopt-ip already exists with this cluster's mark: adopted" in result.stderr
    # (and with an events disk: both attached, by their device names)
    (vm,) = cloud.endpoint.items("instances")
    assert [d.get("deviceName") for d in vm["disks"]] == [None, "master-pd", "master-event-pd"]
    assert {d["name"] for d in cloud.endpoint.items("disks")} == {
        "kubemark-up-adopt-master", "kubemark-up-adopt-pd", "kubemark-up-adopt-events-pd"}
    assert cloud.stop("adopt").returncode == 0
    assert_nothing_left(cloud, "adopt")


def test_an_address_not_ours_is_refused_and_left_alone(cloud):
    theirs = {"name": "kubemark-up-taken-ip", "labels": {"team": "other"}, "address": "127.0.0.1"}
    cloud.endpoint.put("addresses", PROJECT, f"regions/{REGION}", theirs)
    result = cloud.start("taken")
    assert_one_line_error(result, 1, "kubemark-up-taken-ip already exists", "is not this cluster's", "left alone")
    assert cloud.stop("taken").returncode == 0
    left = cloud.endpoint.items()
    assert [(r["name"], r["labels"]) for r in left] == [("kubemark-up-taken-ip", {"team": "other"})]
    cloud.endpoint.remove("addresses", PROJECT, f"regions/{REGION}", "kubemark-up-taken-ip")
    assert_nothing_left(cloud, "taken")


def test_what_is_already_gone_at_stop_counts_as_deleted(cloud):
    assert cloud.start("gone").returncode == 0
    # Deleted behind our back: before stop looks (its get is a 404), and between its
    # get and its delete (the delete is a 404).
    cloud.endpoint.remove("firewalls", PROJECT, "global", "kubemark-up-gone-https")
    cloud.endpoint.fault("compute.addresses.delete", vanish=True)
    result = cloud.stop("gone")
    assert result.returncode == 0, result.stderr
    statuses = [(e.method_id, e.status) for e in cloud.endpoint.log if e.method_id.endswith((".delete", ".get"))]
    assert ("compute.addresses.delete", 404) in statuses and ("compute.firewalls.get", 404) in statuses
    assert_nothing_left(cloud, "gone")


def test_sigkill_between_the_disk_and_the_vm(cloud):
    hold = cloud.endpoint.fault("compute.instances.insert", hold=True)
    process = cloud.cli.popen(*cloud.args("killed", 0), **cloud.env())
    try:
        assert hold.held.wait(120), process.communicate(timeout=5)
        process.kill()
        process.wait(30)
    finally:
        hold.release()  # the endpoint makes the VM all the same: its client just never heard
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not cloud.endpoint.items("instances"):
        time.sleep(0.05)
    assert {r["kind"] for r in cloud.endpoint.items()} == {"compute#firewall", "compute#address", "compute#disk",
                                                            "compute#instance"}
    planned = {r["id"]: r["status"] for r in cloud.state("killed")["resources"]}
    assert planned["kubemark-up-killed-master"] == "planned" and planned["kubemark-up-killed-pd"] == "created"
    result = cloud.stop("killed")
    assert result.returncode == 0, result.stderr
    assert_nothing_left(cloud, "killed")


def test_state_lost_after_start_is_found_by_label(cloud):
    assert cloud.start("lost").returncode == 0
    (cloud.cli.home / "lost" / "state.json").unlink()
    result = cloud.stop("lost")
    assert result.returncode == 0, result.stderr
    assert "carries this cluster's mark but state did not know it" in result.stderr
    assert cloud.endpoint.items() == []
    # Deleting the VM ends what ran on it; here the "VM" is this machine's sshd user.
    for process in marked_processes(cloud.cli.home / "lost"):
        process.kill()
    for process in remote_processes(cloud.sshd.user, cloud.root):
        process.kill()
    psutil.wait_procs(remote_processes(cloud.sshd.user, cloud.root), timeout=10)
    shutil.rmtree(cloud.root / "lost", ignore_errors=True)
    assert_nothing_left(cloud, "lost")


def test_gc_lists_and_deletes_what_has_no_state_here(cloud):
    assert cloud.start("orphan").returncode == 0
    cluster_dir = cloud.cli.home / "orphan"
    marker = cluster_dir
    survivors = marked_processes(marker)
    shutil.rmtree(cluster_dir)
    listed = cloud.cli.run("gc", "--provider", "gce", "--project", PROJECT, **cloud.env())
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    # The firewall rule, the address, the master disk, the VM and its boot disk.
    assert sum("of cluster orphan" in line for line in lines) == 5, listed.stdout
    assert len(cloud.endpoint.items()) == 5  # listed, not deleted
    deleted = cloud.cli.run("gc", "--provider", "gce", "--project", PROJECT, "--yes", **cloud.env())
    assert deleted.returncode == 0, deleted.stderr
    assert cloud.endpoint.items() == []
    again = cloud.cli.run("gc", "--provider", "gce", "--project", PROJECT, **cloud.env())
    assert "no resources of kubemark-up clusters without state here" in again.stdout
    for process in survivors + remote_processes(cloud.sshd.user, cloud.root):
        process.kill()
    psutil.wait_procs(remote_processes(cloud.sshd.user, cloud.root), timeout=10)
    shutil.rmtree(cloud.root / "orphan", ignore_errors=True)


def test_gc_leaves_clusters_with_state_alone(cloud):
    assert cloud.start("kept").returncode == 0
    listed = cloud.cli.run("gc", "--provider", "gce", "--project", PROJECT, "--yes", **cloud.env())
    assert listed.returncode == 0, listed.stderr
    assert "no resources of kubemark-up clusters without state here" in listed.stdout
    assert len(cloud.endpoint.items()) == 5
    assert cloud.stop("kept").returncode == 0
    assert_nothing_left(cloud, "kept")


def test_a_second_stop_finds_nothing(cloud):
    assert cloud.start("twice").returncode == 0
    assert cloud.stop("twice").returncode == 0
    again = cloud.stop("twice")
    assert again.returncode == 0 and "nothing to stop" in again.stdout
    assert_nothing_left(cloud, "twice")


def test_a_vm_deleted_behind_our_back_excuses_what_ran_on_it(cloud):
    assert cloud.start("novm", 1).returncode == 0
    # The VM goes (its keys with it: SSH is refused now), and what ran on it.
    cloud.endpoint.remove("instances", PROJECT, f"zones/{ZONE}", "kubemark-up-novm-master")
    for process in marked_processes(cloud.cli.home / "novm") + remote_processes(cloud.sshd.user, cloud.root):
        process.kill()
    psutil.wait_procs(remote_processes(cloud.sshd.user, cloud.root), timeout=10)
    result = cloud.stop("novm")
    assert result.returncode == 0, result.stderr
    shutil.rmtree(cloud.root / "novm", ignore_errors=True)  # the VM's disk, in real life
    assert_nothing_left(cloud, "novm")


def test_the_host_key_pinned_at_start_is_required_after(tmp_path, bin_dir):
    """The VM's host key is taken on first contact only: a later command that meets
    another key (the same address and port, another host) refuses it."""
    vm = SSHServer()
    vm.start()
    impostor = SSHServer()
    root = vm.home / f"kmup-gce-tofu-{os.getpid()}"
    root.mkdir(mode=0o755)
    shutil.chown(root, vm.user)
    keys = vm.dir / "authorized_keys"
    with ComputeEndpoint(op_seconds=0.05, authorized_keys=keys, host_keys=[_host_key(vm)]) as endpoint:
        cloud = Cloud(cli=CLI(home=tmp_path / "home", bin_dir=bin_dir), endpoint=endpoint, sshd=vm, root=root,
                      keys_before=keys.read_text())
        try:
            assert cloud.start("tofu").returncode == 0
            vm.stop()
            # Another sshd, another host key, where the VM was; it would let our key in.
            impostor.config.write_text(impostor.config.read_text().replace(f":{impostor.port}", f":{vm.port}"))
            impostor.port = vm.port
            (impostor.dir / "authorized_keys").write_text(keys.read_text())
            impostor.start()
            status = cloud.cli.run("status", "--name", "tofu", **cloud.env())
            assert_one_line_error(status, 1, "does not match the key pinned in this cluster's state")
            impostor.stop()
            vm.start()
            result = cloud.stop("tofu")
            assert result.returncode == 0, result.stderr
            assert_nothing_left(cloud, "tofu")
        finally:
            impostor.cleanup()
            if (cloud.cli.home / "tofu" / "state.json").exists():
                vm.restart()  # the real VM again, whatever the test got to
                cloud.stop("tofu")
            vm.cleanup()
            shutil.rmtree(root, ignore_errors=True)


def test_a_firewall_rule_of_ours_left_by_an_earlier_run_is_adopted_and_updated(cloud):
    cloud.endpoint.put("firewalls", PROJECT, "global", {
        "name": "kubemark-up-oldfw-https", "description": "kubemark-up cluster oldfw (uid 0123456789abcdef): its apiserver",
        "network": f"projects/{PROJECT}/global/networks/default", "sourceRanges": ["0.0.0.0/0"],
        "targetTags": ["kubemark-up-oldfw-master"], "allowed": [{"IPProtocol": "tcp", "ports": ["443"]}]})
    result = cloud.start("oldfw")
    assert result.returncode == 0, result.stderr
    assert "firewall rule kubemark-up-oldfw-https already exists with this cluster's mark: adopted" in result.stderr
    (rule,) = cloud.endpoint.items("firewalls")
    port = cloud.state("oldfw")["ports"]["apiserver"]
    assert rule["sourceRanges"] == ["127.0.0.1/32"] and rule["allowed"] == [{"IPProtocol": "tcp", "ports": [str(port)]}]
    assert cloud.stop("oldfw").returncode == 0
    assert_nothing_left(cloud, "oldfw")


# The VM's identity -----------------------------------------------------------------------


def test_the_host_key_is_checked_against_the_serial_console_without_guest_attributes(cloud):
    cloud.endpoint.guest_attributes = False
    result = cloud.start("serial")
    assert result.returncode == 0, result.stderr
    assert "matches the one the VM published in its serial port" in result.stderr
    calls = _calls(cloud, 0)
    assert calls.index("compute.instances.getGuestAttributes") < calls.index("compute.instances.getSerialPortOutput")
    assert cloud.stop("serial").returncode == 0
    assert_nothing_left(cloud, "serial")


def test_a_host_key_the_vm_did_not_publish_is_refused_before_any_secret_goes_there(cloud, tmp_path):
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    # The VM says its key is another: whoever answered SSH at its address is not that VM.
    cloud.endpoint.host_keys = [" ".join(other.with_suffix(".pub").read_text().split()[:2])]
    result = cloud.start("mitm")
    assert_one_line_error(result, 1, "is not one that VM kubemark-up-mitm-master published in its guest attributes",
                          "another host answered at its address; refused")
    # Refused before the cluster's folder (certificates, keys) was made there; start undid
    # everything it made (without speaking to that host again).
    assert not (cloud.root / "mitm").exists()
    assert "undo" not in result.stderr or "could not" not in result.stderr
    assert_nothing_left(cloud, "mitm")


def test_a_vm_that_publishes_no_host_key_is_said_so(cloud):
    cloud.endpoint.host_keys = []
    result = cloud.start("silent", host_key_wait_timeout=1)
    assert result.returncode == 0, result.stderr
    assert "published no SSH host key (guest attributes, serial port)" in result.stderr
    assert cloud.stop("silent").returncode == 0
    assert_nothing_left(cloud, "silent")


def test_an_adopted_vm_without_the_clusters_key_gets_it(cloud):
    """A VM of ours (its label) that an earlier start of this name made with another key:
    adopted, its metadata checked, this cluster's key put there (others kept), and SSH works."""
    zone = f"zones/{ZONE}"
    someone = "alice:ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOmq4cnbsclkFW0GCOp7ZpM+WILVqTQCxqQBk9mk7tjk alice"
    stale = (f"{cloud.sshd.user}:ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBEPkpuU3kBvXdOgcG6pHmOpqUMsLGn9qzjyO1b1ZrWg "
             "kubemark-up-oldvm")
    cloud.endpoint.put("instances", PROJECT, zone, {
        "name": "kubemark-up-oldvm-master", "labels": {LABEL: "oldvm"}, "disks": [], "networkInterfaces": [],
        "metadata": {"items": [{"key": "ssh-keys", "value": f"{someone}\n{stale}"}, {"key": "enable-guest-attributes",
                                                                                     "value": "TRUE"}]}})
    result = cloud.start("oldvm")
    assert result.returncode == 0, result.stderr
    assert "VM kubemark-up-oldvm-master already exists with this cluster's mark: adopted" in result.stderr
    assert "does not carry this cluster's SSH key in its metadata (ssh-keys): adding it" in result.stderr
    (vm,) = cloud.endpoint.items("instances")
    lines = {i["key"]: i["value"] for i in vm["metadata"]["items"]}["ssh-keys"].splitlines()
    public = subprocess.run(["ssh-keygen", "-y", "-f", str(cloud.cli.home / "oldvm" / "pki" / "gce-ssh-key")],
                            capture_output=True, text=True, check=True).stdout.split()
    # Someone else's key kept, the stale key of this cluster replaced by the current one.
    assert lines[0] == someone and len(lines) == 2 and lines[1].startswith(f"{cloud.sshd.user}:{public[0]} {public[1]}")
    assert "compute.instances.setMetadata" in _calls(cloud, 0)
    # A second start's check finds it there and changes nothing (the metadata's fingerprint guards a race).
    assert cloud.stop("oldvm").returncode == 0
    assert_nothing_left(cloud, "oldvm")


def test_events_are_kept_by_their_own_etcd_on_the_events_disk(cloud):
    result = cloud.start("ev", events_disk=True)
    assert result.returncode == 0, result.stderr
    state = cloud.state("ev")
    data = cloud.root / "events-pd" / "ev" / "etcd-events"
    # A second etcd, its data on the events disk's mount, and the apiserver sending Events there.
    events = psutil.Process(state["processes"]["etcd-events"]["pid"]).children()[0]
    assert f"--data-dir={data}" in events.cmdline() and "--name=etcd-events0" in events.cmdline()
    apiserver = psutil.Process(state["processes"]["kube-apiserver"]["pid"]).children()[0]
    port = state["ports"]["etcd_events_client"]
    assert f"--etcd-servers-overrides=/events#https://127.0.0.1:{port}" in apiserver.cmdline()
    assert (data / "member").is_dir()
    kubeconfig = str(cloud.cli.home / "ev" / "kubeconfig.kubemark")

    def keys(metrics_port: int) -> float:
        text = subprocess.run(["curl", "-sf", f"http://127.0.0.1:{metrics_port}/metrics"], capture_output=True,
                              text=True, timeout=30, check=True).stdout
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("etcd_debugging_mvcc_keys_total"))

    before = keys(state["ports"]["etcd_events_metrics"])
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "kubemark-up-test", "namespace": "default"},
             "involvedObject": {"kind": "Namespace", "name": "default"}, "reason": "Test", "message": "to etcd-events"}
    created = subprocess.run(["kubectl", "--kubeconfig", kubeconfig, "create", "-f", "-"], input=json.dumps(event),
                             capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    assert keys(state["ports"]["etcd_events_metrics"]) == before + 1  # the Event is a key of etcd-events
    listed = subprocess.run(["kubectl", "--kubeconfig", kubeconfig, "get", "event", "kubemark-up-test", "-o", "name"],
                            capture_output=True, text=True, timeout=60)
    assert listed.stdout.strip() == "event/kubemark-up-test", listed.stderr
    status = json.loads(cloud.cli.run("status", "--name", "ev", "-o", "json", **cloud.env()).stdout)
    assert [c["name"] for c in status["master"]["components"]][:2] == ["etcd", "etcd-events"]
    assert status["master"]["healthy"]
    assert cloud.stop("ev").returncode == 0
    assert not (cloud.root / "events-pd").exists()
    assert_nothing_left(cloud, "ev")
