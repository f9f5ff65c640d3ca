"""Workloads for `kubemark-up run`, by name. A workload is one module with one
Workload subclass (base.py); adding one is a line here."""

from __future__ import annotations

from importlib import import_module

from kubemark_up.errors import ConfigError
from kubemark_up.run.workloads.base import Plan, RunContext, Workload, WorkloadOptions

__all__ = ["Plan", "RunContext", "Workload", "WorkloadOptions", "get", "names"]

_REGISTRY = {
    "density": "kubemark_up.run.workloads.density:Density",
    "load": "kubemark_up.run.workloads.load:Load",
    "configmap-churn": "kubemark_up.run.workloads.churn:ConfigMapChurn",
    "cr-churn": "kubemark_up.run.workloads.crchurn:CRChurn",
    "watch-storm": "kubemark_up.run.workloads.storm:WatchStorm",
    "http2-baseline": "kubemark_up.run.workloads.http2:HTTP2Baseline",
    "flunder-churn": "kubemark_up.run.workloads.flunder:FlunderChurn",
    "flunder-watch": "kubemark_up.run.workloads.flunder:FlunderWatch",
}


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> type[Workload]:
    """The Workload class registered as name; a one-line error listing the known ones."""
    target = _REGISTRY.get(name)
    if target is None:
        raise ConfigError(f"unknown workload '{name}' (known: {', '.join(names())})")
    module, _, attribute = target.partition(":")
    cls: type[Workload] = getattr(import_module(module), attribute)
    return cls
