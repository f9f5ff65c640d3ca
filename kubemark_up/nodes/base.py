"""The NodeEngine interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from kubemark_up.context import Context


@dataclass
class NodeLocation:
    """Where one hollow node really runs, for `pod-for-node`."""

    node: str
    where: str  # a sentence: "processes on this machine", "pod kubemark/x on node y"
    details: list[dict] = field(default_factory=list)  # one entry per process or container


@dataclass(frozen=True)
class NodeFailure:
    why: str
    log: str  # the log that tells more


class NodeEngine(ABC):
    name: str

    @abstractmethod
    def start(self, ctx: Context, names: list[str]) -> None:
        """Record, then start, hollow nodes with these names. Idempotent: what runs is kept."""

    @abstractmethod
    def stop(self, ctx: Context) -> list[str]:
        """Stop every hollow node in state; return what could not be stopped."""

    @abstractmethod
    def locate(self, ctx: Context, node: str) -> NodeLocation:
        """Where node runs."""

    @abstractmethod
    def failed(self, ctx: Context) -> dict[str, NodeFailure]:
        """Hollow nodes that can no longer become Ready (their process is gone)."""
