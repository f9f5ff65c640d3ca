"""Which NodeEngine runs the hollow nodes, by the two settings the user types:
where they run (hollow_nodes: host | pods) and what a hollow node is
(node_engine: kubemark | fleet). Loaded lazily: only the engine a command uses is
imported (the pods engines bring the Kubernetes client and Jinja with them)."""

from __future__ import annotations

from importlib import import_module

from kubemark_up.config import Section
from kubemark_up.errors import ConfigError
from kubemark_up.nodes.base import NodeEngine

# (hollow_nodes, node_engine) -> the engine's class, as module:Class.
ENGINES: dict[tuple[str, str], str] = {
    ("host", "kubemark"): "kubemark_up.nodes.kubemark.host:KubemarkHostNodes",
    ("host", "fleet"): "kubemark_up.nodes.fleet.host:FleetHostNodes",
    ("pods", "kubemark"): "kubemark_up.nodes.kubemark.pods:KubemarkPodNodes",
    ("pods", "fleet"): "kubemark_up.nodes.fleet.pods:FleetPodNodes",
}


def engine_for(placement: str, engine: str) -> type[NodeEngine]:
    """The engine for hollow_nodes: placement and node_engine: engine; a one-line
    error naming the known pairs otherwise."""
    target = ENGINES.get((placement, engine))
    if target is None:
        known = ", ".join(f"{p}/{e}" for p, e in ENGINES)
        raise ConfigError(f"no node engine for hollow_nodes: {placement} with node_engine: {engine} "
                          f"(known: {known})")
    module, _, name = target.partition(":")
    cls: type[NodeEngine] = getattr(import_module(module), name)
    return cls


def sections() -> dict[str, type[Section]]:
    """The engines' own sections of settings, by their name in the config file."""
    from kubemark_up.nodes.rootcluster.settings import PodsSettings

    return {"pods": PodsSettings}
