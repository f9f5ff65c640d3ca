"""The gce provider: the master on a Compute Engine VM that kubemark-up makes, with its
disk(s), a static external IP and a firewall rule for the apiserver; the hollow nodes
as pods on a root cluster (hollow_nodes: pods), or as kubemark processes on the VM.

Each cloud resource is recorded in state before it is asked for, and carries the
label kubemark-up-cluster=<name> (the firewall, which has no labels, an exact name
and a description naming the cluster): stop deletes what state records and what the
label finds, never what lacks it. The address is reserved before the PKI (it goes
into the serving certificate). The VM gets a key pair made for this cluster in its
`ssh-keys` metadata; its host key is taken on first contact and pinned in state.
Once the VM answers SSH, everything else is the preexisting provider's code path:
the cluster's folder on the host, then the shared steps (PKI, staging, the master).

Resource names (GCE: at most 63 characters; cluster names are at most 40):
kubemark-up-<name>-{master,pd,events-pd,ip,https}.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from google.cloud import compute_v1

from kubemark_up.config import ProviderSettings
from kubemark_up.context import Context
from kubemark_up.errors import ConfigError, HostError, KubemarkUpError
from kubemark_up.nodes import NodeEngine
from kubemark_up.providers.base import MasterSite, Provider, node_engine_for
from kubemark_up.providers.gce.api import AlreadyExists, Compute, GCEError, NotFound, Scope, new_request_id, retrying
from kubemark_up.providers.gce.settings import (
    DESCRIPTION,
    EVENTS_PD_DEVICE,
    HTTPS_PORT,
    KEY_FILE,
    LABEL,
    MASTER_PD_DEVICE,
    PREFIX,
    GCESettings,
    master_cores,
    master_disk_gb,
    names,
    network,
    root_disk_gb,
)
from kubemark_up.providers.gce.sshkeys import check_host_key, ensure_in_metadata, ensure_key
from kubemark_up.providers.preexisting import PreexistingProvider, PreexistingSettings
from kubemark_up.state import Resource
from kubemark_up.steps import Step, insert


def _startup_script(settings: GCESettings) -> str:
    """Run as root at boot: the master runs as the SSH user, so let it listen on 443
    and write the master disk(s), mounted as the legacy master mounted them."""
    lines = [
        "#!/bin/sh",
        "# kubemark-up: the master's disks, and port 443 for an unprivileged kube-apiserver",
        "set -e",
        "sysctl -w net.ipv4.ip_unprivileged_port_start=443",
        "mount_pd() {",
        '  dev=/dev/disk/by-id/google-$1; dir=$2; mkdir -p "$dir"',
        '  blkid "$dev" >/dev/null 2>&1 || mkfs.ext4 -q -F "$dev"',
        '  mountpoint -q "$dir" || mount -o discard,defaults "$dev" "$dir"',
        "}",
        f"mount_pd {MASTER_PD_DEVICE} /mnt/disks/master-pd",
    ]
    if settings.events_disk:
        lines.append(f"mount_pd {EVENTS_PD_DEVICE} /mnt/disks/master-event-pd")
    lines.append(f"mkdir -p -m 1777 {settings.remote_root}")
    if settings.events_disk:  # etcd-events' data, on the events disk
        lines.append(f"mkdir -p -m 1777 {settings.events_root}")
    return "\n".join(lines) + "\n"


class GCEProvider(Provider):
    name = "gce"
    settings_model = GCESettings
    # Legacy names (cluster/kubemark/gce/config-default.sh and kube-up's); KUBEMARK_<X>
    # was the kubemark cluster's own value of <X>.
    legacy_env: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "project": ("PROJECT",), "zone": ("KUBE_GCE_ZONE", "ZONE"), "region": ("REGION",),
        "network": ("NETWORK",), "subnetwork": ("SUBNETWORK",), "machine_type": ("KUBEMARK_MASTER_SIZE",),
        "disk_type": ("KUBEMARK_MASTER_DISK_TYPE", "MASTER_DISK_TYPE"),
        "disk_size_gb": ("KUBEMARK_MASTER_DISK_SIZE",), "root_disk_size_gb": ("KUBEMARK_MASTER_ROOT_DISK_SIZE",),
        "events_disk": ("EVENT_PD",),
    }
    settings: GCESettings

    def __init__(self, settings: ProviderSettings | None = None) -> None:
        super().__init__(settings)
        self._compute: Compute | None = None
        self._remote: PreexistingProvider | None = None

    # Derived --------------------------------------------------------------------

    @property
    def compute(self) -> Compute:
        if self._compute is None:
            self._compute = Compute(self.settings.project, operation_timeout=self.settings.operation_timeout)
        return self._compute

    def machine_type(self, nodes: int) -> str:
        return self.settings.machine_type or f"n1-standard-{master_cores(nodes)}"

    def _zone(self) -> Scope:
        return Scope("zone", self.settings.zone)

    def _region(self) -> Scope:
        return Scope("region", self.settings.region_name)

    def _ip(self, ctx: Context) -> str | None:
        resource = ctx.state.resource("gce-address", names(ctx.info.name)["address"])
        if resource is not None and resource.details.get("ip"):
            return str(resource.details["ip"])
        if ctx.state.master is not None and ctx.state.master.addresses:
            return ctx.state.master.addresses[0]
        return None

    def _key_path(self, ctx: Context) -> Path:
        return ctx.dir.pki / KEY_FILE

    def remote(self, ctx: Context) -> PreexistingProvider:
        """The VM as a preexisting host: SSH with the cluster's key, host key pinned on
        first use. Its address is the reserved one (unknown before that: a placeholder
        nothing connects to)."""
        if self._remote is None:
            s = self.settings
            ip = self._ip(ctx) or "0.0.0.0"
            self._remote = PreexistingProvider(PreexistingSettings(
                host=ip, port=s.ssh_port, user=s.ssh_user, identity_file=self._key_path(ctx),
                known_hosts=ctx.dir.root / "known_hosts.none", trust_unknown_host=True,
                connect_timeout=s.connect_timeout, python=s.python, address=ip, bind_address=s.bind_address,
                remote_root=s.remote_root, events_root=s.events_root if s.events_disk else None,
            ))
        return self._remote

    # The Provider interface --------------------------------------------------------

    def master(self, ctx: Context) -> MasterSite:
        return self.remote(ctx).master(ctx)

    def node_engine(self, ctx: Context) -> NodeEngine:
        return node_engine_for(ctx, self.master(ctx))

    def apiserver_port(self, ctx: Context) -> int:
        return ctx.settings.apiserver_port or HTTPS_PORT

    def fixed_ports(self, ctx: Context) -> dict[str, int]:
        return self.remote(ctx).fixed_ports(ctx) | super().fixed_ports(ctx)

    def preflight(self, ctx: Context) -> None:
        self._check_settings()
        if ctx.settings.nodes and ctx.settings.hollow_nodes == "pods":
            from kubemark_up.nodes.pods import PodNodes

            PodNodes(ctx.settings.pods).preflight(ctx)
        self.compute.check_credentials()

    def _check_settings(self) -> None:
        if not self.settings.source_ranges:
            raise ConfigError(
                "gce.source_ranges is required: the networks (CIDRs) that may reach the master's apiserver, "
                "e.g. your own address/32 and the root cluster's; 0.0.0.0/0 opens it to all and must be asked for"
            )

    def steps(self, shared: list[Step]) -> list[Step]:
        own = [
            Step("gce-firewall", "", self._step_firewall, undo=self._undo_kind("firewall"),
                 undo_title="delete the firewall rule"),
            Step("gce-address", "", self._step_address, undo=self._undo_kind("address"),
                 undo_title="release the static IP address"),
            Step("gce-disks", "", self._step_disks, undo=self._undo_kind("disk"), undo_title="delete the master's disk(s)"),
            Step("gce-instance", "", self._step_instance, undo=self._undo_kind("instance"),
                 undo_title="delete the master VM (and wait)"),
            Step("host", "wait for SSH to the master VM and make the cluster's folder there", self._step_host,
                 undo=self._undo_host, undo_title="fetch the logs and remove the cluster's folder from the master VM"),
        ]
        # What runs on the VM goes with it: a VM found deleted excuses their undo.
        # (Hollow nodes as pods are on the root cluster: they do not.)
        on_vm = {"etcd", "kube-apiserver", "controllers", "nodes"}
        shared = [dataclasses.replace(step, undo=self._unless_gone(step.undo, nodes=step.key == "nodes"))
                  if step.key in on_vm and step.undo else step for step in shared]
        return insert(shared, before="ports", new=own)

    def _unless_gone(self, undo: Callable[[Context], list[str]], *, nodes: bool) -> Callable[[Context], list[str]]:
        def guarded(ctx: Context) -> list[str]:
            if nodes and ctx.settings.hollow_nodes != "host":
                return undo(ctx)
            try:
                problems = undo(ctx)
            except HostError as exc:
                problems = [exc.message]
            if problems and self._instance_gone(ctx):
                return []
            return problems

        return guarded

    def close(self) -> None:
        if self._remote is not None:
            self._remote.close()

    # What would be made ---------------------------------------------------------------

    def bodies(self, ctx: Context, *, ip: str | None, public_key: str) -> dict[str, tuple[str, Scope, Any]]:
        """Every resource start asks for: key -> (its kind's client, where, the body)."""
        s, n = self.settings, names(ctx.info.name)
        labels = {LABEL: ctx.info.name}
        zone = s.zone
        port = self.apiserver_port(ctx)
        nodes = ctx.settings.nodes
        made: dict[str, tuple[str, Scope, Any]] = {
            "firewall": ("Firewalls", Scope("global"), compute_v1.Firewall(
                name=n["firewall"], network=network(s), direction="INGRESS", source_ranges=list(s.source_ranges),
                target_tags=[n["tag"]], allowed=[compute_v1.Allowed(I_p_protocol="tcp", ports=[str(port)])],
                description=DESCRIPTION.format(name=ctx.info.name) + f" (uid {ctx.info.uid}): its apiserver")),
            "address": ("Addresses", self._region(), compute_v1.Address(
                name=n["address"], address_type="EXTERNAL", labels=labels,
                description=DESCRIPTION.format(name=ctx.info.name) + ": the master's address")),
            "disk": ("Disks", self._zone(), compute_v1.Disk(
                name=n["disk"], size_gb=s.disk_size_gb or master_disk_gb(nodes),
                type_=f"zones/{zone}/diskTypes/{s.disk_type}", labels=labels)),
        }
        if s.events_disk:
            made["events_disk"] = ("Disks", self._zone(), compute_v1.Disk(
                name=n["events_disk"], size_gb=s.disk_size_gb or master_disk_gb(nodes),
                type_=f"zones/{zone}/diskTypes/{s.disk_type}", labels=labels))
        disk_link = f"projects/{s.project}/zones/{zone}/disks/"
        attached = [compute_v1.AttachedDisk(
            boot=True, auto_delete=True, initialize_params=compute_v1.AttachedDiskInitializeParams(
                source_image=s.image, disk_size_gb=s.root_disk_size_gb or root_disk_gb(nodes),
                disk_type=f"zones/{zone}/diskTypes/pd-standard", labels=labels)),
            compute_v1.AttachedDisk(source=disk_link + n["disk"], device_name=MASTER_PD_DEVICE, mode="READ_WRITE",
                                    auto_delete=False)]
        if s.events_disk:
            attached.append(compute_v1.AttachedDisk(source=disk_link + n["events_disk"], device_name=EVENTS_PD_DEVICE,
                                                    mode="READ_WRITE", auto_delete=False))
        nic = compute_v1.NetworkInterface(network=network(s), access_configs=[compute_v1.AccessConfig(
            name="External NAT", type_="ONE_TO_ONE_NAT", nat_i_p=ip or "<the reserved address>")])
        if s.subnetwork:
            nic.subnetwork = f"regions/{s.region_name}/subnetworks/{s.subnetwork}"
        made["instance"] = ("Instances", self._zone(), compute_v1.Instance(
            name=n["instance"], machine_type=f"zones/{zone}/machineTypes/{self.machine_type(nodes)}", labels=labels,
            description=DESCRIPTION.format(name=ctx.info.name) + ": the master", tags=compute_v1.Tags(items=[n["tag"]]),
            disks=attached, network_interfaces=[nic],
            metadata=compute_v1.Metadata(items=[
                compute_v1.Items(key="ssh-keys", value=f"{s.ssh_user}:{public_key}"),
                # The guest environment publishes the VM's SSH host keys there (hostkeys/),
                # to be checked against the key SSH met on first contact.
                compute_v1.Items(key="enable-guest-attributes", value="TRUE"),
                compute_v1.Items(key="startup-script", value=_startup_script(s)),
            ])))
        return made

    def plan(self, ctx: Context, steps: list[Step]) -> list[str]:
        """--dry-run: every cloud resource and Kubernetes object start would make."""
        self._check_settings()
        s = self.settings
        lines = [f"would make in project {s.project} (zone {s.zone}, region {s.region_name}), in this order, "
                 f"each labelled {LABEL}={ctx.info.name}:"]
        bodies = self.bodies(ctx, ip=None, public_key=f"ssh-ed25519 <a key made for this cluster> {PREFIX}{ctx.info.name}")
        titles = {"firewall": "firewall rule", "address": "static external IP address", "disk": "master disk",
                  "events_disk": "etcd-events disk", "instance": "master VM"}
        for key, (_kind, scope, body) in bodies.items():
            lines.append(f"- {titles[key]} {body.name} ({scope.path}):")
            # As it goes on the wire (the API's field names).
            lines.append("    " + type(body).to_json(body, preserving_proto_field_name=False,
                                                    always_print_fields_with_no_presence=False, indent=None))
        port = self.apiserver_port(ctx)
        lines.append(f"then over SSH as {s.ssh_user} to the address, port {s.ssh_port}: the folder "
                     f"{posixpath.join(s.remote_root, ctx.info.name)} with the master's binaries, certificates and "
                     f"manifests, and etcd, kube-apiserver (port {port}), kube-controller-manager, kube-scheduler")
        nodes = ctx.settings.nodes
        if nodes and ctx.settings.hollow_nodes == "pods":
            from kubemark_up.nodes import pods

            ns = ctx.settings.pods.namespace
            root = ctx.settings.pods.kubeconfig or "~/.kube/config"
            lines.append("Kubernetes objects:")
            lines.append("- on the kubemark master: Secret kube-system/bootstrap-token-<id>, ClusterRoleBindings "
                         "kubemark-up:node-bootstrapper, kubemark-up:node-autoapprove, kubemark-up:node-renewal, "
                         "kubemark-up:node-problem-detector")
            lines.append(f"- on the root cluster ({root}): Namespace {ns} (unless it is there), Secret {ns}/{pods.SECRET}, "
                         f"ConfigMap {ns}/{pods.CONFIGMAP}, StatefulSet {ns}/{pods.STATEFULSET} scaled to {nodes} "
                         "(a pod per hollow node)")
        elif nodes:
            lines.append(f"then {nodes} hollow nodes as kubemark processes on the master VM")
        lines.append(f"(resource names: {', '.join(body.name for _, _, body in bodies.values())})")
        return lines

    # Start steps ---------------------------------------------------------------------

    def _make(self, ctx: Context, step: str, key: str, body: Any, *, ip: str | None = None) -> Resource:
        """Record the resource, then insert it and wait; a 409 adopts it if it is ours,
        and refuses (forgetting the record, so stop leaves it alone) if it is not."""
        kind, scope, _ = self._shape(key)
        field = {"Firewalls": "firewall_resource", "Addresses": "address_resource", "Disks": "disk_resource",
                 "Instances": "instance_resource"}[kind]
        what = f"create {_TITLES[key]} {body.name}"
        existing = ctx.state.resource(_KINDS[key], body.name)
        request_id = existing.details.get("request_id") if existing else None
        with ctx.creating(_KINDS[key], body.name, step=step, scope=scope.path,
                          request_id=request_id or new_request_id()) as resource:
            try:
                with ctx.ui.step(f"{what} ({scope.path})", long=True):
                    try:
                        self.compute.insert(kind, scope, what, field, body, resource.details["request_id"])
                    except AlreadyExists:
                        found = self.compute.get(kind, scope, what, **{_PARAM[kind]: body.name})
                        if not self._ours(ctx, key, found):
                            raise _NotOurs(
                                f"{_TITLES[key]} {body.name} already exists in project {self.settings.project} and is not "
                                f"this cluster's (no {LABEL}={ctx.info.name}); it is left alone: delete it, or choose "
                                "another --name") from None
                        ctx.ui.warn(f"{_TITLES[key]} {body.name} already exists with this cluster's mark: adopted")
                        resource.details["adopted"] = True
                        if key == "firewall" and _rules(found) != _rules(body):
                            # A rule left by an earlier run of this name: its port or ranges as asked now.
                            self.compute.update("Firewalls", scope, f"update firewall rule {body.name}",
                                                firewall=body.name, firewall_resource=body)
            except _NotOurs:
                ctx.forget(resource)
                raise
        return resource

    def _shape(self, key: str) -> tuple[str, Scope, None]:
        kind = {"firewall": "Firewalls", "address": "Addresses", "disk": "Disks", "events_disk": "Disks",
                "instance": "Instances"}[key]
        scope = {"Firewalls": Scope("global"), "Addresses": self._region()}.get(kind, self._zone())
        return kind, scope, None

    def _ours(self, ctx: Context, key: str, found: Any) -> bool:
        if key == "firewall":
            return str(found.description).startswith(DESCRIPTION.format(name=ctx.info.name) + " ")
        return dict(found.labels).get(LABEL) == ctx.info.name

    def _step_firewall(self, ctx: Context) -> None:
        body = self.bodies(ctx, ip=None, public_key="")["firewall"][2]
        self._make(ctx, "gce-firewall", "firewall", body)

    def _step_address(self, ctx: Context) -> None:
        body = self.bodies(ctx, ip=None, public_key="")["address"][2]
        resource = self._make(ctx, "gce-address", "address", body)
        got = self.compute.get("Addresses", self._region(), f"read address {body.name}", address=body.name)
        resource.details["ip"] = got.address
        ctx.save()
        self._remote = None  # built again with the address

    def _step_disks(self, ctx: Context) -> None:
        bodies = self.bodies(ctx, ip=None, public_key="")
        for key in ("disk", "events_disk"):
            if key in bodies:
                self._make(ctx, "gce-disks", key, bodies[key][2])

    def _step_instance(self, ctx: Context) -> None:
        public = ensure_key(self._key_path(ctx), comment=f"{PREFIX}{ctx.info.name}")
        body = self.bodies(ctx, ip=self._ip(ctx), public_key=public)["instance"][2]
        resource = self._make(ctx, "gce-instance", "instance", body)
        if resource.details.get("adopted"):
            ensure_in_metadata(ctx, self.compute, self._zone(), body.name, user=self.settings.ssh_user, public=public,
                               mark=f"{PREFIX}{ctx.info.name}")

    def _step_host(self, ctx: Context) -> None:
        remote = self.remote(ctx)
        s = self.settings

        def reachable() -> None:
            # Retried while the VM boots: no answer yet, or the guest environment has not
            # put the key in place, or the start-up script has not made remote_root.
            # The connection that answered stays open: its host key is the one pinned.
            host = remote.master(ctx).host
            try:
                facts = host.facts([s.remote_root])
            except HostError as exc:
                if "does not match" in exc.message:  # not the host we pinned: never retried
                    raise KubemarkUpError(exc.message) from None
                raise
            if not facts.writable[s.remote_root]:
                raise HostError(f"{s.remote_root} is not yet writable on {host.name} (the VM's start-up script makes it)")

        retrying(reachable, on=HostError, timeout=s.ssh_wait_timeout)
        check_host_key(ctx, self.compute, self._zone(), names(ctx.info.name)["instance"],
                       host=remote.master(ctx).host.name, timeout=s.host_key_wait_timeout)
        remote.preflight(ctx)
        remote._prepare(ctx)

    # Stop -----------------------------------------------------------------------------

    def _undo_host(self, ctx: Context) -> list[str]:
        instance = ctx.state.resource("gce-instance", names(ctx.info.name)["instance"])
        refused = instance is not None and instance.details.get("host_key_refused")
        if refused or self._instance_gone(ctx):  # refused: nothing went there
            for resource in ctx.resources("host"):
                ctx.forget(resource)
            return []
        return self.remote(ctx)._release(ctx)

    def _instance_gone(self, ctx: Context) -> bool:
        """The master VM no longer exists (and with it what ran there)."""
        name = names(ctx.info.name)["instance"]
        try:
            self.compute.get("Instances", self._zone(), f"read VM {name}", instance=name)
        except NotFound:
            return True
        return False

    def _undo_kind(self, key: str) -> Callable[[Context], list[str]]:
        def undo(ctx: Context) -> list[str]:
            keys = ("disk", "events_disk") if key == "disk" else (key,)
            return self._delete_all(ctx, keys)

        return undo

    def _delete_all(self, ctx: Context, keys: tuple[str, ...]) -> list[str]:
        """Delete what state records of these kinds, then what carries our mark that state
        lost; not found is done; without our mark, left alone and said."""
        errors: list[str] = []
        kind, scope, _ = self._shape(keys[0])
        wanted = {names(ctx.info.name)[k] for k in keys}
        recorded = [r for r in ctx.state.resources if r.kind == _KINDS[keys[0]] and r.id in wanted]
        seen: set[str] = set()
        for resource in recorded:
            seen.add(resource.id)
            try:
                self._delete_one(ctx, keys[0], kind, scope, resource.id)
                ctx.forget(resource)
            except KubemarkUpError as exc:
                errors.append(exc.message)
        try:
            for where, item in self._marked(ctx, kind):
                if item.name not in seen:
                    seen.add(item.name)
                    ctx.ui.warn(f"{_TITLES[keys[0]]} {item.name} carries this cluster's mark but state did not know it: "
                                "deleting it")
                    try:
                        self._delete_one(ctx, keys[0], kind, where, item.name)
                    except KubemarkUpError as exc:
                        errors.append(exc.message)
        except KubemarkUpError as exc:
            errors.append(exc.message)
        return errors

    def _delete_one(self, ctx: Context, key: str, kind: str, scope: Scope, name: str) -> None:
        param = {_PARAM[kind]: name}
        what = f"delete {_TITLES[key]} {name}"
        try:
            found = self.compute.get(kind, scope, what, **param)
        except NotFound:
            return
        if not self._ours(ctx, key, found):
            raise GCEError(f"{_TITLES[key]} {name} exists but does not carry {LABEL}={ctx.info.name}: left alone")
        try:
            self.compute.delete(kind, scope, what, **param)
        except NotFound:
            return

    def _marked(self, ctx: Context, kind: str) -> list[tuple[Scope, Any]]:
        if kind == "Firewalls":
            name = names(ctx.info.name)["firewall"]
            found = self.compute.labelled(kind, "list firewall rules", f'name = "{name}"')
            return [(w, i) for w, i in found if self._ours(ctx, "firewall", i)]
        return list(self.compute.labelled(kind, f"list {kind.lower()} labelled {LABEL}={ctx.info.name}",
                                          f'labels.{LABEL} = "{ctx.info.name}"'))

    def sweep(self, ctx: Context) -> list[str]:
        """state.json is lost: the hollow-node pods by their uid, then every resource
        that carries this cluster's mark, found by listing, in stop's order."""
        errors: list[str] = []
        if ctx.settings.hollow_nodes == "pods":
            from kubemark_up.nodes.pods import PodNodes

            try:
                errors += PodNodes(ctx.settings.pods).stop(ctx)
            except KubemarkUpError as exc:
                errors.append(exc.message)
        for keys in (("instance",), ("disk", "events_disk"), ("address",), ("firewall",)):
            errors += self._delete_all(ctx, keys)
        return errors

    # gc ---------------------------------------------------------------------------------

    def orphans(self, known: set[str]) -> list[tuple[str, str, str, Scope]]:
        """Resources in the project marked by kubemark-up for a cluster not in known:
        (cluster, key, name, scope)."""
        found: list[tuple[str, str, str, Scope]] = []
        for kind, key in (("Instances", "instance"), ("Disks", "disk"), ("Addresses", "address")):
            for scope, item in self.compute.labelled(kind, f"list {kind.lower()} labelled {LABEL}", f"labels.{LABEL}:*"):
                cluster = dict(item.labels)[LABEL]
                if cluster not in known:
                    found.append((cluster, key, item.name, scope))
        mark = re.compile(re.escape(DESCRIPTION.format(name="")) + r"(\S+) ")
        for scope, item in self.compute.labelled("Firewalls", "list firewall rules", f'name eq "{PREFIX}.*-https"'):
            matched = mark.match(str(item.description))
            if matched and item.name == names(matched[1])["firewall"] and matched[1] not in known:
                found.append((matched[1], "firewall", item.name, scope))
        return found

    def delete_orphan(self, cluster: str, key: str, name: str, scope: Scope) -> None:
        kind = self._shape(key)[0]
        try:
            self.compute.delete(kind, scope, f"delete {_TITLES[key]} {name}", **{_PARAM[kind]: name})
        except NotFound:
            return


class _NotOurs(GCEError):
    """A resource of our name without our mark: never adopted, never deleted."""


def _rules(firewall: Any) -> tuple:
    return (sorted(firewall.source_ranges), sorted(firewall.target_tags),
            sorted((a.I_p_protocol, tuple(a.ports)) for a in firewall.allowed))


_KINDS = {"firewall": "gce-firewall", "address": "gce-address", "disk": "gce-disk", "events_disk": "gce-disk",
          "instance": "gce-instance"}
_TITLES = {"firewall": "firewall rule", "address": "address", "disk": "disk", "events_disk": "disk",
           "instance": "VM"}
_PARAM = {"Firewalls": "firewall", "Addresses": "address", "Disks": "disk", "Instances": "instance"}
