"""The preexisting provider: the master on a machine the user already has, reached
over SSH. kubemark-up puts the binaries, PKI, manifests and start script into
<remote_root>/<name>/ there and runs the master supervised, as it does locally. The
hollow nodes run on that same host (the Kubemark proposal's "Option 1": kubemark
processes, or the fleet), or as pods on a root cluster (hollow_nodes: pods).

On the host it makes one folder per cluster, marked with the cluster's uid, and
removes only a folder that carries that mark (and remote_root itself only if it
made it and it is empty). That host step (prepare_host, release_host, plan_host) is
public: the gce provider runs it on the VM it makes.
"""

from __future__ import annotations

import dataclasses
import getpass
import ipaddress
import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator

from kubemark_up.config import IPAddress, ProviderSettings
from kubemark_up.context import Context
from kubemark_up.errors import ConfigError, HostError
from kubemark_up.hosts.ssh import SSHHost, SSHTarget, fingerprint
from kubemark_up.master import STANDARD_METRICS_PORTS, MasterPaths
from kubemark_up.nodes import NodeEngine
from kubemark_up.providers.base import MasterSite, Provider, node_engine_for
from kubemark_up.steps import Step, insert

OWNER_FILE = ".kubemark-up-cluster"  # in the cluster's folder on the host: its uid
MIN_PYTHON = (3, 8)


class PreexistingSettings(ProviderSettings):
    """Documented in config/default.yaml, under `preexisting:`."""

    host: str
    port: int = Field(22, ge=1, le=65535)
    user: str | None = None
    identity_file: Path | None = None
    known_hosts: Path = Path("~/.ssh/known_hosts")
    trust_unknown_host: bool = False
    connect_timeout: float = Field(10, gt=0)
    python: str = "python3"
    address: str | None = None
    bind_address: IPAddress | None = None
    remote_root: str = "/etc/srv/kubernetes"
    remote_bin_dir: str | None = None
    events_root: str | None = None

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if ":" in value or not value:
                raise ValueError("a host name or IP address, without a port (the SSH port is preexisting.port)") from None
        return value

    @field_validator("remote_root", "remote_bin_dir", "events_root")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not posixpath.isabs(value):
            raise ValueError("must be an absolute path on the host")
        return posixpath.normpath(value) if value else value


