"""The NodeEngine interface, and NodeSite: what an engine that runs beside the
master needs to know of where the master is."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from kubemark_up.context import Context
from kubemark_up.hosts import Host
from kubemark_up.master import MasterPaths


@dataclass(frozen=True)
class NodeSite:
    """The master's host and where its files are there, for the engines that run the
    hollow nodes on that host (providers hand it over from their MasterSite)."""

    host: Host
    paths: MasterPaths  # where the binaries, identities and logs are on host
    upload: bool = True  # False: paths.bin_dir is the user's, holding the binaries already


@dataclass
class NodeLocation:
    """Where one hollow node really runs, for `pod-for-node`."""

    node: str
    where: str  # a sentence: "kubemark processes on localhost", "pod kubemark/x on node y"
    details: list[dict] = field(default_factory=list)  # one entry per process or container


@dataclass(frozen=True)
class NodeFailure:
    why: str
    log: str  # the log that tells more, on the host that runs the node
    log_tail: str = ""


class NodeEngine(ABC):
    name: str  # for messages: "prepare 3 hollow nodes (NAME on WHERE)"

    @classmethod
    @abstractmethod
    def build(cls, ctx: Context, site: NodeSite | None = None) -> Self:
        """This engine for ctx's cluster. site: where the master is; the engines on its
        host need it, those on a root cluster do not."""

    @property
    def where(self) -> str:
        """Where the nodes run, for messages: a host, a root cluster."""
        return "?"

    def preflight(self, ctx: Context) -> None:
        """Refuse, before anything is made, what this engine cannot run. Optional."""
        return None

    def wave_size(self, ctx: Context) -> int:
        """How many hollow nodes to start at once when the settings do not say; 0: all."""
        return 0

    @abstractmethod
    def prepare(self, ctx: Context, names: list[str]) -> None:
        """Record, then put in place, what all the nodes need (binaries, identities); once."""

    @abstractmethod
    def start(self, ctx: Context, names: list[str]) -> None:
        """Record, then start, hollow nodes with these names (one wave)."""

    @abstractmethod
    def stop(self, ctx: Context) -> list[str]:
        """Stop every hollow node in state, and any this engine finds by the cluster's
        marker that state missed; return what could not be stopped. Idempotent."""

    @abstractmethod
    def locate(self, ctx: Context, node: str) -> NodeLocation:
        """Where node runs."""

    @abstractmethod
    def failed(self, ctx: Context) -> dict[str, NodeFailure]:
        """Hollow nodes that can no longer become Ready (their process is gone)."""

    @abstractmethod
    def collect_logs(self, ctx: Context, out: Path) -> list[Path]:
        """Copy every hollow node's logs into out; return the files written."""

    def plan(self, ctx: Context) -> list[str]:
        """For --dry-run: what start would make for the hollow nodes, one line each,
        creating nothing."""
        return [f"{ctx.settings.nodes} hollow nodes ({self.name}) {self.where}"]

    def progress(self, ctx: Context) -> tuple[str, int] | None:
        """A second count to show beside nodes Ready while start waits (pods Running), or None."""
        return None

    def diagnose(self, ctx: Context) -> str:
        """Why nodes are not coming up, for a wait that ran out; '' when there is nothing to add."""
        return ""

    def at_rest(self, ctx: Context) -> list[str]:
        """What the engine's own account shows wrong once its nodes are Ready (one line
        each; start fails on any), e.g. Events a fleet could not send. Optional."""
        return []


class HostNodeEngine(NodeEngine):
    """An engine whose hollow nodes are processes on the master's host."""

    def __init__(self, host: Host, paths: MasterPaths, *, upload: bool = True) -> None:
        self.host = host
        self.paths = paths  # where the binaries, identities and logs are on host
        self.upload = upload  # False: paths.bin_dir is the user's, holding the binaries already

    @classmethod
    def build(cls, ctx: Context, site: NodeSite | None = None) -> Self:
        if site is None:
            raise TypeError(f"{cls.__name__} runs hollow nodes on the master's host: build it with its site")
        return cls(site.host, site.paths, upload=site.upload)
