"""The test Compute endpoint (tests/support/gce_endpoint/) is strict: it refuses what the
compute v1 discovery document does not allow, and accepts what the real
google-cloud-compute client sends. Fast: no cluster, no binaries."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest
from google.api_core import exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

from tests.support.gce_endpoint import ComputeEndpoint

PROJECT, ZONE, REGION = "test-project", "us-central1-b", "us-central1"


@pytest.fixture
def endpoint():
    with ComputeEndpoint(op_seconds=0.05) as made:
        yield made


def client(endpoint: ComputeEndpoint, kind: type):
    return kind(transport="rest", client_options={"api_endpoint": endpoint.url}, credentials=AnonymousCredentials())


def raw(endpoint: ComputeEndpoint, verb: str, path: str, body: object = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(endpoint.url + path, data=data, method=verb,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


DISKS = f"/compute/v1/projects/{PROJECT}/zones/{ZONE}/disks"


def wait(endpoint: ComputeEndpoint, op: object, scope: str = "zone") -> compute_v1.Operation:
    if scope == "zone":
        return client(endpoint, compute_v1.ZoneOperationsClient).wait(project=PROJECT, zone=ZONE, operation=op.name)
    if scope == "region":
        return client(endpoint, compute_v1.RegionOperationsClient).wait(project=PROJECT, region=REGION, operation=op.name)
    return client(endpoint, compute_v1.GlobalOperationsClient).wait(project=PROJECT, operation=op.name)


# Accepting what the client sends ------------------------------------------------------------


def test_the_client_makes_lists_and_deletes_every_kind(endpoint):
    labels = {"kubemark-up-cluster": "c1"}
    disks = client(endpoint, compute_v1.DisksClient)
    addresses = client(endpoint, compute_v1.AddressesClient)
    firewalls = client(endpoint, compute_v1.FirewallsClient)
    instances = client(endpoint, compute_v1.InstancesClient)
    op = disks.insert(project=PROJECT, zone=ZONE, disk_resource=compute_v1.Disk(
        name="c1-pd", size_gb=20, type_=f"zones/{ZONE}/diskTypes/pd-ssd", labels=labels))
    assert wait(endpoint, op).status == compute_v1.Operation.Status.DONE
    op = addresses.insert(project=PROJECT, region=REGION, address_resource=compute_v1.Address(name="c1-ip", labels=labels))
    assert wait(endpoint, op, "region").status == compute_v1.Operation.Status.DONE
    ip = addresses.get(project=PROJECT, region=REGION, address="c1-ip").address
    assert ip == "127.0.0.1"
    op = firewalls.insert(project=PROJECT, firewall_resource=compute_v1.Firewall(
        name="c1-https", network="global/networks/default", source_ranges=["10.0.0.0/8"], target_tags=["c1"],
        allowed=[compute_v1.Allowed(I_p_protocol="tcp", ports=["443"])], description="kubemark-up cluster c1"))
    assert wait(endpoint, op, "global").status == compute_v1.Operation.Status.DONE
    instance = compute_v1.Instance(
        name="c1-master", machine_type=f"zones/{ZONE}/machineTypes/e2-standard-2", labels=labels, tags=compute_v1.Tags(items=["c1"]),
        disks=[compute_v1.AttachedDisk(boot=True, auto_delete=True, initialize_params=compute_v1.AttachedDiskInitializeParams(
            source_image="projects/debian-cloud/global/images/family/debian-12", disk_size_gb=20)),
            compute_v1.AttachedDisk(source=f"projects/{PROJECT}/zones/{ZONE}/disks/c1-pd", device_name="master-pd")],
        network_interfaces=[compute_v1.NetworkInterface(network="global/networks/default", access_configs=[
            compute_v1.AccessConfig(name="External NAT", nat_i_p=ip, type_="ONE_TO_ONE_NAT")])],
        metadata=compute_v1.Metadata(items=[compute_v1.Items(key="ssh-keys", value="me:ssh-ed25519 AAAA me")]),
    )
    op = instances.insert(project=PROJECT, zone=ZONE, instance_resource=instance)
    assert wait(endpoint, op).status == compute_v1.Operation.Status.DONE
    got = instances.get(project=PROJECT, zone=ZONE, instance="c1-master")
    assert got.status == "RUNNING" and got.network_interfaces[0].access_configs[0].nat_i_p == ip
    assert addresses.get(project=PROJECT, region=REGION, address="c1-ip").status == "IN_USE"

    listed = disks.list(request=compute_v1.ListDisksRequest(project=PROJECT, zone=ZONE,
                                                            filter='labels.kubemark-up-cluster = "c1"'))
    assert [d.name for d in listed] == ["c1-pd"]
    assert [d.name for d in disks.list(request=compute_v1.ListDisksRequest(
        project=PROJECT, zone=ZONE, filter='labels.kubemark-up-cluster = "other"'))] == []
    aggregated = instances.aggregated_list(request=compute_v1.AggregatedListInstancesRequest(
        project=PROJECT, filter="labels.kubemark-up-cluster:*"))
    assert [(scope, [i.name for i in scoped.instances]) for scope, scoped in aggregated] == [(f"zones/{ZONE}", ["c1-master"])]
    assert [f.name for f in firewalls.list(request=compute_v1.ListFirewallsRequest(
        project=PROJECT, filter='name eq "c1-.*"'))] == ["c1-https"]

    # In use: the disk and the address cannot go before the instance.
    with pytest.raises(exceptions.BadRequest, match="already being used"):
        disks.delete(project=PROJECT, zone=ZONE, disk="c1-pd")
    wait(endpoint, instances.delete(project=PROJECT, zone=ZONE, instance="c1-master"))
    wait(endpoint, disks.delete(project=PROJECT, zone=ZONE, disk="c1-pd"))
    wait(endpoint, addresses.delete(project=PROJECT, region=REGION, address="c1-ip"), "region")
    wait(endpoint, firewalls.delete(project=PROJECT, firewall="c1-https"), "global")
    assert endpoint.items() == []
    with pytest.raises(exceptions.NotFound):
        disks.get(project=PROJECT, zone=ZONE, disk="c1-pd")
    assert all(entry.status in (200, 400, 404) for entry in endpoint.log)
    assert {entry.method_id for entry in endpoint.log} >= {"compute.disks.insert", "compute.zoneOperations.wait",
                                                           "compute.instances.aggregatedList"}


def test_operations_go_pending_running_done(tmp_path):
    with ComputeEndpoint(op_seconds=0.6) as endpoint:
        disks = client(endpoint, compute_v1.DisksClient)
        ops = client(endpoint, compute_v1.ZoneOperationsClient)
        op = disks.insert(project=PROJECT, zone=ZONE, disk_resource=compute_v1.Disk(name="d"))
        seen = []
        for _ in range(40):
            status = ops.get(project=PROJECT, zone=ZONE, operation=op.name).status
            seen.append(compute_v1.Operation.Status(status).name)
            if seen[-1] == "DONE":
                break
            time.sleep(0.05)
        assert seen[0] == "PENDING" and "RUNNING" in seen and seen[-1] == "DONE"
        assert disks.get(project=PROJECT, zone=ZONE, disk="d").status == "READY"


def test_faults_an_http_error_an_operation_error_and_a_hold(endpoint):
    disks = client(endpoint, compute_v1.DisksClient)
    endpoint.fault("compute.disks.insert", status=403, reason="forbidden",
                   message="Required 'compute.disks.create' permission for 'projects/test-project'")
    with pytest.raises(exceptions.Forbidden, match=r"compute\.disks\.create"):
        disks.insert(project=PROJECT, zone=ZONE, disk_resource=compute_v1.Disk(name="d"))
    endpoint.fault("compute.disks.insert", op_error="QUOTA_EXCEEDED", message="Quota 'SSD_TOTAL_GB' exceeded.")
    done = wait(endpoint, disks.insert(project=PROJECT, zone=ZONE, disk_resource=compute_v1.Disk(name="d")))
    assert done.error.errors[0].code == "QUOTA_EXCEEDED"
    assert endpoint.items() == []  # a failed insert leaves nothing
    hold = endpoint.fault("compute.disks.insert", hold=True)
    thread = threading.Thread(target=lambda: disks.insert(project=PROJECT, zone=ZONE, disk_resource=compute_v1.Disk(name="d")))
    thread.start()
    assert hold.held.wait(10)
    assert endpoint.items() == []
    hold.release()
    thread.join(10)
    assert [d["name"] for d in endpoint.items("disks")] == ["d"]


def test_instances_need_their_disks_and_reserved_address(endpoint):
    instances = client(endpoint, compute_v1.InstancesClient)
    missing = compute_v1.Instance(name="vm", machine_type="zones/x/machineTypes/e2-small", disks=[
        compute_v1.AttachedDisk(source=f"projects/{PROJECT}/zones/{ZONE}/disks/nope", boot=True)])
    with pytest.raises(exceptions.NotFound, match="nope"):
        instances.insert(project=PROJECT, zone=ZONE, instance_resource=missing)
    unreserved = compute_v1.Instance(name="vm", machine_type="zones/x/machineTypes/e2-small", disks=[
        compute_v1.AttachedDisk(boot=True, initialize_params=compute_v1.AttachedDiskInitializeParams(source_image="x"))],
        network_interfaces=[compute_v1.NetworkInterface(access_configs=[compute_v1.AccessConfig(nat_i_p="203.0.113.9")])])
    with pytest.raises(exceptions.BadRequest, match="was not found in region"):
        instances.insert(project=PROJECT, zone=ZONE, instance_resource=unreserved)
    wait(endpoint, client(endpoint, compute_v1.DisksClient).insert(project=PROJECT, zone=ZONE,
                                                                    disk_resource=compute_v1.Disk(name="d")))
    with pytest.raises(exceptions.Conflict, match="already exists"):
        client(endpoint, compute_v1.DisksClient).insert(project=PROJECT, zone=ZONE, disk_resource=compute_v1.Disk(name="d"))


def test_the_guest_environment_puts_ssh_keys_in_place(tmp_path):
    keys = tmp_path / "authorized_keys"
    keys.write_text("ssh-ed25519 BBBB theirs\n")
    with ComputeEndpoint(op_seconds=0.01, authorized_keys=keys) as endpoint:
        instances = client(endpoint, compute_v1.InstancesClient)
        vm = compute_v1.Instance(name="vm", machine_type="zones/x/machineTypes/e2-small", disks=[
            compute_v1.AttachedDisk(boot=True, initialize_params=compute_v1.AttachedDiskInitializeParams(source_image="x"))],
            metadata=compute_v1.Metadata(items=[compute_v1.Items(key="ssh-keys", value="me:ssh-ed25519 AAAA me")]))
        wait(endpoint, instances.insert(project=PROJECT, zone=ZONE, instance_resource=vm))
        assert keys.read_text() == "ssh-ed25519 BBBB theirs\nssh-ed25519 AAAA me\n"
        wait(endpoint, instances.delete(project=PROJECT, zone=ZONE, instance="vm"))
        assert keys.read_text() == "ssh-ed25519 BBBB theirs\n"


def test_metadata_changes_need_the_current_fingerprint_and_put_keys_in_place(tmp_path):
    keys = tmp_path / "authorized_keys"
    keys.write_text("")
    with ComputeEndpoint(op_seconds=0.01, authorized_keys=keys) as endpoint:
        instances = client(endpoint, compute_v1.InstancesClient)
        vm = compute_v1.Instance(name="vm", machine_type="zones/x/machineTypes/e2-small", disks=[
            compute_v1.AttachedDisk(boot=True, initialize_params=compute_v1.AttachedDiskInitializeParams(source_image="x"))],
            metadata=compute_v1.Metadata(items=[compute_v1.Items(key="ssh-keys", value="me:ssh-ed25519 AAAA me")]))
        wait(endpoint, instances.insert(project=PROJECT, zone=ZONE, instance_resource=vm))
        metadata = instances.get(project=PROJECT, zone=ZONE, instance="vm").metadata
        assert metadata.fingerprint
        changed = compute_v1.Metadata(fingerprint=metadata.fingerprint, items=[
            compute_v1.Items(key="ssh-keys", value="me:ssh-ed25519 CCCC me")])
        wait(endpoint, instances.set_metadata(project=PROJECT, zone=ZONE, instance="vm", metadata_resource=changed))
        assert keys.read_text() == "ssh-ed25519 CCCC me\n"
        # The fingerprint changed with it: a change made from the old one is refused.
        with pytest.raises(exceptions.PreconditionFailed, match="fingerprint does not match"):
            instances.set_metadata(project=PROJECT, zone=ZONE, instance="vm", metadata_resource=changed)


def test_a_running_vm_shows_its_host_keys_on_its_serial_port_and_in_guest_attributes():
    host_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOmq4cnbsclkFW0GCOp7ZpM+WILVqTQCxqQBk9mk7tjk",
                 "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY="]
    with ComputeEndpoint(op_seconds=0.01, host_keys=host_keys) as endpoint:
        instances = client(endpoint, compute_v1.InstancesClient)

        def make(name: str, guest_attributes: bool) -> None:
            items = [compute_v1.Items(key="enable-guest-attributes", value="TRUE")] if guest_attributes else []
            vm = compute_v1.Instance(name=name, machine_type="zones/x/machineTypes/e2-small", disks=[
                compute_v1.AttachedDisk(boot=True, initialize_params=compute_v1.AttachedDiskInitializeParams(source_image="x"))],
                metadata=compute_v1.Metadata(items=items))
            wait(endpoint, instances.insert(project=PROJECT, zone=ZONE, instance_resource=vm))

        make("vm", guest_attributes=True)
        output = instances.get_serial_port_output(request=compute_v1.GetSerialPortOutputInstanceRequest(
            project=PROJECT, zone=ZONE, instance="vm", port=1))
        block = output.contents.split("-----BEGIN SSH HOST KEY KEYS-----\n")[1].split("-----END")[0]
        assert block.splitlines() == host_keys and int(output.next) == len(output.contents)
        found = instances.get_guest_attributes(request=compute_v1.GetGuestAttributesInstanceRequest(
            project=PROJECT, zone=ZONE, instance="vm", query_path="hostkeys/"))
        assert [(e.namespace, e.key, e.value) for e in found.query_value.items] == [
            ("hostkeys", k.split()[0], k.split()[1]) for k in host_keys]
        # Not asked for in its metadata: none, as a real guest environment keeps them.
        make("quiet", guest_attributes=False)
        with pytest.raises(exceptions.NotFound):
            instances.get_guest_attributes(request=compute_v1.GetGuestAttributesInstanceRequest(
                project=PROJECT, zone=ZONE, instance="quiet", query_path="hostkeys/"))
        # What the discovery document does not allow is refused here too.
        status, answer = raw(endpoint, "GET", f"/compute/v1/projects/{PROJECT}/zones/{ZONE}/instances/vm/serialPort?port=one")
        assert status == 400 and "port" in answer["error"]["message"]
        status, _ = raw(endpoint, "GET", f"/compute/v1/projects/{PROJECT}/zones/{ZONE}/instances/vm/serialPort?lines=9")
        assert status == 400


# Refusing what the discovery document does not allow ------------------------------------------


@pytest.mark.parametrize(("verb", "path", "body", "code", "needle"), [
    ("GET", DISKS + "?colour=red", None, 400, 'Unknown name "colour"'),
    ("GET", DISKS + "?maxResults=many", None, 400, "query parameter maxResults"),
    ("GET", DISKS + "?alt=xml", None, 400, "one of json, media, proto"),
    ("GET", DISKS + "?filter=a&filter=b", None, 400, "given 2 times"),
    ("GET", f"/compute/v1/projects/{PROJECT}/zones/US_CENTRAL/disks", None, 400, "Invalid value for field 'zone'"),
    ("PUT", DISKS, {"name": "d"}, 405, "PUT is not allowed"),
    ("GET", f"/compute/v1/projects/{PROJECT}/zones/{ZONE}/teapots", None, 404, "no compute v1 method"),
    ("GET", "/compute/v2/projects/p/zones/z/disks", None, 404, "not under /compute/v1/"),
    ("POST", DISKS, {"name": "d", "sizeGigabytes": 10}, 400, 'Unknown name "sizeGigabytes"'),
    ("POST", DISKS, {"name": "d", "labels": {"a": 1}}, 400, "resource.labels.a"),
    ("POST", DISKS, {"name": 7}, 400, "resource.name"),
    ("POST", DISKS, {"name": "d", "sizeGb": "ten"}, 400, "resource.sizeGb"),
    ("POST", DISKS, ["not", "an", "object"], 400, "must be a JSON object"),
    ("POST", f"/compute/v1/projects/{PROJECT}/zones/{ZONE}/instances",
     {"machineType": "zones/x/machineTypes/e2-small", "disks": [{"boot": True}]}, 400, "Required field 'resource.name'"),
    ("POST", f"/compute/v1/projects/{PROJECT}/zones/{ZONE}/instances",
     {"name": "vm", "disks": [{"boot": "yes"}]}, 400, "resource.disks[0].boot"),
    ("POST", f"/compute/v1/projects/{PROJECT}/global/firewalls",
     {"name": "fw", "allowed": [{"IPProtocol": "tcp", "ports": ["443"]}], "direction": "SIDEWAYS"}, 400, "INGRESS"),
    ("DELETE", DISKS + "/d", {"force": True}, 400, "takes no request body"),
    ("GET", DISKS + "?filter=" + urllib.request.quote("labels.x ~ y"), None, 400, "Invalid list filter"),
])
def test_refuses_what_the_discovery_document_does_not_allow(endpoint, verb, path, body, code, needle):
    status, answer = raw(endpoint, verb, path, body)
    assert status == code, answer
    assert needle in answer["error"]["message"], answer
    assert endpoint.items() == []


def test_a_valid_method_it_does_not_implement_says_so(endpoint):
    status, answer = raw(endpoint, "POST", DISKS + "/d/resize", {"sizeGb": "20"})
    assert status == 501 and "not implemented by the test endpoint" in answer["error"]["message"]


def test_the_document_comes_from_the_installed_package():
    import googleapiclient

    from tests.support.gce_endpoint import discovery_document

    doc = discovery_document()
    assert doc["name"] == "compute" and doc["version"] == "v1"
    assert googleapiclient.__file__  # the package is installed (the test extra)
