"""The Provider interface. A provider composes the shared pieces: where the master
runs (a MasterSite: the host, the addresses clients reach it at, where its files
are there) and which NodeEngine runs the hollow nodes; it may add steps of its own
to start (with their undo), and declares its own settings.

Providers are built with their settings as keyword arguments' worth of one model,
so a provider written today keeps working when the interface grows."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from kubemark_up.config import ProviderSettings
from kubemark_up.context import Context
from kubemark_up.hosts import Host
from kubemark_up.master import MasterPaths, stop_wave
from kubemark_up.nodes import NodeEngine, NodeSite
from kubemark_up.nodes.registry import engine_for
from kubemark_up.steps import Step


@dataclass(frozen=True)
class MasterSite:
    host: Host
    # IPs or DNS names clients reach the master at; the first goes into kubeconfigs,
    # all of them into the serving certificate.
    addresses: list[str]
    bind_address: str  # where kube-apiserver listens on its host
    paths: MasterPaths
    # False when paths.bin_dir is the user's, holding the binaries already: checked, never written.
    upload_binaries: bool = True


def node_engine_for(ctx: Context, site: MasterSite) -> NodeEngine:
    """The engine the settings ask for (nodes/registry.py), beside this master."""
    engine = engine_for(ctx.settings.hollow_nodes, ctx.settings.node_engine)
    return engine.build(ctx, NodeSite(host=site.host, paths=site.paths, upload=site.upload_binaries))


class Provider(ABC):
    name: str = ""
    settings_model: ClassVar[type[ProviderSettings]] = ProviderSettings
    # Setting name -> the legacy environment variables that set it, most specific first.
    legacy_env: ClassVar[Mapping[str, tuple[str, ...]]] = {}

    def __init__(self, settings: ProviderSettings | None = None) -> None:
        self.settings = settings if settings is not None else self.settings_model()

    @abstractmethod
    def master(self, ctx: Context) -> MasterSite:
        """Where the master runs."""

    @abstractmethod
    def node_engine(self, ctx: Context) -> NodeEngine:
        """What runs the hollow nodes."""

    def apiserver_port(self, ctx: Context) -> int:
        """kube-apiserver's port; 0 picks a free one. A provider whose firewall opens
        one port fixes it."""
        return ctx.settings.apiserver_port

    def fixed_ports(self, ctx: Context) -> dict[str, int]:
        """Ports of the master (by their names in master.PORT_NAMES) that this provider
        fixes; the others are picked free. By default the apiserver's, if it is set."""
        port = self.apiserver_port(ctx)
        return {"apiserver": port} if port else {}

    def preflight(self, ctx: Context) -> None:
        """Check, before anything is created, what would make start fail later. Optional."""
        return None

    def steps(self, shared: list[Step]) -> list[Step]:
        """The steps of start, in order: the shared ones with this provider's own put
        among them (steps.insert). The keys of the result must not change between
        start and stop: stop finds each recorded step's undo by its key."""
        return shared

    def sweep(self, ctx: Context) -> list[str]:
        """Stop what may run although state does not say so (state.json is damaged):
        the hollow nodes, then every process with the cluster's marker on the master's
        host, in the master's stop order (told apart by their command lines). Returns
        the problems left."""
        errors = self.node_engine(ctx).stop(ctx)
        host = self.master(ctx).host
        marked = host.cmdlines(host.find_marked(ctx.marker))
        for wave in sorted({stop_wave(argv) for argv in marked.values()}):
            handles = [h for h, argv in marked.items() if stop_wave(argv) == wave]
            left = host.stop(handles, timeout=ctx.settings.stop_timeout)
            errors += [f"process {h.pid} on {host.name} would not stop" for h in left]
        return errors

    def close(self) -> None:
        """Let go of connections at the end of a command."""
        return None


# What the layers above the providers (cluster/, run/) work with: a Context whose
# provider they may call.
ClusterContext = Context[Provider]
