"""gc: the cloud resources a provider marked for clusters that have no state here,
for providers that make such resources (the Orphans protocol). Only this owner's
(the user, machine and home that made them: their owner mark) are deleted, unless
all owners are asked for; the others are listed as skipped."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

from kubemark_up.config import Settings
from kubemark_up.errors import ConfigError, KubemarkUpError
from kubemark_up.providers import load
from kubemark_up.state import ClusterDir
from kubemark_up.ui import UI


class Located(Protocol):
    @property
    def path(self) -> str:
        """Where a resource lives, for messages (gce: "zones/us-central1-b", "global")."""
        ...


S = TypeVar("S", bound=Located)


@runtime_checkable
class Orphans(Protocol[S]):
    """A provider that can find the resources it marked for a cluster, and delete them."""

    def owner(self, home: Path, /) -> str:
        """The owner mark of what this provider makes from home."""
        ...

    def orphans(self, known: set[str], /) -> list[tuple[str, str, str, str, S]]:
        """(cluster, owner, key, resource, where) of every resource marked for a cluster
        not in known, whoever its owner ("" when it carries none)."""
        ...

    def delete_orphan(self, cluster_name: str, key: str, resource: str, scope: S, /) -> None:
        """Delete one of what orphans() found; gone already is fine."""
        ...


def gc(settings: Settings, home: Path, ui: UI, *, delete: bool, all_owners: bool = False) -> tuple[list[str], list[str]]:
    """Resources the provider marked for clusters that have no state in home: this
    owner's listed (and with delete, deleted), and the lines of the others' (other
    owners', or with no owner mark), skipped unless all_owners."""
    provider = load(settings)
    if not isinstance(provider, Orphans):
        provider.close()
        raise ConfigError(f"provider {provider.name} makes no cloud resources: nothing to collect")
    known = set()  # a name with state here is never collected (whatever its project)
    for path in home.glob("*/cluster.json"):
        try:
            if ClusterDir(home, path.parent.name).load_info().provider == provider.name:
                known.add(path.parent.name)
        except KubemarkUpError:
            known.add(path.parent.name)
    try:
        mine = provider.owner(home)
        lines, skipped = [], []
        for cluster_name, owner, key, resource, scope in provider.orphans(known):
            line = f"{key.replace('_', ' ')} {resource} ({scope.path}) of cluster {cluster_name}"
            if owner != mine and not all_owners:
                skipped.append(f"skipped {line}: " + (f"owner {owner}, not this one ({mine})" if owner else "no owner mark"))
                continue
            if owner != mine:
                line += f" (owner {owner or 'unmarked'})"
            if delete:
                with ui.step(f"delete {line}", long=True):
                    provider.delete_orphan(cluster_name, key, resource, scope)
                line = "deleted " + line
            lines.append(line)
        return lines, skipped
    finally:
        provider.close()
