"""The gce provider, fast tier: master sizing as the legacy scripts did it, settings
errors as one line, --dry-run making nothing (the real CLI, pointed at the strict
test endpoint), credentials missing said so."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from kubemark_up.providers import gce
from tests.support.cli import CLI, assert_one_line_error
from tests.support.gce_endpoint import ComputeEndpoint

PROJECT = "test-project"


@pytest.mark.parametrize(("nodes", "cores"), [
    (0, 1), (5, 1), (6, 2), (10, 2), (11, 4), (100, 4), (101, 8), (250, 8), (251, 16), (500, 16), (501, 32),
    (3000, 32), (3001, 64), (100_000, 64),
])
def test_master_size_follows_get_master_size(nodes, cores):
    assert gce.master_cores(nodes) == cores


def test_disk_sizes_follow_the_legacy_ones():
    assert [gce.master_disk_gb(n) for n in (10, 501, 3001)] == [20, 100, 200]
    assert [gce.root_disk_gb(n) for n in (10, 501, 3001)] == [20, 100, 500]


def test_names_fit_gce_for_the_longest_cluster_name():
    for name in gce.names("a" * 40).values():
        assert len(name) <= 63 and name.startswith("kubemark-up-")


@pytest.fixture
def endpoint():
    with ComputeEndpoint(op_seconds=0.01) as made:
        yield made


def _env(endpoint: ComputeEndpoint | None = None, **settings: str) -> dict[str, str]:
    env = {"KUBEMARK_UP_GCE_PROJECT": PROJECT, "KUBEMARK_UP_GCE_SOURCE_RANGES": "10.0.0.0/8", **settings}
    if endpoint is not None:
        env["KUBEMARK_UP_GCE_ENDPOINT"] = endpoint.url
    return env


def test_dry_run_prints_every_resource_and_makes_nothing(bare_cli: CLI, endpoint, tmp_path):
    root = tmp_path / "root.kubeconfig"
    config = tmp_path / "pods.yaml"
    config.write_text(f"hollow_nodes: pods\npods: {{kubeconfig: {root}, image: registry.test/kubemark:v1}}\n"
                      "gce: {events_disk: true}\n")
    result = bare_cli.run("start", "--provider", "gce", "--name", "dry", "--nodes", "120", "--dry-run",
                          "--config", str(config), **_env(endpoint, KUBEMARK_MASTER_SIZE="e2-standard-8"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for name in ("kubemark-up-dry-https", "kubemark-up-dry-ssh", "kubemark-up-dry-ip", "kubemark-up-dry-pd", "kubemark-up-dry-events-pd",
                 "kubemark-up-dry-master"):
        assert name in out
    bodies = [json.loads(line) for line in out.splitlines() if line.lstrip().startswith("{")]
    instance = next(b for b in bodies if b["name"] == "kubemark-up-dry-master")
    assert instance["machineType"].endswith("/machineTypes/e2-standard-8")  # the legacy variable wins
    assert instance["labels"] == {"kubemark-up-cluster": "dry", "kubemark-up-owner": gce.owner(bare_cli.home)}
    assert [d.get("deviceName") for d in instance["disks"]] == [None, "master-pd", "master-event-pd"]
    keys = {item["key"] for item in instance["metadata"]["items"]}
    assert keys == {"ssh-keys", "startup-script", "enable-guest-attributes"}
    firewall = next(b for b in bodies if b["name"] == "kubemark-up-dry-https")
    assert firewall["sourceRanges"] == ["10.0.0.0/8"] and firewall["allowed"] == [{"IPProtocol": "tcp", "ports": ["443"]}]
    # The default engine: fleet pods, each carrying up to pods.nodes_per_pod hollow nodes.
    assert "StatefulSet kubemark/hollow-fleet scaled to 1 (pods carrying 120 hollow nodes, 500 a pod)" in out
    assert "Namespace kubemark" in out and "ClusterRoleBindings" in out
    # Nothing made: no request reached the endpoint, no cluster folder here.
    assert endpoint.log == []
    assert not (bare_cli.home / "dry").exists()


def test_dry_run_sizes_the_master_by_node_count(bare_cli: CLI):
    result = bare_cli.run("start", "--provider", "gce", "--name", "dry", "--nodes", "300", "--dry-run", **_env())
    assert result.returncode == 0, result.stderr
    assert "machineTypes/n1-standard-16" in result.stdout
    assert '"sizeGb": "20"' in result.stdout


@pytest.mark.parametrize(("env", "needles"), [
    ({"KUBEMARK_UP_GCE_PROJECT": ""}, ("gce.project is required", "KUBEMARK_UP_GCE_PROJECT")),
    ({"KUBEMARK_UP_GCE_PROJECT": "Bad_Project"}, ("gce.project: a project ID",)),
    ({"KUBEMARK_UP_GCE_ZONE": "central"}, ("gce.zone: a zone like us-central1-b",)),
    ({"KUBEMARK_UP_GCE_REGION": "europe-west1"}, ("zone us-central1-b is not in region europe-west1",)),
    ({"KUBEMARK_UP_GCE_SOURCE_RANGES": "10.0.0.0/33"}, ("gce.source_ranges", "not a network in CIDR form")),
    ({"KUBEMARK_UP_GCE_SOURCE_RANGES": ""}, ("gce.source_ranges is required", "0.0.0.0/0")),
    ({"KUBEMARK_MASTER_DISK_SIZE": "5GB"}, ("gce.disk_size_gb",)),
    ({"KUBEMARK_UP_GCE_SSH_PORT": "0"}, ("gce.ssh_port",)),
    ({"KUBEMARK_UP_GCE_REMOTE_ROOT": "relative/path"}, ("gce.remote_root: must be an absolute path",)),
])
def test_bad_settings_are_one_line(bare_cli: CLI, endpoint, env, needles):
    result = bare_cli.run("start", "--provider", "gce", "--name", "bad", "--nodes", "1", **{**_env(endpoint), **env})
    assert_one_line_error(result, 2, *needles)
    assert endpoint.log == []
    assert not (bare_cli.home / "bad").exists()


def test_no_credentials_is_one_line_before_anything_is_made(bare_cli: CLI, tmp_path):
    empty_home = tmp_path / "user"
    empty_home.mkdir()
    # No endpoint, no key file, no gcloud config, and no metadata server asked for.
    result = bare_cli.run("start", "--provider", "gce", "--name", "nocreds", "--nodes", "0",
                          **_env(HOME=str(empty_home), CLOUDSDK_CONFIG=str(empty_home / "gcloud"), NO_GCE_CHECK="True",
                                 GCE_METADATA_HOST="127.0.0.1:9", GCE_METADATA_IP="127.0.0.1:9",
                                 GOOGLE_APPLICATION_CREDENTIALS=""))
    assert_one_line_error(result, 2, "no Google credentials found", "application-default login")
    assert not (bare_cli.home / "nocreds" / "state.json").exists()


def test_gce_is_a_registered_provider(bare_cli: CLI):
    result = bare_cli.run("providers")
    assert result.returncode == 0
    assert "kubemark_up.providers.gce:GCEProvider" in result.stdout


def test_transient_errors_are_retried_and_a_repeated_request_is_done_once(monkeypatch, endpoint):
    from google.cloud import compute_v1

    from kubemark_up.providers.gce.api import AlreadyExists, Compute, Scope

    monkeypatch.setenv("KUBEMARK_UP_GCE_ENDPOINT", endpoint.url)
    endpoint.fault("compute.disks.insert", status=503, reason="backendError", message="try again", times=2)
    compute = Compute(PROJECT)
    zone = Scope("zone", "us-central1-b")
    compute.insert("Disks", zone, "create disk d", "disk_resource", compute_v1.Disk(name="d"), "8a7c4f2e-0000-4000-8000-000000000001")
    assert [e.status for e in endpoint.log if e.method_id == "compute.disks.insert"] == [503, 503, 200]
    # The same requestId again (a retry whose first answer was lost): no second disk, no 409.
    compute.insert("Disks", zone, "create disk d", "disk_resource", compute_v1.Disk(name="d"), "8a7c4f2e-0000-4000-8000-000000000001")
    assert [d["name"] for d in endpoint.items("disks")] == ["d"]
    with pytest.raises(AlreadyExists, match="already exists"):
        compute.insert("Disks", zone, "create disk d", "disk_resource", compute_v1.Disk(name="d"), "another-request")


def test_a_refusal_that_does_not_name_the_permission_is_named_for_it(monkeypatch, endpoint):
    from google.cloud import compute_v1

    from kubemark_up.providers.gce.api import Compute, GCEError, Scope

    monkeypatch.setenv("KUBEMARK_UP_GCE_ENDPOINT", endpoint.url)
    endpoint.fault("compute.addresses.insert", status=403, reason="forbidden", message="Forbidden")
    with pytest.raises(GCEError, match=r"lack the permission compute\.addresses\.create"):
        Compute(PROJECT).insert("Addresses", Scope("region", "us-central1"), "create address a", "address_resource",
                                compute_v1.Address(name="a"), "r-1")
    endpoint.fault("compute.disks.insert", status=403, reason="quotaExceeded", message="Quota 'DISKS_TOTAL_GB' exceeded.")
    with pytest.raises(GCEError, match="quota exceeded"):
        Compute(PROJECT).insert("Disks", Scope("zone", "us-central1-b"), "create disk d", "disk_resource",
                                compute_v1.Disk(name="d"), "r-2")
    assert endpoint.items() == []


def test_gc_input_errors_are_one_line(bare_cli: CLI):
    assert_one_line_error(bare_cli.run("gc", "--provider", "local"), 2, "provider local makes no cloud resources")
    assert_one_line_error(bare_cli.run("gc", "--provider", "gce"), 2, "gce.project is required")
    assert_one_line_error(bare_cli.run("gc", "--provider", "gce", "--project", "Not_A_Project"), 2, "gce.project: a project ID")


def test_dry_run_of_a_provider_without_cloud_resources_lists_its_steps(bare_cli: CLI):
    result = bare_cli.run("start", "--name", "dry", "--nodes", "2", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "start would, in order:" in result.stdout and "- start etcd" in result.stdout
    assert not (bare_cli.home / "dry").exists()


# The API out of reach --------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on leaving: a connect is refused


def test_an_unreachable_api_is_retried_then_one_line(bare_cli: CLI):
    port = _closed_port()
    result = bare_cli.run("gc", "--provider", "gce", "--project", PROJECT, timeout=60,
                          KUBEMARK_UP_GCE_ENDPOINT=f"http://127.0.0.1:{port}", KUBEMARK_UP_GCE_API_RETRY_TIMEOUT="2")
    assert_one_line_error(result, 1, f"cannot reach the Compute API at http://127.0.0.1:{port}: connection refused",
                          "retried for 2s")
    assert "internal error" not in result.stderr and "ConnectionError" not in result.stderr


def test_a_refused_connection_is_retried_until_the_api_answers(monkeypatch):
    from kubemark_up.providers.gce.api import Compute

    port = _closed_port()
    monkeypatch.setenv("KUBEMARK_UP_GCE_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()  # refused when the call begins
    later = ComputeEndpoint(op_seconds=0.01, port=port)
    timer = threading.Timer(1.5, later.start)
    timer.start()
    try:
        compute = Compute(PROJECT, retry_timeout=60)
        found = list(compute.labelled("Firewalls", "list firewall rules", 'name = "x"'))
        assert found == []
        assert [e.method_id for e in later.log] == ["compute.firewalls.list"]  # answered once it was up
    finally:
        timer.join()
        later.stop()


@pytest.mark.parametrize(("kind", "method", "permission"), [
    ("Instances", "get_guest_attributes", "compute.instances.getGuestAttributes"),
    ("Instances", "set_metadata", "compute.instances.setMetadata"),
    ("Instances", "get_serial_port_output", "compute.instances.getSerialPortOutput"),
    ("Instances", "aggregated_list", "compute.instances.list"),
    ("Disks", "insert", "compute.disks.create"),
    ("Firewalls", "patch", "compute.firewalls.update"),
    ("Addresses", "delete", "compute.addresses.delete"),
    ("ZoneOperations", "wait", "compute.zoneOperations.get"),
])
def test_permissions_are_named_as_iam_names_them(kind, method, permission):
    from kubemark_up.providers.gce.api import permission as named

    assert named(kind, method) == permission


def test_a_403_on_guest_attributes_falls_back_to_the_serial_console(monkeypatch, endpoint):
    from kubemark_up.providers.gce.api import Compute, Scope
    from kubemark_up.providers.gce.sshkeys import published_host_keys

    monkeypatch.setenv("KUBEMARK_UP_GCE_ENDPOINT", endpoint.url)
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOmq4cnbsclkFW0GCOp7ZpM+WILVqTQCxqQBk9mk7tjk"
    endpoint.host_keys = [key]
    endpoint.put("instances", PROJECT, "zones/us-central1-b", {
        "name": "vm", "disks": [], "networkInterfaces": [],
        "metadata": {"items": [{"key": "enable-guest-attributes", "value": "TRUE"}]}})
    # As the API refuses it: the message need not name the permission.
    endpoint.fault("compute.instances.getGuestAttributes", status=403, reason="forbidden",
                   message="The caller does not have permission")
    heard: list[str] = []
    where, keys = published_host_keys(Compute(PROJECT), Scope("zone", "us-central1-b"), "vm", heard.append)
    assert (where, keys) == ("serial port", [key])
    assert len(heard) == 1 and "lack the permission compute.instances.getGuestAttributes" in heard[0]
    calls = [e.method_id for e in endpoint.log]
    assert calls == ["compute.instances.getGuestAttributes", "compute.instances.getSerialPortOutput"]


def test_dry_run_names_the_ssh_rule_and_the_owner(bare_cli: CLI, endpoint):
    from kubemark_up.providers.gce.settings import owner

    result = bare_cli.run("start", "--provider", "gce", "--name", "dry", "--nodes", "0", "--dry-run",
                          **_env(endpoint, KUBEMARK_UP_GCE_SSH_PORT="2222"))
    assert result.returncode == 0, result.stderr
    bodies = {b["name"]: b for b in (json.loads(line) for line in result.stdout.splitlines()
                                     if line.lstrip().startswith("{"))}
    mine = owner(bare_cli.home)
    ssh = bodies["kubemark-up-dry-ssh"]
    assert ssh["sourceRanges"] == ["10.0.0.0/8"] and ssh["allowed"] == [{"IPProtocol": "tcp", "ports": ["2222"]}]
    assert ssh["targetTags"] == ["kubemark-up-dry-master"]
    for rule in (ssh, bodies["kubemark-up-dry-https"]):
        assert rule["description"].startswith(f"kubemark-up cluster dry (owner {mine}, uid ")
    for name in ("kubemark-up-dry-ip", "kubemark-up-dry-pd", "kubemark-up-dry-master"):
        assert bodies[name]["labels"] == {"kubemark-up-cluster": "dry", "kubemark-up-owner": mine}
    assert f"kubemark-up-owner={mine}" in result.stdout
    assert endpoint.log == []


def test_dry_run_names_the_node_engine_it_would_use(tmp_path):
    from kubemark_up import cluster
    from kubemark_up.providers import registry
    from kubemark_up.ui import UI

    def nodes_line(**flags: object) -> str:
        settings = registry.resolve_settings(flags={"name": "dry", "nodes": 4, **flags}, environ={})
        lines = cluster.plan(settings, tmp_path, UI())
        return lines[lines.index("- nodes") + 1]

    assert nodes_line() == "  4 hollow nodes in fleet processes on localhost"  # the default engine
    assert nodes_line(node_engine="kubemark") == "  4 hollow nodes as kubemark processes on localhost"