class PreexistingProvider(Provider):
    name = "preexisting"
    settings_model = PreexistingSettings
    # The legacy pre-existing provider's names (MASTER_IP without a port), and the SSH
    # names clusterloader2 reads.
    legacy_env: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "host": ("MASTER_IP",), "user": ("KUBE_SSH_USER",), "identity_file": ("KUBE_SSH_KEY_PATH",),
    }
    settings: PreexistingSettings

    def __init__(self, settings: ProviderSettings | None = None) -> None:
        super().__init__(settings)
        self._host: SSHHost | None = None

    # Where things are -----------------------------------------------------------

    def _root(self, ctx: Context) -> str:
        return posixpath.join(self.settings.remote_root, ctx.info.name)

    def _ssh(self, ctx: Context) -> SSHHost:
        if self._host is None:
            s = self.settings
            target = SSHTarget(
                host=s.host, port=s.port, user=s.user or getpass.getuser(),
                identity_file=s.identity_file.expanduser() if s.identity_file else None,
                known_hosts=s.known_hosts.expanduser(), trust_unknown_host=s.trust_unknown_host,
                connect_timeout=s.connect_timeout, python=s.python,
            )
            target = dataclasses.replace(target, pinned_key=ctx.state.host_keys.get(target.name))

            def pin(key: str, on_trust: bool) -> None:
                if on_trust:
                    ctx.ui.warn(f"trusting the unknown host key of {target.name} ({fingerprint(key)}) on first use")
                ctx.state.host_keys[target.name] = key  # saved with the next state write

            self._host = SSHHost(target, supervisor=posixpath.join(self._bin_dir(ctx), "supervise.py"), on_host_key=pin)
        return self._host

    def _events_dir(self, ctx: Context) -> str | None:
        """The cluster's folder under events_root (etcd-events' data), if there is one."""
        root = self.settings.events_root
        return posixpath.join(root, ctx.info.name) if root else None

    def _bin_dir(self, ctx: Context) -> str:
        return posixpath.join(self._root(ctx), "bin")

    def master(self, ctx: Context) -> MasterSite:
        s, root = self.settings, self._root(ctx)
        address = s.address or s.host
        addresses = list(dict.fromkeys([address, s.host]))
        bind = s.bind_address or (address if _is_ip(address) else "0.0.0.0")
        paths = MasterPaths(
            pki_dir=posixpath.join(root, "pki"), kubeconfig_dir=posixpath.join(root, "pki", "kubeconfigs"),
            data_dir=posixpath.join(root, "run"), bin_dir=s.remote_bin_dir or self._bin_dir(ctx),
            log_dir=posixpath.join(root, "logs"),
            events_data_dir=posixpath.join(events, "etcd-events") if (events := self._events_dir(ctx)) else None,
        )
        return MasterSite(host=self._ssh(ctx), addresses=addresses, bind_address=bind, paths=paths,
                          upload_binaries=s.remote_bin_dir is None)

    def node_engine(self, ctx: Context) -> NodeEngine:
        return node_engine_for(ctx, self.master(ctx))

    def fixed_ports(self, ctx: Context) -> dict[str, int]:
        """clusterloader2 reads the scheduler's and etcd's metrics over SSH at fixed ports."""
        fixed = super().fixed_ports(ctx)
        if ctx.settings.standard_metrics_ports:
            fixed.update(STANDARD_METRICS_PORTS)
        return fixed

    # Start ------------------------------------------------------------------------

    def preflight(self, ctx: Context) -> None:
        host, root = self._ssh(ctx), self._root(ctx)
        remote_root = self.settings.remote_root
        facts = host.facts([remote_root, root])  # connects: host key and login checked here
        if facts.python[:2] < MIN_PYTHON:
            found = ".".join(str(part) for part in facts.python)
            raise HostError(f"{host.name} has Python {found}; kubemark-up needs 3.8 or later there (set preexisting.python)")
        if facts.exists[root]:
            raise HostError(
                f"{root} already exists on {host.name}: another cluster named '{ctx.info.name}' uses it, "
                "or was not stopped; stop it, or choose another --name"
            )
        if not facts.writable[remote_root]:
            raise HostError(
                f"{host.target.user} cannot write {remote_root} on {host.name}: set preexisting.remote_root to a folder "
                "that user may write (the legacy /etc/srv/kubernetes needs root)"
            )
        port = ctx.settings.apiserver_port
        if port and host.port_in_use(port):
            raise ConfigError(f"apiserver_port {port} is already in use on {host.name}")
        if ctx.settings.nodes:
            self.node_engine(ctx).preflight(ctx)

    def steps(self, shared: list[Step]) -> list[Step]:
        host_step = Step(
            "host", "make the cluster's folder on the master host", self.prepare_host,
            undo=self.release_host, undo_title="fetch the logs and remove the cluster's folder from the master host",
            plan=self.plan_host,
        )
        return insert(shared, before="ports", new=[host_step])

    # The host step: public, for a provider that brings the host itself (gce) and
    # runs it in a "host" step of its own once the host answers.

    def plan_host(self, ctx: Context, *, address: str | None = None) -> list[str]:
        """--dry-run: what goes on the host over SSH (address: what to call the host, when
        it is not known yet)."""
        s = self.settings
        folders = [folder for _, folder in self._folders(ctx)]
        events = f" (and {folders[1]} for etcd-events' data)" if len(folders) > 1 else ""
        binaries = "binaries, " if s.remote_bin_dir is None else ""
        port = ctx.provider.apiserver_port(ctx)
        listens = f"port {port}" if port else "a free port"
        return [f"over SSH as {s.user or getpass.getuser()} to {address or s.host}, port {s.port}: the folder "
                f"{folders[0]}{events} with the master's {binaries}certificates and manifests, and etcd, "
                f"kube-apiserver ({listens}), kube-controller-manager, kube-scheduler"]

    def _folders(self, ctx: Context) -> list[tuple[str, str]]:
        """(a root, the cluster's folder in it): remote_root's, and events_root's if set."""
        found = [(self.settings.remote_root, self._root(ctx))]
        events = self._events_dir(ctx)
        if events and self.settings.events_root:
            found.append((self.settings.events_root, events))
        return found

    def prepare_host(self, ctx: Context) -> None:
        """Make the cluster's folder(s) on the host, marked with its uid (and remote_root,
        events_root, if they are not there: recorded, to be removed when empty)."""
        host = self._ssh(ctx)
        for remote_root, root in self._folders(ctx):
            if not host.facts([remote_root]).exists[remote_root]:
                with ctx.creating("folder", remote_root, step="host", host=host.name):
                    host.mkdirs([remote_root], mode=0o755)
            with ctx.creating("folder", root, step="host", host=host.name, owner=ctx.info.uid):
                (made,) = host.mkdirs([root], mode=0o700)
                if not made:
                    raise HostError(f"{root} appeared on {host.name} while start was preparing it; it is not ours")
                host.put(posixpath.join(root, OWNER_FILE), f"{ctx.info.uid}\n".encode(), mode=0o600)
        host.mkdirs([posixpath.join(self._root(ctx), "logs"), self._bin_dir(ctx)], mode=0o700)

    # Stop -------------------------------------------------------------------------

    def release_host(self, ctx: Context) -> list[str]:
        """Stop anything of the cluster still running there, fetch the logs (unless told
        not to), remove the cluster's folder(s) if they carry our uid, then remote_root
        (and events_root) if we made it and it is empty."""
        host, root = self._ssh(ctx), self._root(ctx)
        left = host.stop(host.find_marked(ctx.marker), timeout=ctx.settings.stop_timeout)
        if left:
            return [f"process {h.pid} of this cluster on {host.name} would not stop" for h in left]
        owner = host.read_text(posixpath.join(root, OWNER_FILE)).strip()
        if owner and owner != ctx.info.uid:
            return [f"{root} on {host.name} belongs to another cluster (uid {owner}); left as it is"]
        if owner and ctx.fetch_logs:
            logs = posixpath.join(root, "logs")
            ctx.dir.logs.mkdir(mode=0o700, parents=True, exist_ok=True)
            for name in host.listdir(logs):
                host.get(posixpath.join(logs, name), ctx.dir.logs / name)
        problems = []
        for remote_root, folder in reversed(self._folders(ctx)):
            mark = host.read_text(posixpath.join(folder, OWNER_FILE)).strip()
            if mark and mark != ctx.info.uid:
                problems.append(f"{folder} on {host.name} belongs to another cluster (uid {mark}); left as it is")
                continue
            recorded = ctx.state.resource("folder", folder)
            if mark:
                host.remove([folder])
            elif recorded is not None:
                # Made, then killed before it was marked: ours only while it is still empty.
                host.rmdir_if_empty(folder)
            if recorded is not None:
                ctx.forget(recorded)
            made_root = ctx.state.resource("folder", remote_root)
            if made_root is not None:
                host.rmdir_if_empty(remote_root)
                ctx.forget(made_root)
        return problems

    def sweep(self, ctx: Context) -> list[str]:
        errors = super().sweep(ctx)
        return errors or self.release_host(ctx)

    def close(self) -> None:
        if self._host is not None:
            self._host.close()


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
