"""The host agent: what kubemark-up does with processes, ports and files on a host,
written against the Python standard library only (Python 3.8 and later), so that
any Linux host with python3 can run it.

On this machine LocalHost calls these functions directly. On an SSH host, SSHHost
sends this file's source with each call and runs it with the host's python3:

    python3 -c BOOTSTRAP VERB        stdin: this source, SEPARATOR, the arguments as JSON
                                     stdout: {"ok": result} or {"error": message}

so nothing has to be installed on the host first, and the agent a host runs is
always this kubemark-up's own. Every verb takes many items at once: one round trip
checks a thousand processes.

A process handle is [pid, start], start being the process's start time in clock
ticks since boot (/proc/<pid>/stat, field 22): with the PID it tells our process
from a later one that reused its number.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Callable

# Every process kubemark-up starts carries this variable, set to its cluster's marker;
# `stop` looks for it to find processes whose PID never reached state.
MARKER_ENV = "KUBEMARK_UP_CLUSTER"

# Children get a small, fixed environment rather than the caller's: a proxy variable
# or a KUBECONFIG in the user's shell must not change what a component does.
PASSED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME")

SEPARATOR = "\n#-- kubemark-up agent arguments --\n"
BOOTSTRAP = (
    "import sys;s=sys.stdin.read();c,a=s.split({sep!r},1);g={{'__name__':'kubemark_up_agent'}};"
    "exec(compile(c,'kubemark-up-agent','exec'),g);sys.exit(g['serve'](sys.argv[1],a))"
)


# Processes ---------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in ticks) of a process, or None if there is none."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read().decode(errors="replace")
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself hold any character.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def start_time(pid: int) -> int:
    found = _stat(pid)
    return found[1] if found else 0


def _reap(pid: int) -> None:
    """Collect our own exited child; a zombie left by someone else is left alone."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _alive(handle: list[int]) -> bool:
    pid, started = handle
    found = _stat(pid)
    if found is None or found[1] != started:
        return False
    if found[0] == "Z":  # exited; once components outlive `start`, PID 1 may reap late
        _reap(pid)
        return False
    return True


def alive(handles: list[list[int]]) -> list[bool]:
    return [_alive(h) for h in handles]


def spawn(specs: list[dict]) -> list[list[int]]:
    """Start each {argv, log, env, marker, path_first} detached: its own session (a
    Ctrl-C in the user's terminal reaches `start`, which stops everything in order),
    stdin from /dev/null, stdout and stderr appended to log, path_first (folders)
    ahead of the host's PATH. Returns their handles."""
    handles = []
    for spec in specs:
        env = {key: os.environ[key] for key in PASSED_ENV if key in os.environ}
        env.update(spec.get("env") or {})
        env[MARKER_ENV] = spec["marker"]
        if spec.get("path_first"):
            env["PATH"] = ":".join([*spec["path_first"], env.get("PATH", os.defpath)])
        os.makedirs(os.path.dirname(spec["log"]), mode=0o700, exist_ok=True)
        with open(spec["log"], "ab") as out:
            try:
                process = subprocess.Popen(
                    spec["argv"], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    env=env, start_new_session=True, close_fds=True,
                )
            except OSError as exc:
                raise AgentError(f"could not start {spec['argv'][0]}: {exc.strerror}") from None
        handles.append([process.pid, start_time(process.pid)])
    return handles


def send(handles: list[list[int]], name: str) -> None:
    """Send the signal called name (STOP, CONT, TERM, KILL) to the live ones."""
    number = getattr(signal, "SIG" + name)
    for handle in handles:
        if _alive(handle):
            try:
                os.kill(handle[0], number)
            except ProcessLookupError:
                pass


def stop(handles: list[list[int]], timeout: float) -> list[list[int]]:
    """SIGTERM (and SIGCONT, for frozen ones) them all, SIGKILL what is left after
    timeout; return any still alive after that."""
    live = [h for h in handles if _alive(h)]
    send(live, "TERM")
    send(live, "CONT")
    live = _wait_gone(live, timeout)
    if live:
        send(live, "KILL")
        live = _wait_gone(live, 5.0)
    return live


def _wait_gone(handles: list[list[int]], timeout: float) -> list[list[int]]:
    deadline = time.monotonic() + timeout
    live = [h for h in handles if _alive(h)]
    while live and time.monotonic() < deadline:
        time.sleep(0.05)
        live = [h for h in live if _alive(h)]
    return live


def find_marked(marker: str) -> list[list[int]]:
    """Live processes whose MARKER_ENV is marker, or marker#<something> beneath it."""
    wanted = f"{MARKER_ENV}={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                variables = handle.read().split(b"\0")
        except OSError:
            continue
        if any(v == wanted or v.startswith(wanted + b"#") for v in variables):
            handle_ = [int(entry), start_time(int(entry))]
            if _alive(handle_):
                found.append(handle_)
    return found


