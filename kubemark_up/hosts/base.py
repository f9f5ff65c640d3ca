"""The Host interface: start, find and stop processes, pick ports, read logs."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# Every process kubemark-up starts carries this variable, set to its cluster's
# folder; `stop` looks for it to find processes whose PID never reached state.
MARKER_ENV = "KUBEMARK_UP_CLUSTER"


def supervision_file(log: Path) -> Path:
    """Where the supervisor of a restarted process says how it is doing (beside its log,
    so that the restart history stays with the logs)."""
    return log.with_name(log.name.removesuffix(".log") + ".supervise.json")


@dataclass(frozen=True)
class Supervision:
    pid: int | None  # the component's current pid; None between restarts
    restarts: int
    last_exit_code: int | None
    running: bool


@dataclass(frozen=True)
class ProcessHandle:
    pid: int
    # With the PID, tells our process from a later one that reused its PID.
    create_time: float


class Host(ABC):
    name: str

    @abstractmethod
    def spawn(
        self, argv: Sequence[str], *, log: Path, env: Mapping[str, str], marker: str, restart: bool = False
    ) -> ProcessHandle:
        """Start argv detached from us, stdout and stderr appended to log. With restart,
        under a supervisor that restarts it as a kubelet restarts a static pod; the
        handle is then the supervisor's, and stopping it stops both."""

    @abstractmethod
    def supervision(self, handle: ProcessHandle, log: Path) -> Supervision | None:
        """How a process started with restart is doing, or None if it has no supervisor."""

    @abstractmethod
    def running(self, handle: ProcessHandle) -> bool:
        """Whether that very process (not a PID reuse) is alive."""

    @abstractmethod
    def pause(self, handles: Iterable[ProcessHandle]) -> None:
        """Freeze the processes (SIGSTOP) until stop(); they create nothing meanwhile."""

    @abstractmethod
    def stop(self, handles: Iterable[ProcessHandle], *, timeout: float) -> list[ProcessHandle]:
        """SIGTERM (and SIGCONT, for paused ones) them all, SIGKILL what is left after
        timeout; return any still alive."""

    @abstractmethod
    def find_marked(self, marker: str) -> list[ProcessHandle]:
        """Live processes started with MARKER_ENV=marker or a sub-marker, marker#<part>."""

    @abstractmethod
    def free_ports(self, count: int, *, low: int, high: int, exclude: Iterable[int] = ()) -> list[int]:
        """count ports in [low, high] that nothing listens on."""

    @abstractmethod
    def port_in_use(self, port: int) -> bool:
        """Whether something already listens on port."""

    @abstractmethod
    def read_text(self, path: Path, *, limit: int = 64 * 1024, from_end: bool = False) -> str:
        """Up to limit bytes of a (log) file from its start or end, or '' if there is none."""

    def tail(self, path: Path, lines: int = 20) -> str:
        return "\n".join(self.read_text(path, from_end=True).splitlines()[-lines:])

    @abstractmethod
    def unix_sockets(self, handles: Iterable[ProcessHandle]) -> dict[ProcessHandle, list[str]]:
        """Where the unix sockets each process listens on are now (after any rename)."""

    @abstractmethod
    def remove(self, paths: Iterable[str]) -> None:
        """Remove files and folder trees; what is already gone is fine."""
