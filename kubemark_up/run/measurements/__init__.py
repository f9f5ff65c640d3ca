"""Measurements taken during `kubemark-up run`, by name. Each is one module with one
Measurement subclass (base.py); adding one is a line here."""

from __future__ import annotations

from importlib import import_module

from kubemark_up.errors import ConfigError
from kubemark_up.run.measurements.base import MeasureContext, Measurement

__all__ = ["MeasureContext", "Measurement", "get", "names", "slo_names"]

_REGISTRY = {
    "api_latency": "kubemark_up.run.measurements.api_latency:APILatency",
    "pod_startup": "kubemark_up.run.measurements.pod_startup:PodStartup",
    "scheduling_throughput": "kubemark_up.run.measurements.scheduling:SchedulingThroughput",
    "resources": "kubemark_up.run.measurements.resources:Resources",
    "scheduler_latency": "kubemark_up.run.measurements.scheduler:SchedulerLatency",
}


def names() -> list[str]:
    return list(_REGISTRY)


def get(name: str) -> type[Measurement]:
    target = _REGISTRY.get(name)
    if target is None:
        raise ConfigError(f"unknown measurement '{name}' (known: {', '.join(names())})")
    module, _, attribute = target.partition(":")
    cls: type[Measurement] = getattr(import_module(module), attribute)
    return cls


def slo_names() -> dict[str, float]:
    """Every SLO a measurement judges, with its default threshold."""
    found: dict[str, float] = {}
    for name in names():
        found.update(get(name).slos)
    return found
