"""The gce provider for real, up to the master: the real CLI and google-cloud-compute
client against the strict test endpoint (tests/support/gce_endpoint/), whose VM's external
IP (127.0.0.1) leads to a real unprivileged sshd (tests/support/sshd.py) that takes the key
the provider put into the VM's ssh-keys metadata (the cloud fixture: tests/support/gce_cloud.py).
Here the full cycle, the VM's identity and the events etcd; faults are in test_gce_faults.py."""

from __future__ import annotations

import json
import stat
import subprocess
import time

import psutil

from kubemark_up.providers.gce import owner
from tests.support.cli import assert_one_line_error
from tests.support.gce_cloud import LABEL, OWNER, PROJECT, ZONE, _calls, assert_nothing_left

# The cycle -------------------------------------------------------------------------------


def test_start_and_stop_a_master_on_the_vm(cloud):
    began = time.time()
    result = cloud.start("gce1")
    assert result.returncode == 0, result.stderr
    items = {(r["kind"].split("#")[1], r["name"]): r for r in cloud.endpoint.items()}
    # The VM's boot disk is made with it, named after it.
    assert sorted(items) == [("address", "kubemark-up-gce1-ip"), ("disk", "kubemark-up-gce1-master"),
                             ("disk", "kubemark-up-gce1-pd"), ("firewall", "kubemark-up-gce1-https"),
                             ("firewall", "kubemark-up-gce1-ssh"), ("instance", "kubemark-up-gce1-master")]
    mine = owner(cloud.cli.home)
    for key, item in items.items():
        if key[0] != "firewall":
            assert item["labels"] == {LABEL: "gce1", OWNER: mine}, key
    made = {kind: item for (kind, name), item in items.items() if kind not in ("disk", "firewall")}
    firewall, ssh = items["firewall", "kubemark-up-gce1-https"], items["firewall", "kubemark-up-gce1-ssh"]
    state = cloud.state("gce1")
    port = state["ports"]["apiserver"]
    assert firewall["allowed"] == [{"IPProtocol": "tcp", "ports": [str(port)]}]
    # SSH to the VM from the same ranges: kubemark-up's own way in.
    assert ssh["allowed"] == [{"IPProtocol": "tcp", "ports": [str(cloud.sshd.port)]}]
    for rule in (firewall, ssh):
        assert rule["sourceRanges"] == ["127.0.0.1/32"] and rule["targetTags"] == ["kubemark-up-gce1-master"]
        assert rule["description"].startswith(f"kubemark-up cluster gce1 (owner {mine}, uid ")
    assert state["endpoint"] == f"https://127.0.0.1:{port}"
    # Every cloud resource recorded, as created.
    recorded = {(r["kind"], r["id"], r["status"]) for r in state["resources"] if r["kind"].startswith("gce-")}
    assert recorded == {("gce-firewall", "kubemark-up-gce1-https", "created"),
                        ("gce-firewall", "kubemark-up-gce1-ssh", "created"), ("gce-address", "kubemark-up-gce1-ip", "created"),
                        ("gce-disk", "kubemark-up-gce1-pd", "created"), ("gce-instance", "kubemark-up-gce1-master", "created")}
    # The address was reserved before the certificates were written, and is in them.
    calls = _calls(cloud, began)
    assert calls.index("compute.addresses.insert") < calls.index("compute.instances.insert")
    assert calls.count("compute.firewalls.insert") == 2
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
    assert "deleted 5 cloud resource(s)" in result.stdout  # the VM, its disk, the address, two rules
    deletes = [c for c in _calls(cloud, stopped) if c.endswith(".delete")]
    assert deletes == ["compute.instances.delete", "compute.disks.delete", "compute.addresses.delete",
                       "compute.firewalls.delete", "compute.firewalls.delete"]
    assert_nothing_left(cloud, "gce1")


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


def test_a_403_on_guest_attributes_falls_back_to_the_serial_console(cloud):
    """Credentials without compute.instances.getGuestAttributes: the host key is checked
    against the serial console's, and start goes on."""
    cloud.endpoint.fault("compute.instances.getGuestAttributes", status=403, reason="forbidden", times=1000,
                         message="Required 'compute.instances.getGuestAttributes' permission for "
                                 f"'projects/{PROJECT}/zones/{ZONE}/instances/kubemark-up-denied-master'")
    result = cloud.start("denied")
    assert result.returncode == 0, result.stderr
    assert "lack the permission compute.instances.getGuestAttributes" in result.stderr
    assert "the VM's host keys are read from its serial console instead" in result.stderr
    assert "matches the one the VM published in its serial port" in result.stderr
    statuses = [(e.method_id, e.status) for e in cloud.endpoint.calls(0)]
    assert ("compute.instances.getGuestAttributes", 403) in statuses
    assert ("compute.instances.getSerialPortOutput", 200) in statuses
    assert cloud.stop("denied").returncode == 0
    assert_nothing_left(cloud, "denied")


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
        "name": "kubemark-up-oldvm-master", "labels": {LABEL: "oldvm", OWNER: owner(cloud.cli.home)}, "disks": [], "networkInterfaces": [],
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
