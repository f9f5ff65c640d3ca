"""Hollow nodes as kubemark-fleet processes on the master's host (hollow_nodes: host,
node_engine: fleet; the fleet is the Go program in kubemark_up/fleet):
`fleet_processes` of them sharing the nodes of each start, each recorded in state
before it starts and carrying the cluster's node marker.

Each node authenticates with its own certificate (system:node:<name>, made by the PKI
step like every node's), its kube-proxy and node-problem-detector with theirs; each
gets a unique loopback InternalIP, which its connections also leave from when the
master is on loopback, so nothing that dials a node leaves the host."""

from __future__ import annotations

import json
import posixpath
import re
import time
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from kubemark_up import binaries, pki, staging
from kubemark_up.context import Context
from kubemark_up.errors import ComponentError
from kubemark_up.nodes.base import HostNodeEngine, NodeFailure, NodeLocation
from kubemark_up.nodes.fleet import tuning
from kubemark_up.state import ProcessRecord

ROLE = "fleet"
_INDEX = re.compile(r"(\d+)$")


def node_address(index: int) -> str:
    """127.1.0.1 for node 0, and so on: unique, and on loopback."""
    n = index + 1
    return f"127.{1 + n // 65536}.{n // 256 % 256}.{n % 256}"


class FleetHostNodes(HostNodeEngine):
    name = "fleet"

    def plan(self, ctx: Context) -> list[str]:
        return [f"{ctx.settings.nodes} hollow nodes in fleet processes on {self.host.name}"]

    @property
    def where(self) -> str:
        return f"fleet processes on {self.host.name}"

    def _records(self, ctx: Context) -> list[ProcessRecord]:
        return [r for r in ctx.state.processes.values() if r.role == ROLE]

    def wave_size(self, ctx: Context) -> int:
        return 0  # one start: a fleet spreads its nodes over fleet_start_window itself

    def prepare(self, ctx: Context, names: list[str]) -> None:
        """The kubemark-fleet binary and the identities on the host (on this machine they
        are already where they are read), and node-problem-detector's role on the
        master, as its DaemonSet's binding gives it."""
        staging.put_binaries(self.host, {"kubemark-fleet": Path(ctx.state.binaries["kubemark-fleet"])},
                             self.paths.bin_dir, upload=self.upload)
        staging.put_tree(self.host, ctx.dir.pki, self.paths.pki_dir, include=_identity)
        api = k8s.RbacAuthorizationV1Api(k8s_config.new_client_from_config(str(ctx.dir.kubeconfig)))
        body: Any = {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "kubemark-up:node-problem-detector"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:node-problem-detector"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": pki.NPD_USER}],
        }
        try:
            api.create_cluster_role_binding(body=body, _request_timeout=30)
        except ApiException as exc:
            if exc.status != 409:
                raise ComponentError(f"the kubemark master refused the node-problem-detector binding: {exc.status}") from None

    def start(self, ctx: Context, names: list[str]) -> None:
        new = [n for n in names if n not in ctx.state.nodes]
        if not new:
            return
        shards = max(1, min(ctx.settings.fleet_processes, len(new)))
        first = len(self._records(ctx))
        records = []
        for shard in range(shards):
            key = f"fleet-{first + shard}"
            config_path = posixpath.join(self.paths.data_dir, f"{key}.json")
            self.host.put(config_path, json.dumps(self._config(ctx, new[shard::shards])).encode(), mode=0o600)
            record = ProcessRecord(name=key, role=ROLE, node=None, log=self.paths.log(key),
                                   argv=[self.paths.binary("kubemark-fleet"), config_path])
            ctx.state.processes[key] = record
            records.append(record)
        ctx.state.nodes = [*ctx.state.nodes, *new]
        ctx.save()  # every fleet process is in state before the first one starts
        handles = self.host.spawn_many([(r.argv, r.log) for r in records], env={}, marker=ctx.node_marker)
        for record, handle in zip(records, handles, strict=True):
            record.pid, record.start = handle.pid, handle.start
        ctx.save()

    def _config(self, ctx: Context, names: list[str]) -> dict:
        there = self.paths.pki_dir

        def identity(stem: str) -> dict:
            return {"cert": f"{there}/{stem}.crt", "key": f"{there}/{stem}.key"}

        nodes: list[dict] = []
        for name in names:
            match = _INDEX.search(name)
            index = int(match[1]) if match else len(nodes)
            nodes.append({"name": name, "address": node_address(index), **identity(f"nodes/{name}")})
        return {
            "server": ctx.state.endpoint, "ca": f"{there}/ca.crt", "version": binaries.pinned_version(),
            "start_window": ctx.settings.fleet_start_window, "max_pods": ctx.settings.max_pods,
            "proxy": identity("kube-proxy"), "npd": identity("node-problem-detector"), "nodes": nodes,
            "bind_addresses": True, **tuning(ctx.settings),
        }

    def _nodes_of(self, record: ProcessRecord) -> list[str]:
        config = json.loads(self.host.read_text(record.argv[-1], limit=64 * 1024 * 1024) or "{}")
        return [n["name"] for n in config.get("nodes", [])]

    def stop(self, ctx: Context) -> list[str]:
        handles = {h for r in self._records(ctx) if (h := ctx.handle(r))}
        handles.update(self.host.find_marked(ctx.node_marker))
        left = self.host.stop(handles, timeout=ctx.settings.stop_timeout)
        return [f"fleet process {h.pid} on {self.host.name} would not stop" for h in left]

    def locate(self, ctx: Context, node: str) -> NodeLocation:
        for record in self._records(ctx):
            if node in self._nodes_of(record):
                handle = ctx.handle(record)
                running = bool(handle and self.host.alive([handle]).get(handle))
                return NodeLocation(node=node, where=f"fleet process {record.name} on {self.host.name}", details=[
                    {"process": record.name, "pid": record.pid, "running": running, "log": record.log}])
        return NodeLocation(node=node, where="in no fleet process (not started yet?)")

    def failed(self, ctx: Context) -> dict[str, NodeFailure]:
        records = self._records(ctx)
        alive = self.host.alive(h for r in records if (h := ctx.handle(r)))
        failed: dict[str, NodeFailure] = {}
        for record in records:
            handle = ctx.handle(record)
            if handle is None or not alive.get(handle):
                for node in self._nodes_of(record):
                    failed[node] = NodeFailure(f"its fleet process {record.name} exited", record.log)
        return failed

    def statuses(self, ctx: Context, *, fresh: float = 10.0) -> dict[str, dict]:
        """Each running fleet process's status file (kubemark_up/fleet/main.go, Status),
        asked for now (SIGUSR1) and waited for up to `fresh` seconds; by process name."""
        handles = {r.name: h for r in self._records(ctx) if (h := ctx.handle(r))}
        alive = self.host.alive(handles.values())
        running = [r for r in self._records(ctx) if r.name in handles and alive.get(handles[r.name])]
        asked = time.time()
        self.host.signal([handles[r.name] for r in running], "USR1")
        deadline = time.monotonic() + fresh
        while True:
            found = {r.name: status for r in running
                     if (status := _status(self.host.read_text(status_path(r), limit=256 * 1024 * 1024))) is not None}
            if all(found.get(r.name, {}).get("time", 0) >= asked for r in running) or time.monotonic() > deadline:
                return found
            time.sleep(0.2)

    def at_rest(self, ctx: Context) -> list[str]:
        """Events a fleet could not send (a full queue, or the tries used up): a real
        kubelet would have sent them, so a fleet that dropped any is not a faithful one."""
        problems = []
        for name, status in sorted(self.statuses(ctx).items()):
            events = status.get("events") or {}
            if dropped := events.get("dropped", 0):
                problems.append(f"fleet process {name} dropped {dropped} of {events.get('recorded', 0)} kubelet Events "
                                f"(its log: {ctx.state.processes[name].log})")
        return problems

    def collect_logs(self, ctx: Context, out: Path) -> list[Path]:
        written = []
        for record in self._records(ctx):
            for source in (record.log, status_path(record)):
                target = out / posixpath.basename(source)
                if self.host.get(source, target):
                    written.append(target)
        return written


def status_path(record: ProcessRecord) -> str:
    """Where a fleet process writes its status file: beside its config."""
    return record.argv[-1].removesuffix(".json") + ".status.json"


def _status(text: str) -> dict | None:
    try:
        status = json.loads(text) if text else None
    except ValueError:  # being replaced: the fleet renames a whole new file over it
        return None
    return status if isinstance(status, dict) else None


def _identity(relative: Path) -> bool:
    """The files of pki/ a fleet reads: the nodes', kube-proxy's and
    node-problem-detector's certificates and keys, and the CA."""
    first = relative.parts[0]
    return first == "nodes" or first in ("ca.crt", "kube-proxy.crt", "kube-proxy.key",
                                         "node-problem-detector.crt", "node-problem-detector.key")
