"""Hollow nodes as stock kubemark processes on a Host: for each node a hollow
kubelet (hollow-node-<i>.kubelet) and a hollow kube-proxy (hollow-node-<i>.proxy),
each with its own log and temp folder, all recorded in state before they start."""

from __future__ import annotations

import re
from pathlib import Path

from kubemark_up.context import Context
from kubemark_up.hosts import Host
from kubemark_up.nodes.base import NodeEngine, NodeFailure, NodeLocation
from kubemark_up.nodes.hollow import kubelet_command, proxy_command
from kubemark_up.state import ProcessRecord

MORPHS = ("kubelet", "proxy")

# Stock kubemark puts two things in a hard-coded /tmp, whatever TMPDIR says: the hollow
# kubelet's root folder (test/utils MakeTempDirOrDie) and its fake CRI socket
# (k8s.io/cri-client/pkg/fake GenerateEndpoint). stop removes them; these patterns
# are all it will ever remove there.
_ROOT_DIR = re.compile(r"^(/tmp/hollow-kubelet\.\d+)(/|$)")
_CRI_SOCKET = re.compile(r"^/tmp/kubelet_remote_\d+\.sock$")
_ROOT_DIR_LOGGED = re.compile(r"Using (/tmp/hollow-kubelet\.\d+) as root dir for hollow-kubelet")


def instance(node: str, morph: str) -> str:
    return f"{node}.{morph}"


class ProcessNodes(NodeEngine):
    name = "processes"

    def __init__(self, host: Host) -> None:
        self.host = host

    def _records(self, ctx: Context) -> list[ProcessRecord]:
        return [r for r in ctx.state.processes.values() if r.role in MORPHS]

    def _plan(self, ctx: Context, names: list[str]) -> None:
        new = [name for name in names if instance(name, "kubelet") not in ctx.state.processes]
        if not new:
            return
        low, high = ctx.settings.port_bounds
        with ctx.dir.lock_ports():
            taken = set(ctx.state.ports.values()) | ctx.dir.claimed_ports()
            ports = self.host.free_ports(len(new), low=low, high=high, exclude=taken)
            self._record(ctx, new, ports)

    def _record(self, ctx: Context, new: list[str], ports: list[int]) -> None:
        binary = ctx.state.binaries["kubemark"]
        proxy_kubeconfig = str(ctx.dir.component_kubeconfig("kube-proxy"))
        for name, port in zip(new, ports, strict=True):
            ctx.state.ports[instance(name, "kubelet")] = port
            commands = {
                "kubelet": kubelet_command(
                    ctx.settings, binary=binary, name=name,
                    kubeconfig=str(ctx.dir.node_kubeconfig(name)), port=port,
                ),
                "proxy": proxy_command(ctx.settings, binary=binary, name=name, kubeconfig=proxy_kubeconfig),
            }
            for morph, argv in commands.items():
                key = instance(name, morph)
                ctx.state.processes[key] = ProcessRecord(
                    name=key, role=morph, node=name, argv=argv, log=str(ctx.dir.logs / f"{key}.log")
                )
        ctx.state.nodes = list(dict.fromkeys([*ctx.state.nodes, *new]))
        ctx.save()  # every process is in state before the first one starts

    def start(self, ctx: Context, names: list[str]) -> None:
        self._plan(ctx, names)
        wanted = set(names)
        for record in self._records(ctx):
            handle = ctx.handle(record)
            if record.node not in wanted or (handle and self.host.running(handle)):
                continue
            # PIDs reach state after the last spawn; a SIGKILL before then leaves processes
            # that stop finds by this marker.
            started = self.host.spawn(record.argv, log=Path(record.log), env={}, marker=ctx.dir.node_marker)
            record.pid, record.create_time = started.pid, started.create_time
        ctx.save()

    def stop(self, ctx: Context) -> list[str]:
        # Recorded processes, and any started but not yet recorded when start was killed.
        handles = {h for r in self._records(ctx) if (h := ctx.handle(r))}
        handles.update(self.host.find_marked(ctx.dir.node_marker))
        # Frozen, a hollow kubelet still starting up cannot make its socket after the scan.
        self.host.pause(handles)
        scratch = self._scratch(ctx, handles)
        left = self.host.stop(handles, timeout=ctx.settings.stop_timeout)
        if not left:
            self.host.remove(scratch)
        return [f"hollow-node process {h.pid} would not stop" for h in left]

    def _scratch(self, ctx: Context, handles: set) -> set[str]:
        """What the hollow kubelets put in /tmp: from a live one's listening sockets (its
        podresources socket lies in its root folder), else from its log. The patterns
        match only hollow-kubelet files, so scanning every hollow process is safe."""
        kubelets = [r for r in self._records(ctx) if r.role == "kubelet"]
        sockets = self.host.unix_sockets(handles)
        paths: set[str] = set()
        for socket_path in (path for found in sockets.values() for path in found):
            if _CRI_SOCKET.match(socket_path):
                paths.add(socket_path)
            elif match := _ROOT_DIR.match(socket_path):
                paths.add(match[1])
        for record in kubelets:
            paths.update(_ROOT_DIR_LOGGED.findall(self.host.read_text(Path(record.log), limit=256 * 1024)))
        return paths

    def locate(self, ctx: Context, node: str) -> NodeLocation:
        details = []
        for morph in MORPHS:
            record = ctx.state.processes.get(instance(node, morph))
            if record is None:
                continue
            handle = ctx.handle(record)
            details.append(
                {
                    "process": morph,
                    "pid": record.pid,
                    "running": bool(handle and self.host.running(handle)),
                    "log": record.log,
                    "port": ctx.state.ports.get(record.name),
                }
            )
        return NodeLocation(node=node, where=f"kubemark processes on {self.host.name}", details=details)

    def failed(self, ctx: Context) -> dict[str, NodeFailure]:
        failed = {}
        for record in self._records(ctx):
            handle = ctx.handle(record)
            if handle is None or not self.host.running(handle):
                failed.setdefault(record.node, NodeFailure(f"its hollow {record.role} process exited", record.log))
        return failed
