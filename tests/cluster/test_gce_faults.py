"""The gce provider's faults, against the strict test endpoint and the real sshd as in
test_gce_cycle.py (the cloud fixture: tests/support/gce_cloud.py). Each fault is followed
by stop, which must leave the endpoint empty (what is not ours excepted: never deleted)."""

from __future__ import annotations

import os
import shutil
import time

import psutil

from kubemark_up.providers.gce import owner
from tests.support.cli import CLI, assert_one_line_error, marked_processes
from tests.support.gce_cloud import (
    LABEL,
    OWNER,
    PROJECT,
    REGION,
    ZONE,
    Cloud,
    _host_key,
    assert_nothing_left,
    remote_processes,
)
from tests.support.gce_endpoint import ComputeEndpoint
from tests.support.sshd import SSHServer

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
    cloud.endpoint.put("addresses", PROJECT, f"regions/{REGION}", {"name": "kubemark-up-adopt-ip", "address": "127.0.0.1",
                                                                   "labels": {LABEL: "adopt", OWNER: owner(cloud.cli.home)}})
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


def test_an_address_of_this_name_made_by_another_owner_is_refused_and_left_alone(cloud):
    theirs = {"name": "kubemark-up-shared-ip", "labels": {LABEL: "shared", OWNER: "0123456789ab"}, "address": "127.0.0.1"}
    cloud.endpoint.put("addresses", PROJECT, f"regions/{REGION}", theirs)
    result = cloud.start("shared")
    assert_one_line_error(result, 1, "kubemark-up-shared-ip already exists", "is another owner's",
                          f"{OWNER}=0123456789ab; this one is {owner(cloud.cli.home)}", "left alone")
    assert cloud.stop("shared").returncode == 0
    assert [r["name"] for r in cloud.endpoint.items()] == ["kubemark-up-shared-ip"]
    cloud.endpoint.remove("addresses", PROJECT, f"regions/{REGION}", "kubemark-up-shared-ip")
    assert_nothing_left(cloud, "shared")


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


def test_state_lost_after_start_is_found_by_label_and_the_name_is_free_after(cloud):
    assert cloud.start("lost").returncode == 0
    cluster_dir = cloud.cli.home / "lost"
    (cluster_dir / "state.json").unlink()
    result = cloud.stop("lost")
    assert result.returncode == 0, result.stderr
    assert "carries this cluster's mark but state did not know it" in result.stderr
    # Said as done: the cloud resources deleted (not "processes stopped"), the files here removed.
    assert result.stdout.strip() == ("kubemark cluster 'lost' stopped (deleted 5 cloud resource(s) found by its "
                                     "labels; removed its runtime files (logs kept))")
    assert cloud.endpoint.items() == []
    for made in ("cluster.json", "pki", "kubeconfig.kubemark"):
        assert not (cluster_dir / made).exists(), made
    # Deleting the VM ends what ran on it; here the "VM" is this machine's sshd user.
    for process in marked_processes(cluster_dir):
        process.kill()
    for process in remote_processes(cloud.sshd.user, cloud.root):
        process.kill()
    psutil.wait_procs(remote_processes(cloud.sshd.user, cloud.root), timeout=10)
    shutil.rmtree(cloud.root / "lost", ignore_errors=True)
    assert_nothing_left(cloud, "lost")
    # The name is free: a second start of it works (and a second stop after it finds all).
    again = cloud.start("lost")
    assert again.returncode == 0, again.stderr
    assert cloud.stop("lost").returncode == 0
    assert_nothing_left(cloud, "lost")


