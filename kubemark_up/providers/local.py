"""The local provider: the master and every hollow node as processes on this
machine, all on loopback. No cloud, no containers."""

from __future__ import annotations

import os
from pathlib import Path

from kubemark_up.config import IPAddress, ProviderSettings
from kubemark_up.context import Context
from kubemark_up.errors import ConfigError
from kubemark_up.hosts import LocalHost
from kubemark_up.master import MasterPaths
from kubemark_up.nodes import NodeEngine
from kubemark_up.providers.base import MasterSite, Provider, node_engine_for


class LocalSettings(ProviderSettings):
    """Documented in config/default.yaml, under `local:`."""

    address: IPAddress = "127.0.0.1"
    bind_address: IPAddress | None = None


class LocalProvider(Provider):
    name = "local"
    settings_model = LocalSettings
    settings: LocalSettings

    def __init__(self, settings: ProviderSettings | None = None) -> None:
        super().__init__(settings)
        self.host = LocalHost()

    def master(self, ctx: Context) -> MasterSite:
        # Everything is where the cluster's folder and the binary cache already are.
        binaries = ctx.state.binaries
        bin_dir = str(Path(binaries["etcd"]).parent) if binaries else ""
        paths = MasterPaths(
            pki_dir=str(ctx.dir.pki), kubeconfig_dir=str(ctx.dir.kubeconfigs), data_dir=str(ctx.dir.run),
            bin_dir=bin_dir, log_dir=str(ctx.dir.logs),
        )
        address = self.settings.address
        # The serving certificate names loopback too, whatever the address others use.
        addresses = list(dict.fromkeys([address, "127.0.0.1", "localhost"]))
        return MasterSite(host=self.host, addresses=addresses, bind_address=self.settings.bind_address or address,
                          paths=paths)

    def node_engine(self, ctx: Context) -> NodeEngine:
        site = self.master(ctx)
        return node_engine_for(ctx, site)

    def preflight(self, ctx: Context) -> None:
        port = ctx.settings.apiserver_port
        if port and port < 1024 and os.geteuid() != 0:
            raise ConfigError(f"apiserver_port {port} is a privileged port; choose one from 1024 up")
        if port and self.host.port_in_use(port):
            raise ConfigError(f"apiserver_port {port} is already in use on this machine")
        if ctx.settings.nodes:
            self.node_engine(ctx).preflight(ctx)
