"""The local provider: the master and every hollow node as processes on this
machine, all on loopback. No cloud, no containers."""

from __future__ import annotations

import os
from pathlib import Path

from kubemark_up.context import Context
from kubemark_up.errors import ConfigError
from kubemark_up.hosts import LocalHost
from kubemark_up.master import MasterPaths
from kubemark_up.nodes import NodeEngine
from kubemark_up.nodes.processes import ProcessNodes
from kubemark_up.providers.base import Provider

# Measured on this project's machines: a hollow kubelet holds 2 inotify instances,
# and the per-user default limit is 128 (legacy kubemark hit it too, kubernetes#41713).
INOTIFY_PER_NODE = 2
_INOTIFY_LIMIT = Path("/proc/sys/fs/inotify/max_user_instances")


class LocalProvider(Provider):
    name = "local"

    def __init__(self) -> None:
        self.host = LocalHost()

    def master_host(self, ctx: Context) -> LocalHost:
        return self.host

    def master_addresses(self, ctx: Context) -> list[str]:
        return ["127.0.0.1", "localhost"]

    def master_paths(self, ctx: Context) -> MasterPaths:
        return MasterPaths(
            pki_dir=str(ctx.dir.pki), kubeconfig_dir=str(ctx.dir.kubeconfigs), data_dir=str(ctx.dir.run)
        )

    def node_engine(self, ctx: Context) -> NodeEngine:
        return ProcessNodes(self.host)

    def preflight(self, ctx: Context) -> None:
        port = ctx.settings.apiserver_port
        if port and port < 1024 and os.geteuid() != 0:
            raise ConfigError(f"apiserver_port {port} is a privileged port; choose one from 1024 up")
        if port and self.host.port_in_use(port):
            raise ConfigError(f"apiserver_port {port} is already in use on 127.0.0.1")
        try:
            limit = int(_INOTIFY_LIMIT.read_text())
        except (OSError, ValueError):
            return
        needed = ctx.settings.nodes * INOTIFY_PER_NODE + 16
        if needed > limit:
            raise ConfigError(
                f"{ctx.settings.nodes} hollow nodes need about {needed} inotify instances and this machine "
                f"allows {limit} per user: raise it with `sysctl -w fs.inotify.max_user_instances={needed * 2}`"
            )
