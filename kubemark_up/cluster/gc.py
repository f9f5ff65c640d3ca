"""gc: the cloud resources a provider marked for clusters that have no state here."""

from __future__ import annotations

from pathlib import Path

from kubemark_up.config import Settings
from kubemark_up.errors import ConfigError, KubemarkUpError
from kubemark_up.providers import load
from kubemark_up.state import ClusterDir
from kubemark_up.ui import UI


def gc(settings: Settings, home: Path, ui: UI, *, delete: bool) -> list[str]:
    """Resources the provider marked for clusters that have no state in home: listed,
    and with delete, deleted. For providers that make cloud resources (orphans())."""
    provider = load(settings)
    orphans = getattr(provider, "orphans", None)
    if orphans is None:
        raise ConfigError(f"provider {provider.name} makes no cloud resources: nothing to collect")
    known = set()  # a name with state here is never collected (whatever its project)
    for path in home.glob("*/cluster.json"):
        try:
            if ClusterDir(home, path.parent.name).load_info().provider == provider.name:
                known.add(path.parent.name)
        except KubemarkUpError:
            known.add(path.parent.name)
    try:
        found = orphans(known)
        lines = []
        for cluster_name, key, resource, scope in found:
            line = f"{key} {resource} ({scope.path}) of cluster {cluster_name}"
            if delete:
                with ui.step(f"delete {line}", long=True):
                    provider.delete_orphan(cluster_name, key, resource, scope)  # type: ignore[attr-defined]
                line = "deleted " + line
            lines.append(line)
        return lines
    finally:
        provider.close()

