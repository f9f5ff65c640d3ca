"""This machine as a Host: processes through subprocess and psutil."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import psutil

from kubemark_up import supervise
from kubemark_up.errors import ComponentError
from kubemark_up.hosts.base import MARKER_ENV, Host, ProcessHandle, Supervision, supervision_file

# Children get a small, fixed environment rather than ours: a proxy variable or a
# KUBECONFIG in the user's shell must not change what a component does.
_PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME")


class LocalHost(Host):
    name = "localhost"

    def spawn(
        self, argv: Sequence[str], *, log: Path, env: Mapping[str, str], marker: str, restart: bool = False
    ) -> ProcessHandle:
        if restart:
            # By path, not -m: the supervisor needs only the standard library.
            argv = [sys.executable, str(Path(supervise.__file__)), str(supervision_file(log)), "--", *argv]
        child_env = {key: os.environ[key] for key in _PASSED_ENV if key in os.environ}
        child_env.update(env)
        child_env[MARKER_ENV] = marker
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            try:
                process = subprocess.Popen(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=child_env,
                    # Own session: a Ctrl-C in the user's terminal reaches `start`, which
                    # stops everything in order, not each component at random.
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                raise ComponentError(f"could not start {argv[0]}: {exc.strerror}") from None
        try:
            created = psutil.Process(process.pid).create_time()
        except psutil.NoSuchProcess:
            created = 0.0
        return ProcessHandle(process.pid, created)

    @staticmethod
    def _process(handle: ProcessHandle) -> psutil.Process | None:
        try:
            process = psutil.Process(handle.pid)
            if abs(process.create_time() - handle.create_time) > 0.05:
                return None
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
            return process
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return None

    def running(self, handle: ProcessHandle) -> bool:
        return self._process(handle) is not None

    def supervision(self, handle: ProcessHandle, log: Path) -> Supervision | None:
        try:
            data = json.loads(self.read_text(supervision_file(log)) or "null")
        except ValueError:  # caught mid-write is impossible (atomic), damaged is not
            data = None
        if not isinstance(data, dict):
            return None
        pid, running = data.get("pid"), False
        if pid and self.running(handle):
            try:
                child = psutil.Process(pid)
                running = child.ppid() == handle.pid and child.status() != psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                running = False
        return Supervision(pid, int(data.get("restarts", 0)), data.get("last_exit_code"), running)

    def pause(self, handles: Iterable[ProcessHandle]) -> None:
        for handle in handles:
            if (process := self._process(handle)) is not None:
                _signal(process, "suspend")

    def stop(self, handles: Iterable[ProcessHandle], *, timeout: float) -> list[ProcessHandle]:
        processes = {p: h for h in handles if (p := self._process(h)) is not None}
        for process in processes:
            _signal(process, "terminate")
            _signal(process, "resume")
        alive = _wait_gone(list(processes), timeout)
        for process in alive:
            _signal(process, "kill")
        alive = _wait_gone(alive, 5)
        return [processes[p] for p in alive]

    def find_marked(self, marker: str) -> list[ProcessHandle]:
        found = []
        for process in psutil.process_iter(["pid", "create_time"]):
            if process.pid == os.getpid():
                continue
            try:
                value = process.environ().get(MARKER_ENV, "")
                if (value == marker or value.startswith(marker + "#")) and process.status() != psutil.STATUS_ZOMBIE:
                    found.append(ProcessHandle(process.pid, process.info["create_time"]))
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
                continue
        return found

    def port_in_use(self, port: int) -> bool:
        # Binding 127.0.0.1 also fails when something holds the port on 0.0.0.0. With
        # SO_REUSEADDR, as Go's listeners set it, only a listener counts, not the
        # TIME_WAIT connections a stopped server leaves for a minute.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as exc:
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    return True
                raise
        return False

    def free_ports(self, count: int, *, low: int, high: int, exclude: Iterable[int] = ()) -> list[int]:
        excluded = set(exclude)
        ports: list[int] = []
        for port in range(low, high + 1):
            if len(ports) == count:
                break
            if port not in excluded and not self.port_in_use(port):
                ports.append(port)
        if len(ports) < count:
            raise ComponentError(f"only {len(ports)} of {count} ports are free in {low}-{high} (set port_range)")
        return ports

    def read_text(self, path: Path, *, limit: int = 64 * 1024, from_end: bool = False) -> str:
        try:
            with Path(path).open("rb") as handle:
                if from_end:
                    handle.seek(0, os.SEEK_END)
                    handle.seek(max(0, handle.tell() - limit))
                return handle.read(limit).decode(errors="replace")
        except OSError:
            return ""

    def unix_sockets(self, handles: Iterable[ProcessHandle]) -> dict[ProcessHandle, list[str]]:
        by_pid = {h.pid: h for h in handles if self.running(h)}
        found: dict[ProcessHandle, list[str]] = {h: [] for h in by_pid.values()}
        if not by_pid:
            return found
        for pid, bound, inode in _listening_unix_sockets():
            if pid in by_pid and bound:
                found[by_pid[pid]].append(_current_path(bound, inode))
        return found

    def remove(self, paths: Iterable[str]) -> None:
        for path in paths:
            target = Path(path)
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)


def _signal(process: psutil.Process, how: str) -> None:
    try:
        getattr(process, how)()
    except psutil.NoSuchProcess:
        pass


def _gone(process: psutil.Process) -> bool:
    """Exited, or a zombie: once the components outlive the `start` that spawned them,
    their parent is PID 1, which may reap late or never. Our own children we reap."""
    try:
        if process.status() != psutil.STATUS_ZOMBIE:
            return False
    except psutil.NoSuchProcess:
        return True
    try:
        os.waitpid(process.pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return True


def _wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    alive = [p for p in processes if not _gone(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if not _gone(p)]
    return alive


_SS_LINE = re.compile(r"^u_\w+\s+LISTEN\s+\d+\s+\d+\s+(?P<path>\S+)\s.*?ino:(?P<ino>\d+)")


def _listening_unix_sockets() -> list[tuple[int, str, int]]:
    """(pid, path it was bound at, inode of the socket file) for every listening unix
    socket, from `ss -xlpe` (iproute2). The inode finds the file after a rename, which
    is how Go servers create sockets atomically. Without ss: psutil, bound paths only."""
    try:
        result = subprocess.run(["ss", "-xlpeH"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        result = None
    if result is not None and result.returncode == 0:
        rows = []
        for line in result.stdout.splitlines():
            if match := _SS_LINE.match(line):
                # A socket shared by several processes lists each of them.
                rows += [(int(pid), match["path"], int(match["ino"])) for pid in re.findall(r"pid=(\d+),", line)]
        return rows
    rows = []
    for process in psutil.process_iter(["pid"]):
        try:
            rows += [(process.pid, c.laddr, 0) for c in process.net_connections(kind="unix") if c.laddr]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return rows


def _current_path(bound: str, inode: int) -> str:
    """The path of the socket file with this inode: where it was bound, or where it
    was renamed to within the same folder."""
    try:
        if not inode or os.stat(bound).st_ino == inode:
            return bound
    except OSError:
        pass
    folder = os.path.dirname(bound) or "/"
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if info.st_ino == inode and stat.S_ISSOCK(info.st_mode):
                    return entry.path
    except OSError:
        pass
    return bound
