"""The Host interface: a machine that kubemark-up runs commands, processes and files on.

A host implements four things: `call` (a verb of the host agent, agent.py), `run`
(a command), `put` (write a file, its mode set before any content) and `get` (copy a
file here). Everything else (processes, ports, probes, folders) is built on `call`
once, here, and behaves the same on every host. Paths on a host are POSIX strings
of that host, never this machine's Path objects.
"""

from __future__ import annotations

import posixpath
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubemark_up.hosts.agent import MARKER_ENV

__all__ = ["MARKER_ENV", "Completed", "Facts", "Host", "ProcessHandle", "Supervision", "supervision_file"]


def supervision_file(log: str) -> str:
    """Where the supervisor of a restarted process says how it is doing (beside its log,
    so that the restart history stays with the logs)."""
    stem = posixpath.basename(log).removesuffix(".log")
    return posixpath.join(posixpath.dirname(log), f"{stem}.supervise.json")


@dataclass(frozen=True)
class Supervision:
    pid: int | None  # the component's current pid; None between restarts
    restarts: int
    last_exit_code: int | None
    running: bool


@dataclass(frozen=True)
class ProcessHandle:
    pid: int
    # With the PID, tells our process from a later one that reused its PID: the start
    # time in clock ticks since the host booted.
    start: int


@dataclass(frozen=True)
class Facts:
    """What preflight checks need to know about a host."""

    python: tuple[int, ...]  # the agent's interpreter, (3, 11, 7)
    cpus: int
    uid: int
    inotify_max_user_instances: int | None
    writable: dict[str, bool]  # per path asked: may it (or its nearest existing parent) be written
    exists: dict[str, bool]  # per path asked


@dataclass(frozen=True)
class Completed:
    argv: list[str]
    code: int
    stdout: str
    stderr: str


