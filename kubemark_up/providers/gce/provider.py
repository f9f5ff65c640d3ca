"""The gce provider: the master on a Compute Engine VM that kubemark-up makes, with its
disk(s), a static external IP and firewall rules for the apiserver and SSH; the hollow
nodes as pods on a root cluster (hollow_nodes: pods), or on the VM (hollow_nodes: host).

Its steps come before the shared ones: one per kind of resource (resources.py), each
recorded in state before it is asked for and carrying this cluster's and this owner's
mark; stop deletes what state records and what the mark finds, never what lacks it
(another owner's included). The address
is reserved before the PKI (it goes into the serving certificate). The VM gets a key
pair made for this cluster; its host key, pinned on first contact, must be one the VM
published (sshkeys.py). Once the VM answers SSH, it is a preexisting host: the
preexisting provider makes the cluster's folder there (its public host step), then
the shared steps (PKI, staging, the master) run as they do there. --dry-run prints
each step's plan: every resource with its body, and what goes on the VM.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from kubemark_up.config import ProviderSettings
from kubemark_up.context import Context
from kubemark_up.errors import ConfigError, HostError, KubemarkUpError
from kubemark_up.nodes import NodeEngine
from kubemark_up.providers.base import MasterSite, Provider, node_engine_for
from kubemark_up.providers.gce.api import AlreadyExists, Compute, GCEError, NotFound, Scope, new_request_id, retrying
from kubemark_up.providers.gce.resources import (
    ADDRESS,
    DISK,
    EVENTS_DISK,
    FIREWALL,
    INSTANCE,
    KINDS,
    SSH_FIREWALL,
    ResourceKind,
    Wanted,
    kind_of,
)
from kubemark_up.providers.gce.settings import (
    HTTPS_PORT,
    KEY_FILE,
    LABEL,
    OWNER_LABEL,
    PREFIX,
    GCESettings,
    owner,
)
from kubemark_up.providers.gce.sshkeys import check_host_key, ensure_in_metadata, ensure_key
from kubemark_up.providers.preexisting import PreexistingProvider, PreexistingSettings
from kubemark_up.state import Resource
from kubemark_up.steps import Step, insert


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
        self._deleted: list[str] = []  # what this command deleted in the cloud, for its last line

    # Derived --------------------------------------------------------------------

    @property
    def compute(self) -> Compute:
        if self._compute is None:
            self._compute = Compute(self.settings.project, operation_timeout=self.settings.operation_timeout,
                                    retry_timeout=self.settings.api_retry_timeout)
        return self._compute

    def owner(self, home: Path) -> str:
        """The owner mark of what is made from home (settings.py: owner)."""
        return owner(home)

    def deleted_resources(self) -> list[str]:
        """What this command deleted in the cloud ("VM kubemark-up-x-master", ...)."""
        return list(self._deleted)

    def _ip(self, ctx: Context) -> str | None:
        resource = ctx.state.resource(ADDRESS.state_kind, ADDRESS.name(ctx.info.name))
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
            from kubemark_up.nodes.registry import engine_for

            engine_for("pods", ctx.settings.node_engine).build(ctx).preflight(ctx)
        self.compute.check_credentials()

    def _check_settings(self) -> None:
        if not self.settings.source_ranges:
            raise ConfigError(
                "gce.source_ranges is required: the networks (CIDRs) that may reach the master's apiserver, "
                "e.g. your own address/32 and the root cluster's; 0.0.0.0/0 opens it to all and must be asked for"
            )

    def steps(self, shared: list[Step]) -> list[Step]:
        own = [
            Step("gce-firewall", "", self._step_firewall, undo=self._undo(FIREWALL, SSH_FIREWALL),
                 undo_title="delete the firewall rules", plan=self._plan(FIREWALL, SSH_FIREWALL, first=True)),
            Step("gce-address", "", self._step_address, undo=self._undo(ADDRESS),
                 undo_title="release the static IP address", plan=self._plan(ADDRESS)),
            Step("gce-disks", "", self._step_disks, undo=self._undo(DISK, EVENTS_DISK),
                 undo_title="delete the master's disk(s)", plan=self._plan(DISK, EVENTS_DISK)),
            Step("gce-instance", "", self._step_instance, undo=self._undo(INSTANCE),
                 undo_title="delete the master VM (and wait)", plan=self._plan(INSTANCE)),
            Step("host", "wait for SSH to the master VM and make the cluster's folder there", self._step_host,
                 undo=self._undo_host, undo_title="fetch the logs and remove the cluster's folder from the master VM",
                 plan=lambda ctx: self.remote(ctx).plan_host(ctx, address=self._ip(ctx) or "the reserved address")),
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

    def _wanted(self, ctx: Context, *, ip: str | None = None, public_key: str = "") -> Wanted:
        return Wanted(settings=self.settings, cluster=ctx.info.name, owner=owner(ctx.dir.home), uid=ctx.info.uid,
                      nodes=ctx.settings.nodes, port=self.apiserver_port(ctx), ip=ip, public_key=public_key)

    def _plan(self, *kinds: ResourceKind, first: bool = False) -> Callable[[Context], list[str]]:
        """--dry-run: the resources a step makes, each with its body; the first step also
        says where and how they are all marked."""
        def plan(ctx: Context) -> list[str]:
            s, lines = self.settings, []
            if first:
                self._check_settings()
                made = ", ".join(kind.name(ctx.info.name) for kind in KINDS if kind.wanted(s))
                lines.append(f"in project {s.project} (zone {s.zone}, region {s.region_name}), in this order: {made}; "
                             f"each labelled {LABEL}={ctx.info.name} and {OWNER_LABEL}={owner(ctx.dir.home)} (the "
                             "firewall rules, which have no labels, by their description)")
            wanted = self._wanted(ctx, public_key=f"ssh-ed25519 <a key made for this cluster> {PREFIX}{ctx.info.name}")
            return lines + [line for kind in kinds if kind.wanted(s) for line in kind.plan(wanted)]

        return plan

    # Start steps ---------------------------------------------------------------------

    def _make(self, ctx: Context, step: str, kind: ResourceKind, body: Any) -> Resource:
        """Record the resource, then insert it and wait; a 409 adopts it if it is ours,
        and refuses (forgetting the record, so stop leaves it alone) if it is not."""
        scope = kind.scope(self.settings)
        what = f"create {kind.title} {body.name}"
        existing = ctx.state.resource(kind.state_kind, body.name)
        request_id = existing.details.get("request_id") if existing else None
        with ctx.creating(kind.state_kind, body.name, step=step, scope=scope.path,
                          request_id=request_id or new_request_id()) as resource:
            try:
                with ctx.ui.step(f"{what} ({scope.path})", long=True):
                    try:
                        kind.insert(self.compute, scope, what, body, resource.details["request_id"])
                    except AlreadyExists:
                        found = kind.get(self.compute, scope, what, body.name)
                        mine = owner(ctx.dir.home)
                        if not kind.ours(found, ctx.info.name, mine):
                            mark = kind.mark(found)
                            whose = (f"another owner's ({OWNER_LABEL}={mark[1] or 'none'}; this one is {mine})"
                                     if mark is not None and mark[0] == ctx.info.name
                                     else f"not this cluster's (no {LABEL}={ctx.info.name})")
                            raise _NotOurs(
                                f"{kind.title} {body.name} already exists in project {self.settings.project} and is "
                                f"{whose}; it is left alone: delete it, or choose another --name") from None
                        ctx.ui.warn(f"{kind.title} {body.name} already exists with this cluster's mark: adopted")
                        resource.details["adopted"] = True
                        if kind.refresh is not None:
                            kind.refresh(self.compute, scope, found, body)
            except _NotOurs:
                ctx.forget(resource)
                raise
        return resource

    def _step_firewall(self, ctx: Context) -> None:
        for kind in (FIREWALL, SSH_FIREWALL):
            self._make(ctx, "gce-firewall", kind, kind.build(self._wanted(ctx)))

    def _step_address(self, ctx: Context) -> None:
        body = ADDRESS.build(self._wanted(ctx))
        resource = self._make(ctx, "gce-address", ADDRESS, body)
        got = ADDRESS.get(self.compute, ADDRESS.scope(self.settings), f"read address {body.name}", body.name)
        resource.details["ip"] = got.address
        ctx.save()
        self._remote = None  # built again with the address

    def _step_disks(self, ctx: Context) -> None:
        for kind in (DISK, EVENTS_DISK):
            if kind.wanted(self.settings):
                self._make(ctx, "gce-disks", kind, kind.build(self._wanted(ctx)))

    def _step_instance(self, ctx: Context) -> None:
        public = ensure_key(self._key_path(ctx), comment=f"{PREFIX}{ctx.info.name}")
        body = INSTANCE.build(self._wanted(ctx, ip=self._ip(ctx), public_key=public))
        resource = self._make(ctx, "gce-instance", INSTANCE, body)
        if resource.details.get("adopted"):
            ensure_in_metadata(ctx, self.compute, INSTANCE.scope(self.settings), body.name,
                               user=self.settings.ssh_user, public=public, mark=f"{PREFIX}{ctx.info.name}")

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
        check_host_key(ctx, self.compute, INSTANCE.scope(self.settings), INSTANCE.name(ctx.info.name),
                       host=remote.master(ctx).host.name, timeout=s.host_key_wait_timeout)
        remote.preflight(ctx)
        remote.prepare_host(ctx)

    # Stop -----------------------------------------------------------------------------

    def _undo_host(self, ctx: Context) -> list[str]:
        instance = ctx.state.resource(INSTANCE.state_kind, INSTANCE.name(ctx.info.name))
        refused = instance is not None and instance.details.get("host_key_refused")
        if refused or self._instance_gone(ctx):  # refused: nothing went there
            for resource in ctx.resources("host"):
                ctx.forget(resource)
            return []
        return self.remote(ctx).release_host(ctx)

    def _instance_gone(self, ctx: Context) -> bool:
        """The master VM no longer exists (and with it what ran there)."""
        name = INSTANCE.name(ctx.info.name)
        try:
            INSTANCE.get(self.compute, INSTANCE.scope(self.settings), f"read VM {name}", name)
        except NotFound:
            return True
        return False

    def _undo(self, *kinds: ResourceKind) -> Callable[[Context], list[str]]:
        return lambda ctx: self._delete_all(ctx, kinds)

    def _delete_all(self, ctx: Context, kinds: tuple[ResourceKind, ...]) -> list[str]:
        """Delete what state records of these kinds (of one client), then what carries our
        mark that state lost; not found is done; without our mark, left alone and said."""
        errors: list[str] = []
        kind = kinds[0]
        mine = owner(ctx.dir.home)
        wanted = {k.name(ctx.info.name) for k in kinds}
        recorded = [r for r in ctx.state.resources if r.kind == kind.state_kind and r.id in wanted]
        seen: set[str] = set()
        for resource in recorded:
            seen.add(resource.id)
            try:
                self._delete_one(ctx, kind, kind.scope(self.settings), resource.id)
                ctx.forget(resource)
            except KubemarkUpError as exc:
                errors.append(exc.message)
        try:
            # One list finds a labelled client's all (both disks); firewall rules go by name.
            listed = [found for k in (kinds[:1] if kind.labelled else kinds)
                      for found in k.marked(self.compute, ctx.info.name, mine)]
            for where, item in listed:
                if item.name not in seen:
                    seen.add(item.name)
                    ctx.ui.warn(f"{kind.title} {item.name} carries this cluster's mark but state did not know it: "
                                "deleting it")
                    try:
                        self._delete_one(ctx, kind, where, item.name)
                    except KubemarkUpError as exc:
                        errors.append(exc.message)
        except KubemarkUpError as exc:
            errors.append(exc.message)
        return errors

    def _delete_one(self, ctx: Context, kind: ResourceKind, scope: Scope, name: str) -> None:
        what = f"delete {kind.title} {name}"
        try:
            found = kind.get(self.compute, scope, what, name)
        except NotFound:
            return
        mine = owner(ctx.dir.home)
        if not kind.ours(found, ctx.info.name, mine):
            raise GCEError(f"{kind.title} {name} exists but does not carry {LABEL}={ctx.info.name} and "
                           f"{OWNER_LABEL}={mine}: left alone")
        try:
            kind.delete(self.compute, scope, what, name)
        except NotFound:
            return
        self._deleted.append(f"{kind.title} {name}")

    def sweep(self, ctx: Context) -> list[str]:
        """state.json is lost: the hollow-node pods by their uid, then every resource
        that carries this cluster's and this owner's mark, found by listing, in stop's
        order; then listed again, so that what this returns without a problem is gone
        (and the cluster's files here may go with it)."""
        errors: list[str] = []
        if ctx.settings.hollow_nodes == "pods":
            from kubemark_up.nodes.registry import engine_for

            try:
                errors += engine_for("pods", ctx.settings.node_engine).build(ctx).stop(ctx)
            except KubemarkUpError as exc:
                errors.append(exc.message)
        order = ((INSTANCE,), (DISK, EVENTS_DISK), (ADDRESS,), (FIREWALL, SSH_FIREWALL))
        for kinds in order:
            errors += self._delete_all(ctx, kinds)
        if errors:
            return errors
        mine = owner(ctx.dir.home)
        try:
            left = [f"{kind.title} {item.name}" for kinds in order for kind in (kinds[:1] if kinds[0].labelled else kinds)
                    for _, item in kind.marked(self.compute, ctx.info.name, mine)]
        except KubemarkUpError as exc:
            return [f"cannot confirm the cluster's cloud resources are gone: {exc.message}"]
        return [f"{what} still carries this cluster's mark after its delete" for what in left]

    # gc ---------------------------------------------------------------------------------

    def orphans(self, known: set[str]) -> list[tuple[str, str, str, str, Scope]]:
        """Resources in the project marked by kubemark-up for a cluster not in known,
        whoever the owner: (cluster, owner, key, name, scope); owner "" for a resource
        that carries the cluster's label and no owner."""
        found: list[tuple[str, str, str, str, Scope]] = []
        for kind in (INSTANCE, DISK, ADDRESS, FIREWALL, SSH_FIREWALL):  # DISK: the events disks too (one client)
            for cluster, made_by, scope, item in kind.all_marked(self.compute):
                if cluster not in known:
                    found.append((cluster, made_by, kind.key, item.name, scope))
        return found

    def delete_orphan(self, cluster: str, key: str, name: str, scope: Scope) -> None:
        kind = kind_of(key)
        try:
            kind.delete(self.compute, scope, f"delete {kind.title} {name}", name)
        except NotFound:
            return
        self._deleted.append(f"{kind.title} {name}")


class _NotOurs(GCEError):
    """A resource of our name without our mark: never adopted, never deleted."""
