"""The cloud resources a gce cluster makes, one ResourceKind record each: its name,
its mark (the labels kubemark-up-cluster=<name> and kubemark-up-owner=<owner>; for
the firewall rules, which have no labels, an exact name and a description naming the
cluster and the owner), its body, where it lives, the calls that insert, read and
delete it, and its --dry-run lines.

FIREWALL, SSH_FIREWALL, ADDRESS, DISK, EVENTS_DISK, INSTANCE: the order start makes
them in (stop deletes them the other way round).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from kubemark_up.providers.gce.api import Compute, Scope
from kubemark_up.providers.gce.settings import (
    DESCRIPTION,
    EVENTS_PD_DEVICE,
    LABEL,
    MASTER_PD_DEVICE,
    OWNER_LABEL,
    GCESettings,
    machine_type,
    master_disk_gb,
    names,
    network,
    root_disk_gb,
)


@dataclass(frozen=True)
class Wanted:
    """What the bodies are drawn from: the settings, the cluster, and what start learns
    only as it goes (the reserved address, the cluster's public key)."""

    settings: GCESettings
    cluster: str
    owner: str
    uid: str
    nodes: int
    port: int  # kube-apiserver's, which the firewall rule opens
    ip: str | None = None  # None: a placeholder (--dry-run, or not reserved yet)
    public_key: str = ""

    @property
    def labels(self) -> dict[str, str]:
        return {LABEL: self.cluster, OWNER_LABEL: self.owner}

    def description(self, what: str, *, uid: bool = False) -> str:
        """A description beginning with the mark (a firewall rule's only one)."""
        return DESCRIPTION.format(name=self.cluster, owner=self.owner) + (f", uid {self.uid}" if uid else "") + \
            f"): {what}"


_MARK = re.compile(r"kubemark-up cluster (\S+) \(owner (\w+)[,)]")  # DESCRIPTION's, read back


def description_mark(text: str) -> tuple[str, str] | None:
    """(cluster, owner) of a description that begins with the mark, else None."""
    found = _MARK.match(text)
    return (found[1], found[2]) if found else None


@dataclass(frozen=True)
class ResourceKind:
    key: str  # its name in names(): "firewall", "address", "disk", "events_disk", "instance"
    title: str  # in messages: "disk"
    role: str  # in --dry-run: "etcd-events disk"
    client: str  # the Compute client: "Disks"
    param: str  # the request field that names one: "disk" (also its kind in state: gce-disk)
    scope_kind: str  # where it lives: "global", "region" or "zone"
    build: Callable[[Wanted], Any]  # its body
    wanted: Callable[[GCESettings], bool] = lambda settings: True  # made at all with these settings
    labelled: bool = True  # False: marked by its exact name and description instead (firewalls)
    # On adopting one of ours: bring it to the body asked for now; None: taken as found.
    refresh: Callable[[Compute, Scope, Any, Any], None] | None = None

    @property
    def state_kind(self) -> str:
        return f"gce-{self.param}"

    def name(self, cluster: str) -> str:
        return names(cluster)[self.key]

    def scope(self, settings: GCESettings) -> Scope:
        return {"global": Scope("global"), "region": Scope("region", settings.region_name),
                "zone": Scope("zone", settings.zone)}[self.scope_kind]

    def mark(self, found: Any) -> tuple[str, str] | None:
        """(cluster, owner) that found (as read from the API) is marked for, or None;
        owner "" when it carries the cluster's label alone (not made by kubemark-up
        as it is now, or by someone who copied the label)."""
        if not self.labelled:
            return description_mark(str(found.description))
        labels = dict(found.labels)
        return (labels[LABEL], labels.get(OWNER_LABEL, "")) if LABEL in labels else None

    def ours(self, found: Any, cluster: str, owner: str) -> bool:
        """found carries cluster's mark, made by owner."""
        return self.mark(found) == (cluster, owner)

    # The calls ---------------------------------------------------------------------

    def insert(self, compute: Compute, scope: Scope, what: str, body: Any, request_id: str) -> None:
        compute.insert(self.client, scope, what, f"{self.param}_resource", body, request_id)

    def get(self, compute: Compute, scope: Scope, what: str, name: str) -> Any:
        return compute.get(self.client, scope, what, **{self.param: name})

    def delete(self, compute: Compute, scope: Scope, what: str, name: str) -> None:
        compute.delete(self.client, scope, what, **{self.param: name})

    def marked(self, compute: Compute, cluster: str, owner: str) -> list[tuple[Scope, Any]]:
        """Every resource of this kind (for a labelled kind: of this client) in the
        project with cluster's mark, made by owner."""
        if not self.labelled:
            name = self.name(cluster)
            found = compute.labelled(self.client, "list firewall rules", f'name = "{name}"')
        else:
            found = compute.labelled(self.client, f"list {self.client.lower()} labelled {LABEL}={cluster}",
                                     f'labels.{LABEL} = "{cluster}"')
        return [(where, item) for where, item in found if self.ours(item, cluster, owner)]

    def all_marked(self, compute: Compute) -> Iterator[tuple[str, str, Scope, Any]]:
        """(cluster, owner, where, resource) for every resource of this kind (labelled:
        of this client) in the project that kubemark-up marked, whatever the cluster
        and owner."""
        if self.labelled:
            found = compute.labelled(self.client, f"list {self.client.lower()} labelled {LABEL}", f"labels.{LABEL}:*")
        else:
            found = compute.labelled(self.client, "list firewall rules", f'name eq "{self.name(".*")}"')
        for scope, item in found:
            mark = self.mark(item)
            # A firewall rule is marked by its exact name too.
            if mark is not None and (self.labelled or item.name == self.name(mark[0])):
                yield mark[0], mark[1], scope, item

    def plan(self, wanted: Wanted) -> list[str]:
        """--dry-run: what it is, where, and its body as it goes on the wire (the API's field names)."""
        body = self.build(wanted)
        return [f"{self.role} {body.name} ({self.scope(wanted.settings).path}):",
                "    " + type(body).to_json(body, preserving_proto_field_name=False,
                                            always_print_fields_with_no_presence=False, indent=None)]


# The bodies -------------------------------------------------------------------------


def _firewall(key: str) -> Callable[[Wanted], Any]:
    """The rule that lets source_ranges reach the master VM: its apiserver, or its sshd
    (kubemark-up's own way in: a network without such a rule would leave start waiting
    out ssh_wait_timeout)."""
    def build(w: Wanted) -> Any:
        from google.cloud import compute_v1
        s, n = w.settings, names(w.cluster)
        port, what = (w.port, "its apiserver") if key == "firewall" else (s.ssh_port, "SSH to its master")
        return compute_v1.Firewall(
            name=n[key], network=network(s), direction="INGRESS", source_ranges=list(s.source_ranges),
            target_tags=[n["tag"]], allowed=[compute_v1.Allowed(I_p_protocol="tcp", ports=[str(port)])],
            description=w.description(what, uid=True))

    return build


def _address(w: Wanted) -> Any:
    from google.cloud import compute_v1
    return compute_v1.Address(name=names(w.cluster)["address"], address_type="EXTERNAL", labels=w.labels,
                              description=w.description("the master's address"))


def _disk(key: str) -> Callable[[Wanted], Any]:
    def build(w: Wanted) -> Any:
        from google.cloud import compute_v1
        s = w.settings
        return compute_v1.Disk(name=names(w.cluster)[key], size_gb=s.disk_size_gb or master_disk_gb(w.nodes),
                               type_=f"zones/{s.zone}/diskTypes/{s.disk_type}", labels=w.labels)

    return build


def _instance(w: Wanted) -> Any:
    from google.cloud import compute_v1
    s, n, zone = w.settings, names(w.cluster), w.settings.zone
    disk_link = f"projects/{s.project}/zones/{zone}/disks/"
    attached = [compute_v1.AttachedDisk(
        boot=True, auto_delete=True, initialize_params=compute_v1.AttachedDiskInitializeParams(
            source_image=s.image, disk_size_gb=s.root_disk_size_gb or root_disk_gb(w.nodes),
            disk_type=f"zones/{zone}/diskTypes/pd-standard", labels=w.labels)),
        compute_v1.AttachedDisk(source=disk_link + n["disk"], device_name=MASTER_PD_DEVICE, mode="READ_WRITE",
                                auto_delete=False)]
    if s.events_disk:
        attached.append(compute_v1.AttachedDisk(source=disk_link + n["events_disk"], device_name=EVENTS_PD_DEVICE,
                                                mode="READ_WRITE", auto_delete=False))
    nic = compute_v1.NetworkInterface(network=network(s), access_configs=[compute_v1.AccessConfig(
        name="External NAT", type_="ONE_TO_ONE_NAT", nat_i_p=w.ip or "<the reserved address>")])
    if s.subnetwork:
        nic.subnetwork = f"regions/{s.region_name}/subnetworks/{s.subnetwork}"
    return compute_v1.Instance(
        name=n["instance"], machine_type=f"zones/{zone}/machineTypes/{machine_type(s, w.nodes)}", labels=w.labels,
        description=w.description("the master"), tags=compute_v1.Tags(items=[n["tag"]]),
        disks=attached, network_interfaces=[nic],
        metadata=compute_v1.Metadata(items=[
            compute_v1.Items(key="ssh-keys", value=f"{s.ssh_user}:{w.public_key}"),
            # The guest environment publishes the VM's SSH host keys there (hostkeys/),
            # to be checked against the key SSH met on first contact.
            compute_v1.Items(key="enable-guest-attributes", value="TRUE"),
            compute_v1.Items(key="startup-script", value=startup_script(s)),
        ]))


def _refresh_firewall(compute: Compute, scope: Scope, found: Any, body: Any) -> None:
    """A rule left by an earlier run of this name: its port or ranges as asked now."""
    def rules(firewall: Any) -> tuple:
        return (sorted(firewall.source_ranges), sorted(firewall.target_tags),
                sorted((a.I_p_protocol, tuple(a.ports)) for a in firewall.allowed))

    if rules(found) != rules(body):
        compute.update("Firewalls", scope, f"update firewall rule {body.name}", firewall=body.name,
                       firewall_resource=body)


def startup_script(settings: GCESettings) -> str:
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


FIREWALL = ResourceKind(key="firewall", title="firewall rule", role="firewall rule for the apiserver",
                        client="Firewalls", param="firewall", scope_kind="global", build=_firewall("firewall"),
                        labelled=False, refresh=_refresh_firewall)
SSH_FIREWALL = ResourceKind(key="ssh_firewall", title="firewall rule", role="firewall rule for SSH",
                            client="Firewalls", param="firewall", scope_kind="global",
                            build=_firewall("ssh_firewall"), labelled=False, refresh=_refresh_firewall)
ADDRESS = ResourceKind(key="address", title="address", role="static external IP address", client="Addresses",
                       param="address", scope_kind="region", build=_address)
DISK = ResourceKind(key="disk", title="disk", role="master disk", client="Disks", param="disk", scope_kind="zone",
                    build=_disk("disk"))
EVENTS_DISK = ResourceKind(key="events_disk", title="disk", role="etcd-events disk", client="Disks", param="disk",
                           scope_kind="zone", build=_disk("events_disk"), wanted=lambda settings: settings.events_disk)
INSTANCE = ResourceKind(key="instance", title="VM", role="master VM", client="Instances", param="instance",
                        scope_kind="zone", build=_instance)

KINDS = (FIREWALL, SSH_FIREWALL, ADDRESS, DISK, EVENTS_DISK, INSTANCE)


def kind_of(key: str) -> ResourceKind:
    return next(kind for kind in KINDS if kind.key == key)