class Host(ABC):
    name: str  # for messages: "localhost", "kubernetes@10.0.0.5:22"
    supervisor: str  # the path of supervise.py on this host
    python: str = "python3"  # the interpreter the agent and the supervisor run with there
    is_this_machine: bool = False  # paths there are paths here

    @abstractmethod
    def call(self, verb: str, **arguments: Any) -> Any:
        """Run a verb of the host agent on this host and return its result."""

    @abstractmethod
    def run(self, argv: Sequence[str], *, stdin: bytes = b"", timeout: float = 60) -> Completed:
        """Run a command to its end (or timeout, a HostError) and return what it said."""

    @abstractmethod
    def put(self, path: str, source: bytes | Path, *, mode: int) -> None:
        """Write bytes, or a local file's content, to path; the mode is set before any
        content is written, so a key is never readable by others for an instant."""

    @abstractmethod
    def get(self, path: str, local: Path) -> bool:
        """Copy a file of this host to local; False if it does not exist."""

    def close(self) -> None:  # noqa: B027 (optional: most hosts hold no connection)
        """Let go of connections; the host can be used again afterwards."""

    # Processes, built on the agent ------------------------------------------------

    def spawn_many(self, specs: Sequence[tuple[Sequence[str], str]], *, env: Mapping[str, str], marker: str,
                   restart: bool = False, path_first: Sequence[str] = ()) -> list[ProcessHandle]:
        """Start each (argv, log) detached, stdout and stderr appended to log, with
        path_first ahead of the host's PATH. With restart, under a supervisor that
        restarts it as a kubelet restarts a static pod; the handle is then the
        supervisor's, and stopping it stops both."""
        payload = []
        for argv, log in specs:
            command = list(argv)
            if restart:
                command = [self.python, self.supervisor, supervision_file(log), "--", *command]
            payload.append({"argv": command, "log": log, "env": dict(env), "marker": marker,
                            "path_first": list(path_first)})
        return [ProcessHandle(pid, start) for pid, start in self.call("spawn", specs=payload)]

    def spawn(self, argv: Sequence[str], *, log: str, env: Mapping[str, str], marker: str,
              restart: bool = False) -> ProcessHandle:
        return self.spawn_many([(argv, log)], env=env, marker=marker, restart=restart)[0]

    def alive(self, handles: Iterable[ProcessHandle]) -> dict[ProcessHandle, bool]:
        handles = list(handles)
        if not handles:
            return {}
        answers = self.call("alive", handles=[[h.pid, h.start] for h in handles])
        return dict(zip(handles, answers, strict=True))

    def running(self, handle: ProcessHandle) -> bool:
        """Whether that very process (not a PID reuse) is alive."""
        return self.alive([handle])[handle]

    def signal(self, handles: Iterable[ProcessHandle], name: str) -> None:
        """Send SIGname (STOP, CONT, ...) to those of handles still alive."""
        payload = [[h.pid, h.start] for h in handles]
        if payload:
            self.call("send", handles=payload, name=name)

    def stop(self, handles: Iterable[ProcessHandle], *, timeout: float) -> list[ProcessHandle]:
        """SIGTERM (and SIGCONT, for frozen ones) them all, SIGKILL what is left after
        timeout; return any still alive."""
        payload = [[h.pid, h.start] for h in handles]
        if not payload:
            return []
        return [ProcessHandle(pid, start) for pid, start in self.call("stop", handles=payload, timeout=timeout)]

    def find_marked(self, marker: str) -> list[ProcessHandle]:
        """Live processes started with MARKER_ENV=marker or a sub-marker, marker#<part>."""
        return [ProcessHandle(pid, start) for pid, start in self.call("find_marked", marker=marker)]

    def cmdlines(self, handles: Iterable[ProcessHandle]) -> dict[ProcessHandle, list[str] | None]:
        handles = list(handles)
        if not handles:
            return {}
        return dict(zip(handles, self.call("cmdlines", handles=[[h.pid, h.start] for h in handles]), strict=True))

    def supervision(self, handle: ProcessHandle, log: str) -> Supervision | None:
        """How a process started with restart is doing, or None if it has no supervisor."""
        (status,) = self.call("supervision", status_files=[supervision_file(log)])
        if status is None:
            return None
        alive = self.running(handle)
        pid = status.get("pid") if alive else None
        return Supervision(
            pid=pid, restarts=int(status.get("restarts", 0)), last_exit_code=status.get("last_exit_code"),
            running=alive and pid is not None,
        )

    def unix_listeners(self, handles: Iterable[ProcessHandle]) -> dict[ProcessHandle, list[str]]:
        """Where the files of the unix sockets each process listens on are now."""
        handles = list(handles)
        if not handles:
            return {}
        found = self.call("unix_listeners", handles=[[h.pid, h.start] for h in handles])
        return {h: found.get(str(h.pid), []) for h in handles}

    def usage(self, pids: Sequence[int]) -> dict[int, tuple[float, int]]:
        """CPU seconds (user + system) and resident bytes of each live pid, read from
        /proc there in one command (a gone pid is left out)."""
        if not pids:
            return {}
        found = self.call("usage", pids=list(pids))
        return {int(pid): (float(cpu), int(rss)) for pid, (cpu, rss) in found.items()}

    # Ports and probes ---------------------------------------------------------------

    def free_ports(self, count: int, *, low: int, high: int, exclude: Iterable[int] = ()) -> list[int]:
        """count ports in [low, high] that nothing listens on."""
        if count <= 0:
            return []
        return list(self.call("free_ports", count=count, low=low, high=high, exclude=sorted(set(exclude))))

    def ports_in_use(self, ports: Sequence[int]) -> list[bool]:
        """For each port, whether something listens on it."""
        return [bool(used) for used in self.call("ports_in_use", ports=list(ports))] if ports else []

    def port_in_use(self, port: int) -> bool:
        return self.ports_in_use([port])[0]

    def probe_all(self, urls: Sequence[str], timeout: float = 2.0) -> list[bool]:
        """For each url, whether a GET of it from this host answers 2xx (certificates
        not checked), in one call."""
        return [bool(ok) for ok in self.call("probe", urls=list(urls), timeout=timeout)] if urls else []

    def probe(self, url: str, timeout: float = 2.0) -> bool:
        return self.probe_all([url], timeout)[0]

    def fetch(self, url: str, *, timeout: float = 30.0, limit: int = 64 * 1024 * 1024) -> tuple[int, str]:
        """A GET of url from this host, without credentials: (HTTP status, body)."""
        answer = self.call("fetch", url=url, timeout=timeout, limit=limit)
        return int(answer["status"]), str(answer["body"])

    # Files ------------------------------------------------------------------------

    def read_text(self, path: str, *, limit: int = 64 * 1024, from_end: bool = False) -> str:
        """Up to limit bytes of a (log) file from its start or end, or '' if there is none."""
        return str(self.call("read", path=path, limit=limit, from_end=from_end))

    def tail(self, path: str, lines: int = 20) -> str:
        return "\n".join(self.read_text(path, from_end=True).splitlines()[-lines:])

    def mkdirs(self, paths: Iterable[str], *, mode: int = 0o700) -> list[bool]:
        """Make folders (and parents); True for each that did not exist."""
        return list(self.call("mkdirs", paths=list(paths), mode=mode))

    def remove(self, paths: Iterable[str]) -> None:
        """Remove files and folder trees; what is already gone is fine."""
        paths = list(paths)
        if paths:
            self.call("remove", paths=paths)

    def sha256(self, paths: Iterable[str]) -> list[str | None]:
        return list(self.call("sha256", paths=list(paths)))

    def listdir(self, path: str) -> list[str]:
        return list(self.call("listdir", path=path))

    def rmdir_if_empty(self, path: str) -> bool:
        """Remove the folder if it is empty; False if it is not, or is gone."""
        return bool(self.call("rmdir_if_empty", path=path))

    def symlink(self, target: str, path: str) -> None:
        """Make path a symbolic link to target, replacing what was there."""
        self.call("symlink", target=target, path=path)

    def facts(self, paths: Sequence[str] = ()) -> Facts:
        """The host's facts, and whether each of paths exists and may be written. The
        first call to a remote host connects: its host key and the login are checked."""
        found = self.call("facts", paths=list(paths))
        return Facts(python=tuple(found["python"]), cpus=int(found["cpus"]), uid=int(found["uid"]),
                     inotify_max_user_instances=found["inotify_max_user_instances"],
                     writable=dict(found["writable"]), exists=dict(found["exists"]))
