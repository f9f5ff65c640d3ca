"""What every step works with: the cluster's folder, who it is, its state, its
settings, its provider, and the UI.

The provider's type is a parameter: this module sits below the providers (node
engines and providers themselves take a Context), and the layers above them, which
call the provider, name it: `providers.base.ClusterContext` is Context[Provider]."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from kubemark_up.config import Settings
from kubemark_up.hosts import ProcessHandle
from kubemark_up.state import ClusterDir, ClusterInfo, ClusterState, ProcessRecord, Resource
from kubemark_up.ui import UI

P = TypeVar("P")


@dataclass
class Context(Generic[P]):
    dir: ClusterDir
    info: ClusterInfo
    state: ClusterState
    settings: Settings
    ui: UI
    provider: P
    # stop: fetch the logs of a remote host before removing its files.
    fetch_logs: bool = True

    def save(self) -> None:
        self.dir.save(self.state)

    @property
    def marker(self) -> str:
        """Every process of this cluster carries it (see ClusterDir.marker)."""
        return self.dir.marker(self.info.uid)

    @property
    def node_marker(self) -> str:
        """Every hollow-node process carries it (see ClusterDir.node_marker)."""
        return self.dir.node_marker(self.info.uid)

    @staticmethod
    def handle(record: ProcessRecord) -> ProcessHandle | None:
        if record.pid is None or record.start is None:
            return None
        return ProcessHandle(record.pid, record.start)

    @contextmanager
    def creating(self, kind: str, id: str, *, step: str, **details: Any) -> Iterator[Resource]:
        """Record a resource as planned before the block asks for it, and as created
        once the block has finished: what a crash leaves in between, stop still knows of."""
        resource = self.state.resource(kind, id)
        if resource is None:
            resource = Resource(kind=kind, id=id, step=step, details=details)
            self.state.resources.append(resource)
            self.save()
        yield resource
        resource.status = "created"
        self.save()

    def resources(self, step: str) -> list[Resource]:
        """What step recorded, newest first: the order to undo it in."""
        return [r for r in reversed(self.state.resources) if r.step == step]

    def forget(self, resource: Resource) -> None:
        self.state.resources = [r for r in self.state.resources if r is not resource]
        self.save()