def cmdlines(handles: list[list[int]]) -> list[list[str] | None]:
    """The command line of each live one, or None."""
    found: list[list[str] | None] = []
    for handle in handles:
        try:
            with open(f"/proc/{handle[0]}/cmdline", "rb") as stream:
                argv = [part.decode(errors="replace") for part in stream.read().split(b"\0") if part]
        except OSError:
            argv = None
        found.append(argv if argv is not None and _alive(handle) else None)
    return found


def supervision(status_files: list[str]) -> list[dict | None]:
    """What each supervisor (supervise.py) says of its component, or None."""
    result: list[dict | None] = []
    for path in status_files:
        try:
            with open(path) as handle:
                result.append(json.load(handle))
        except (OSError, ValueError):
            result.append(None)
    return result


_SS_LINE = re.compile(r"^u_\w+\s+LISTEN\s+\d+\s+\d+\s+(?P<path>\S+)\s.*?ino:(?P<ino>\d+)")


def unix_listeners(handles: list[list[int]]) -> dict[str, list[str]]:
    """pid -> where the files of the unix sockets it listens on are now. From
    `ss -xlpe` (iproute2), whose inode finds a socket file after a rename (which is how
    Go servers create sockets atomically); without ss, /proc/net/unix (bound paths)."""
    pids = {h[0] for h in handles if _alive(h)}
    found: dict[str, list[str]] = {str(pid): [] for pid in pids}
    if not pids:
        return found
    try:
        result = subprocess.run(["ss", "-xlpeH"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=30)
        lines = result.stdout.decode(errors="replace").splitlines() if result.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        lines = None
    if lines is not None:
        for line in lines:
            match = _SS_LINE.match(line)
            if not match:
                continue
            # A socket shared by several processes lists each of them.
            for pid in re.findall(r"pid=(\d+),", line):
                if int(pid) in pids:
                    found[pid].append(_current_path(match["path"], int(match["ino"])))
        return found
    for pid in pids:
        found[str(pid)] = _bound_paths(pid)
    return found


def _bound_paths(pid: int) -> list[str]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        with open("/proc/net/unix") as handle:
            rows = [line.split() for line in handle.read().splitlines()[1:]]
    except OSError:
        return []
    return [row[7] for row in rows if len(row) >= 8 and row[6] in inodes and row[5] == "01"]


def _current_path(bound: str, inode: int) -> str:
    """The path of the socket file with this inode: where it was bound, or where it was
    renamed to within the same folder."""
    try:
        if not inode or os.stat(bound).st_ino == inode:
            return bound
    except OSError:
        pass
    try:
        with os.scandir(os.path.dirname(bound) or "/") as entries:
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


def usage(pids: list[int]) -> dict[str, list[float]]:
    """pid -> [CPU seconds (user + system), resident bytes] of each live one, from /proc."""
    tick, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    found: dict[str, list[float]] = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/statm") as handle:
                rss = int(handle.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        found[str(pid)] = [(int(fields[11]) + int(fields[12])) / tick, rss * page]
    return found


# Ports and probes ----------------------------------------------------------------


def _port_in_use(port: int) -> bool:
    # 0.0.0.0 fails to bind when anything listens on the port at any address. With
    # SO_REUSEADDR, as Go's listeners set it, only a listener counts, not the
    # TIME_WAIT connections a stopped server leaves for a minute.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe_socket:
        probe_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe_socket.bind(("0.0.0.0", port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def ports_in_use(ports: list[int]) -> list[bool]:
    return [_port_in_use(p) for p in ports]


def free_ports(count: int, low: int, high: int, exclude: list[int]) -> list[int]:
    """count ports of [low, high] that nothing listens on, taken at random: another
    kubemark-up (another home, another user) picking at the same moment seldom picks
    the same ones, where lowest-first would."""
    excluded = set(exclude)
    ports: list[int] = []
    candidates = list(range(low, high + 1))
    random.shuffle(candidates)
    for port in candidates:
        if len(ports) == count:
            break
        if port not in excluded and not _port_in_use(port):
            ports.append(port)
    if len(ports) < count:
        raise AgentError(f"only {len(ports)} of {count} ports are free in {low}-{high} (set port_range)")
    return ports


def probe(urls: list[str], timeout: float) -> list[bool]:
    """An HTTP(S) GET each that answers 2xx. Like the kubelet's probes, it does not
    verify the serving certificate (the controller-manager's and scheduler's are
    self-signed)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    results = []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
                results.append(200 <= response.status < 300)
        except (urllib.error.URLError, OSError, ValueError):
            results.append(False)
    return results


def fetch(url: str, timeout: float, limit: int) -> dict:
    """A GET of url from this host without credentials (certificates not checked, as
    probe): its status and up to limit bytes of its body. For the master's /metrics
    endpoints, which listen on the host's loopback only."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return {"status": response.status, "body": response.read(limit).decode(errors="replace")}
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "body": exc.read(4096).decode(errors="replace")}
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise AgentError(f"GET {url} failed: {getattr(exc, 'reason', exc)}") from None


# Files ---------------------------------------------------------------------------


def read(path: str, limit: int, from_end: bool) -> str:
    """Up to limit bytes of a file from its start or end, or '' if there is none."""
    try:
        with open(path, "rb") as handle:
            if from_end:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - limit))
            return handle.read(limit).decode(errors="replace")
    except OSError:
        return ""


def mkdirs(paths: list[str], mode: int) -> list[bool]:
    """Make each folder (and its parents) with mode; True for each that is new."""
    made = []
    for path in paths:
        existed = os.path.isdir(path)
        try:
            os.makedirs(path, mode=mode, exist_ok=True)
            if not existed:
                os.chmod(path, mode)  # the umask must not widen or narrow it
        except OSError as exc:
            raise AgentError(f"cannot make folder {path}: {exc.strerror}") from None
        made.append(not existed)
    return made


def remove(paths: list[str]) -> None:
    """Remove files and folder trees; what is already gone is fine."""
    for path in paths:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def rmdir_if_empty(path: str) -> bool:
    try:
        os.rmdir(path)
        return True
    except OSError:
        return False


def _digest(path: str) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def sha256(paths: list[str]) -> list[str | None]:
    return [_digest(path) for path in paths]


def install(temp: str, path: str, size: int, sha256: str, mode: int) -> None:
    """Give temp, an upload, its mode and rename it to path once it holds exactly size
    bytes with that SHA-256; else remove it and say what arrived. `cat` ends as if all
    had come when its connection drops, so only this check tells a whole copy from a
    piece, and a piece never appears under path."""
    name = os.path.basename(path)
    try:
        got = os.path.getsize(temp)
    except OSError:
        raise AgentError(f"{name} did not arrive ({temp} is missing)") from None
    if got != size or _digest(temp) != sha256:
        remove([temp])
        what = f"{got} of {size} bytes" if got != size else f"its {size} bytes but another SHA-256"
        raise AgentError(f"{name} arrived with {what}; the partial copy is removed")
    os.chmod(temp, mode)
    os.rename(temp, path)


def symlink(target: str, path: str) -> None:
    if os.path.islink(path) or os.path.exists(path):
        os.unlink(path)
    os.symlink(target, path)


def listdir(path: str) -> list[str]:
    """The files (not folders) in path, or [] if there is no such folder."""
    try:
        return sorted(e.name for e in os.scandir(path) if e.is_file(follow_symlinks=False))
    except OSError:
        return []


def facts(paths: list[str]) -> dict:
    """What preflight checks need to know about the host, and whether each of paths
    (or, where it does not exist yet, its nearest existing parent) may be written."""

    def writable(path: str) -> bool:
        while not os.path.exists(path):
            parent = os.path.dirname(path)
            if parent == path:
                return False
            path = parent
        return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)

    try:
        with open("/proc/sys/fs/inotify/max_user_instances") as handle:
            inotify = int(handle.read())
    except (OSError, ValueError):
        inotify = None
    return {
        "python": list(sys.version_info[:3]),
        "cpus": os.cpu_count() or 1,
        "uid": os.getuid(),
        "inotify_max_user_instances": inotify,
        "writable": {path: writable(path) for path in paths},
        "exists": {path: os.path.exists(path) for path in paths},
    }


# Serving -------------------------------------------------------------------------


class AgentError(Exception):
    """A failure the caller should see as one line."""


VERBS: dict[str, Callable[..., Any]] = {
    "alive": alive, "spawn": spawn, "send": send, "stop": stop, "find_marked": find_marked, "cmdlines": cmdlines,
    "supervision": supervision, "unix_listeners": unix_listeners, "usage": usage,
    "ports_in_use": ports_in_use, "free_ports": free_ports, "probe": probe, "fetch": fetch,
    "read": read, "mkdirs": mkdirs, "remove": remove, "rmdir_if_empty": rmdir_if_empty,
    "sha256": sha256, "install": install, "symlink": symlink, "listdir": listdir, "facts": facts,
}


def serve(verb: str, arguments: str) -> int:
    """Run one verb for a remote caller: arguments and result as JSON."""
    try:
        result = {"ok": VERBS[verb](**json.loads(arguments))}
    except AgentError as exc:
        result = {"error": str(exc)}
    except Exception as exc:  # reported, never a traceback on the caller's screen
        result = {"error": f"agent {verb} failed: {type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps(result))
    sys.stdout.flush()
    return 0