def test_gc_lists_and_deletes_what_has_no_state_here_and_is_this_owners(cloud):
    assert cloud.start("orphan").returncode == 0
    cluster_dir = cloud.cli.home / "orphan"
    marker = cluster_dir
    survivors = marked_processes(marker)
    shutil.rmtree(cluster_dir)
    # Another operator's cluster in the same project, with no state here either.
    theirs = {LABEL: "theirs", OWNER: "0123456789ab"}
    cloud.endpoint.put("disks", PROJECT, f"zones/{ZONE}", {"name": "kubemark-up-theirs-pd", "labels": theirs})
    cloud.endpoint.put("addresses", PROJECT, f"regions/{REGION}", {"name": "kubemark-up-theirs-ip", "labels": theirs,
                                                                  "address": "10.1.2.3"})
    cloud.endpoint.put("firewalls", PROJECT, "global", {
        "name": "kubemark-up-theirs-ssh", "network": f"projects/{PROJECT}/global/networks/default",
        "description": "kubemark-up cluster theirs (owner 0123456789ab, uid 0123456789abcdef): SSH to its master",
        "sourceRanges": ["10.0.0.0/8"], "allowed": [{"IPProtocol": "tcp", "ports": ["22"]}]})
    listed = cloud.cli.run("gc", "--provider", "gce", "--project", PROJECT, **cloud.env())
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    # The two firewall rules, the address, the master disk, the VM and its boot disk.
    assert sum(line.endswith("of cluster orphan") for line in lines) == 6, listed.stdout
    assert sum(line.startswith("skipped ") and "of cluster theirs: owner 0123456789ab" in line for line in lines) == 3
    assert len(cloud.endpoint.items()) == 9  # listed, not deleted
    deleted = cloud.cli.run("gc", "--provider", "gce", "--project", PROJECT, "--yes", **cloud.env())
    assert deleted.returncode == 0, deleted.stderr
    assert "3 resource(s) of other owners skipped; --all-owners includes them" in deleted.stdout
    # Only this owner's went: the other operator's are as they were.
    assert cloud.endpoint.names() == {"disk/kubemark-up-theirs-pd", "address/kubemark-up-theirs-ip",
                                      "firewall/kubemark-up-theirs-ssh"}
    again = cloud.cli.run("gc", "--provider", "gce", "--project", PROJECT, **cloud.env())
    assert "no resources of kubemark-up clusters without state here of this owner" in again.stdout
    for collection, scope, name in (("disks", f"zones/{ZONE}", "kubemark-up-theirs-pd"),
                                    ("addresses", f"regions/{REGION}", "kubemark-up-theirs-ip"),
                                    ("firewalls", "global", "kubemark-up-theirs-ssh")):
        cloud.endpoint.remove(collection, PROJECT, scope, name)
    for process in survivors + remote_processes(cloud.sshd.user, cloud.root):
        process.kill()
    psutil.wait_procs(remote_processes(cloud.sshd.user, cloud.root), timeout=10)
    shutil.rmtree(cloud.root / "orphan", ignore_errors=True)


def test_gc_leaves_clusters_with_state_alone(cloud):
    assert cloud.start("kept").returncode == 0
    listed = cloud.cli.run("gc", "--provider", "gce", "--project", PROJECT, "--yes", **cloud.env())
    assert listed.returncode == 0, listed.stderr
    assert "no resources of kubemark-up clusters without state here" in listed.stdout
    assert len(cloud.endpoint.items()) == 6
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
        "name": "kubemark-up-oldfw-https",
        "description": f"kubemark-up cluster oldfw (owner {owner(cloud.cli.home)}, uid 0123456789abcdef): its apiserver",
        "network": f"projects/{PROJECT}/global/networks/default", "sourceRanges": ["0.0.0.0/0"],
        "targetTags": ["kubemark-up-oldfw-master"], "allowed": [{"IPProtocol": "tcp", "ports": ["443"]}]})
    result = cloud.start("oldfw")
    assert result.returncode == 0, result.stderr
    assert "firewall rule kubemark-up-oldfw-https already exists with this cluster's mark: adopted" in result.stderr
    rule = next(r for r in cloud.endpoint.items("firewalls") if r["name"] == "kubemark-up-oldfw-https")
    port = cloud.state("oldfw")["ports"]["apiserver"]
    assert rule["sourceRanges"] == ["127.0.0.1/32"] and rule["allowed"] == [{"IPProtocol": "tcp", "ports": [str(port)]}]
    assert cloud.stop("oldfw").returncode == 0
    assert_nothing_left(cloud, "oldfw")
