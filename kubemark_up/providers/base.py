"""The Provider interface. A provider composes the shared pieces: it says which Host
runs the master, at which addresses clients reach it, where the master's files
live there, and which NodeEngine runs the hollow nodes. The steps of start and
stop (cluster.py) are the same for every provider."""

from __future__ import annotations

from abc import ABC, abstractmethod

from kubemark_up.context import Context
from kubemark_up.hosts import Host
from kubemark_up.master import MasterPaths
from kubemark_up.nodes import NodeEngine


class Provider(ABC):
    name: str = ""

    @abstractmethod
    def master_host(self, ctx: Context) -> Host:
        """The host the master's processes run on."""

    @abstractmethod
    def master_addresses(self, ctx: Context) -> list[str]:
        """Addresses (IPs or DNS names) clients reach the master at; the first goes
        into kubeconfigs, all of them into the serving certificate."""

    @abstractmethod
    def master_paths(self, ctx: Context) -> MasterPaths:
        """Where the master's certificates, kubeconfigs and data live on its host."""

    @abstractmethod
    def node_engine(self, ctx: Context) -> NodeEngine:
        """What runs the hollow nodes."""

    def preflight(self, ctx: Context) -> None:
        """Check, before anything is created, what would make start fail later. Optional."""
        return None
