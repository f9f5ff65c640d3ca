"""Hollow nodes as stock kubemark processes on the master's host (hollow_nodes: host,
node_engine: kubemark; this machine for the local provider, the VM or machine over
SSH for gce and preexisting): for each node a hollow kubelet (hollow-node-<i>.kubelet)
and a hollow kube-proxy (hollow-node-<i>.proxy), each with its own log, all recorded
in state before they start.

Stock kubemark also leaves things behind that only this engine knows of: its root
folder and fake CRI socket in a hard-coded /tmp. stop freezes the processes, finds
those files and removes them once the processes are gone.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Literal

from kubemark_up import staging
from kubemark_up.context import Context
from kubemark_up.errors import ConfigError
from kubemark_up.nodes.base import HostNodeEngine, NodeFailure, NodeLocation
from kubemark_up.nodes.kubemark.args import kubelet_command, proxy_command
from kubemark_up.state import ProcessRecord

MORPHS: tuple[Literal["kubelet"], Literal["proxy"]] = ("kubelet", "proxy")

# Measured on this project's machines: a hollow kubelet holds 2 inotify instances,
# and the per-user default limit is 128 (legacy kubemark hit it too, kubernetes#41713).
INOTIFY_PER_NODE = 2
# Hollow nodes started at once per CPU of their host: each kubemark process spends
# about a third of a CPU-second starting, so larger waves only queue on the cores
# and starve the master (see the README's benchmark).
WAVE_PER_CPU = 25

# A hollow kubelet on a host with iptables adds KUBE-IPTABLES-HINT, KUBE-KUBELET-CANARY and
# KUBE-FIREWALL (a DROP rule) to the host's tables, and nothing removes them. Ahead of
# the host's PATH, these refuse, and the kubelet goes on without its iptables rules (it
# logs "Failed to initialize iptables rules"), as it does in the kubemark image.
_HIDDEN_TOOLS = ("iptables", "ip6tables", "iptables-save", "ip6tables-save", "iptables-restore",
                 "ip6tables-restore", "iptables-legacy", "ip6tables-legacy", "iptables-nft", "ip6tables-nft")
_REFUSE = b'#!/bin/sh\necho "kubemark-up: hollow nodes leave the iptables of this host alone" >&2\nexit 1\n'

# Stock kubemark puts two things in a hard-coded /tmp, whatever TMPDIR says: the hollow
# kubelet's root folder (test/utils MakeTempDirOrDie) and its fake CRI socket
# (k8s.io/cri-client/pkg/fake GenerateEndpoint). stop removes them; these patterns
# are all it will ever remove there.
_ROOT_DIR = re.compile(r"^(/tmp/hollow-kubelet\.\d+)(/|$)")
_CRI_SOCKET = re.compile(r"^/tmp/kubelet_remote_\d+\.sock$")
_ROOT_DIR_LOGGED = re.compile(r"Using (/tmp/hollow-kubelet\.\d+) as root dir for hollow-kubelet")


def instance(node: str, morph: str) -> str:
    return f"{node}.{morph}"


def _node_identity(relative: Path) -> bool:
    """The files of pki/ the hollow nodes read: their certificates and kubeconfigs,
    kube-proxy's, and the CA that checks the apiserver."""
    parts = relative.parts
    if parts[0] == "kubeconfigs":
        return parts[1:2] in (("nodes",), ("kube-proxy.kubeconfig",))
    return parts[0] in ("nodes", "kube-proxy.crt", "kube-proxy.key", "ca.crt")


class KubemarkHostNodes(HostNodeEngine):
    name = "processes"

    def plan(self, ctx: Context) -> list[str]:
        return [f"{ctx.settings.nodes} hollow nodes as kubemark processes on {self.host.name}"]

    @property
    def where(self) -> str:
        return self.host.name

    def _records(self, ctx: Context) -> list[ProcessRecord]:
        return [r for r in ctx.state.processes.values() if r.role in MORPHS]

    def preflight(self, ctx: Context) -> None:
        limit = self.host.facts().inotify_max_user_instances
        needed = ctx.settings.nodes * INOTIFY_PER_NODE + 16
        if ctx.settings.nodes and limit is not None and needed > limit:
            raise ConfigError(
                f"{ctx.settings.nodes} hollow nodes need about {needed} inotify instances and {self.host.name} "
                f"allows {limit} per user: raise it with `sysctl -w fs.inotify.max_user_instances={needed * 2}`"
            )

    def wave_size(self, ctx: Context) -> int:
        return WAVE_PER_CPU * self.host.facts().cpus

    def prepare(self, ctx: Context, names: list[str]) -> None:
        """The kubemark binary and the nodes' identities on the host (on this machine
        they are already where they are read)."""
        staging.put_binaries(
            self.host, {"kubemark": Path(ctx.state.binaries["kubemark"])}, self.paths.bin_dir, upload=self.upload
        )
        staging.put_tree(self.host, ctx.dir.pki, self.paths.pki_dir, include=_node_identity)
        shims = self._shims()
        self.host.mkdirs([shims])
        for tool in _HIDDEN_TOOLS:
            self.host.put(posixpath.join(shims, tool), _REFUSE, mode=0o700)

    def _shims(self) -> str:
        return posixpath.join(self.paths.data_dir, "hollow-path")

    def _plan(self, ctx: Context, names: list[str]) -> list[ProcessRecord]:
        new = [name for name in names if instance(name, "kubelet") not in ctx.state.processes]
        low, high = ctx.settings.port_bounds
        with ctx.dir.lock_ports():  # picked and recorded before another cluster picks
            taken = set(ctx.state.ports.values()) | ctx.dir.claimed_ports()
            ports = self.host.free_ports(len(new), low=low, high=high, exclude=taken)
            binary = self.paths.binary("kubemark")
            proxy_kubeconfig = posixpath.join(self.paths.kubeconfig_dir, "kube-proxy.kubeconfig")
            for name, port in zip(new, ports, strict=True):
                ctx.state.ports[instance(name, "kubelet")] = port
                kubeconfig = posixpath.join(self.paths.kubeconfig_dir, "nodes", f"{name}.kubeconfig")
                commands: dict[Literal["kubelet", "proxy"], list[str]] = {
                    "kubelet": kubelet_command(ctx.settings, binary=binary, name=name, kubeconfig=kubeconfig, port=port),
                    "proxy": proxy_command(ctx.settings, binary=binary, name=name, kubeconfig=proxy_kubeconfig),
                }
                for morph, argv in commands.items():
                    key = instance(name, morph)
                    ctx.state.processes[key] = ProcessRecord(
                        name=key, role=morph, node=name, argv=argv, log=self.paths.log(key)
                    )
            ctx.state.nodes = list(dict.fromkeys([*ctx.state.nodes, *new]))
            ctx.save()  # every process is in state before the first one starts
        wanted = set(names)
        return [r for r in self._records(ctx) if r.node in wanted and r.pid is None]

    def start(self, ctx: Context, names: list[str]) -> None:
        records = self._plan(ctx, names)
        # PIDs reach state after the spawn; a SIGKILL before then leaves processes that
        # stop finds by this marker.
        handles = self.host.spawn_many([(r.argv, r.log) for r in records], env={}, marker=ctx.node_marker,
                                       path_first=[self._shims()])
        for record, handle in zip(records, handles, strict=True):
            record.pid, record.start = handle.pid, handle.start
        ctx.save()

    def stop(self, ctx: Context) -> list[str]:
        # Recorded processes, and any started but not yet recorded when start was killed.
        handles = {h for r in self._records(ctx) if (h := ctx.handle(r))}
        handles.update(self.host.find_marked(ctx.node_marker))
        # Frozen, a hollow kubelet still starting up cannot make its socket after the scan.
        self.host.signal(handles, "STOP")
        scratch = self._scratch(ctx, handles)
        left = self.host.stop(handles, timeout=ctx.settings.stop_timeout)
        if not left:
            self.host.remove(sorted(scratch))
        return [f"hollow-node process {h.pid} on {self.host.name} would not stop" for h in left]

    def _scratch(self, ctx: Context, handles: set) -> set[str]:
        """What the hollow kubelets put in /tmp: from a live one's listening sockets (its
        podresources socket lies in its root folder), else from its log. The patterns
        match only hollow-kubelet files, so scanning every hollow process is safe."""
        paths: set[str] = set()
        for found in self.host.unix_listeners(handles).values():
            for socket_path in found:
                if _CRI_SOCKET.match(socket_path):
                    paths.add(socket_path)
                elif match := _ROOT_DIR.match(socket_path):
                    paths.add(match[1])
        for record in self._records(ctx):
            if record.role == "kubelet":
                paths.update(_ROOT_DIR_LOGGED.findall(self.host.read_text(record.log, limit=256 * 1024)))
        return paths

    def locate(self, ctx: Context, node: str) -> NodeLocation:
        records = [r for m in MORPHS if (r := ctx.state.processes.get(instance(node, m)))]
        alive = self.host.alive(h for r in records if (h := ctx.handle(r)))
        details = []
        for record in records:
            handle = ctx.handle(record)
            details.append(
                {
                    "process": record.role,
                    "pid": record.pid,
                    "running": bool(handle and alive.get(handle)),
                    "log": record.log,
                    "port": ctx.state.ports.get(record.name),
                }
            )
        return NodeLocation(node=node, where=f"kubemark processes on {self.host.name}", details=details)

    def failed(self, ctx: Context) -> dict[str, NodeFailure]:
        records = self._records(ctx)
        alive = self.host.alive(h for r in records if (h := ctx.handle(r)))
        failed: dict[str, NodeFailure] = {}
        for record in records:
            handle = ctx.handle(record)
            if (handle is None or not alive.get(handle)) and record.node and record.node not in failed:
                failed[record.node] = NodeFailure(f"its hollow {record.role} process exited", record.log)
        return failed

    def collect_logs(self, ctx: Context, out: Path) -> list[Path]:
        written = []
        for record in self._records(ctx):
            target = out / posixpath.basename(record.log)
            if self.host.get(record.log, target):
                written.append(target)
        return written
