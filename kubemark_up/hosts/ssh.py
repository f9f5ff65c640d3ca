"""Another machine as a Host, over SSH with paramiko.

Host keys are checked: against a key pinned in the cluster's state once learned,
else against known_hosts. An unknown host is refused unless trusting it was asked
for, and then its key is pinned, so every later command of that cluster checks the
very key first seen (trust on first use, never silent).

The agent runs with the host's python3 and comes with each call (agent.py), so the
host needs nothing installed but python3 and nothing is left there for it.

A connection that drops is opened again, with the key the first one showed (a
changed key is refused as ever). What may run twice with the same effect (reads,
probes, metrics, stops, uploads) is tried again on the new connection a bounded
number of times with back-off; what is not (starting processes) fails, in one line
that says what it was doing.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import posixpath
import secrets
import shlex
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import paramiko

from kubemark_up.errors import ConfigError, HostError
from kubemark_up.hosts import agent
from kubemark_up.hosts.base import Completed, Host

_AGENT_SOURCE = Path(agent.__file__).read_text()
_CHUNK = 1 << 20
_T = TypeVar("_T")

# Agent verbs that may run twice with the same effect and result: tried again on a new
# connection after a drop. Not spawn (a second start), nor mkdirs and rmdir_if_empty,
# whose answers (made or not, removed or not) would change on a second run.
RETRIED_VERBS = frozenset({
    "alive", "find_marked", "cmdlines", "supervision", "unix_listeners", "usage", "ports_in_use", "free_ports",
    "probe", "fetch", "read", "sha256", "listdir", "facts", "remove", "symlink", "send", "stop",
})


@dataclass(frozen=True)
class Retry:
    """How a call that may run twice is tried again after its connection dropped:
    attempts in all (the first included), waiting delay seconds before the second,
    delay * factor before the third, and so on. The default rides out a restart of
    sshd or a blip of a few seconds, and gives up after about 7 s."""

    attempts: int = 4
    delay: float = 1.0
    factor: float = 2.0

    def waits(self) -> list[float]:
        return [self.delay * self.factor**n for n in range(max(0, self.attempts - 1))]


@dataclass(frozen=True)
class SSHTarget:
    host: str
    port: int
    user: str
    identity_file: Path | None = None  # None: the ssh-agent, then ~/.ssh/id_*
    known_hosts: Path | None = None
    trust_unknown_host: bool = False
    pinned_key: str | None = None  # "ssh-ed25519 AAAA...", learned on first contact
    connect_timeout: float = 10.0
    python: str = "python3"

    @property
    def name(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


def fingerprint(key_line: str) -> str:
    """The SHA256:... fingerprint OpenSSH prints for a key line."""
    blob = base64.b64decode(key_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def doing(verb: str, arguments: Mapping[str, Any]) -> str:
    """What an agent call is doing, for a message: "reading https://...", never the
    agent's `python3 -c ...` bootstrap."""

    def some(items: Sequence[Any]) -> str:
        items = [str(item) for item in items]
        if not items:
            return "nothing"
        return items[0] if len(items) == 1 else f"{items[0]} and {len(items) - 1} more"

    def processes(what: str) -> str:
        return f"{what} {len(arguments.get('handles') or [])} process(es)"

    described: dict[str, Callable[[], str]] = {
        "alive": lambda: processes("checking"),
        "cmdlines": lambda: processes("reading the command lines of"),
        "unix_listeners": lambda: processes("reading the sockets of"),
        "send": lambda: processes(f"sending SIG{arguments.get('name')} to"),
        "stop": lambda: processes("stopping"),
        "spawn": lambda: "starting " + some([posixpath.basename(s.get("log", "?")).removesuffix(".log")
                                             for s in arguments.get("specs") or []]),
        "find_marked": lambda: "looking for the cluster's processes",
        "supervision": lambda: "reading " + some(arguments.get("status_files") or []),
        "usage": lambda: "sampling the CPU and memory of the master's processes",
        "ports_in_use": lambda: "checking ports " + some(arguments.get("ports") or []),
        "free_ports": lambda: "looking for free ports",
        "probe": lambda: "probing " + some(arguments.get("urls") or []),
        "fetch": lambda: f"reading {arguments.get('url')}",
        "read": lambda: f"reading {arguments.get('path')}",
        "mkdirs": lambda: "making the folder " + some(arguments.get("paths") or []),
        "remove": lambda: "removing " + some(arguments.get("paths") or []),
        "rmdir_if_empty": lambda: f"removing the folder {arguments.get('path')}",
        "sha256": lambda: "reading the SHA-256 of " + some(arguments.get("paths") or []),
        "symlink": lambda: f"linking {arguments.get('path')}",
        "listdir": lambda: f"listing {arguments.get('path')}",
        "facts": lambda: "checking the host (Python, CPUs, folders)",
        "install": lambda: f"checking the uploaded {posixpath.basename(str(arguments.get('path')))}",
    }
    return described[verb]() if verb in described else f"running the agent's {verb}"


def uploading(path: str) -> str:
    return f"uploading {posixpath.basename(path)} to {posixpath.dirname(path) or '/'}"


class _Lost(Exception):
    """The connection went away in the middle of a conversation."""


class _Reopen(Exception):
    """Opening the connection again, after it dropped, failed."""

    def __init__(self, message: str, *, final: bool) -> None:
        super().__init__(message)
        self.final = final  # not worth another attempt: a changed host key, a bad key file


class _Decide(paramiko.MissingHostKeyPolicy):
    """Called only for a host that neither the pinned key nor known_hosts knows."""

    def __init__(self, target: SSHTarget) -> None:
        self.target = target
        self.accepted = False  # an unknown key was taken on trust

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        line = f"{key.get_name()} {key.get_base64()}"
        if self.target.pinned_key:
            # A key of another type than the pinned one: a changed key, never taken on trust.
            raise paramiko.BadHostKeyException(hostname, key, _pkey(self.target.pinned_key))
        if not self.target.trust_unknown_host:
            where = self.target.known_hosts or "known_hosts"
            raise HostError(
                f"the host key of {self.target.name} ({key.get_name()} {fingerprint(line)}) is not in {where}: "
                "check it and add it there, or set trust_unknown_host to accept it on first use"
            )
        self.accepted = True


class SSHHost(Host):
    def __init__(
        self, target: SSHTarget, *, supervisor: str, on_host_key: Callable[[str, bool], None] | None = None,
        retry: Retry | None = None,
    ) -> None:
        """on_host_key(key line, taken on trust) is called on the first connection of a
        target without a pinned key, for the caller to pin it."""
        self.target = target
        self.name = target.name
        self.supervisor = supervisor
        self.python = target.python
        self.retry = retry or Retry()
        self._on_host_key = on_host_key
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.Lock()
        self._seen_key: str | None = target.pinned_key  # what every later connection must show
        self._dropped = False  # the last connection went away (not closed by us)
        self._down = False  # it could not be opened again: no more waiting until it can
        self._partial: set[str] = set()  # uploads cut short that are still on the host

    # Connection ---------------------------------------------------------------------

    def connect(self) -> paramiko.SSHClient:
        """The open connection, opened (again) if need be."""
        with self._lock:
            if self._client is not None:
                transport = self._client.get_transport()
                if transport is not None and transport.is_active():
                    return self._client
                self._forget_client()
                self._dropped = True
            if not self._dropped:
                self._client = self._open()
            else:
                try:
                    self._client = self._open()
                except ConfigError as exc:
                    raise _Reopen(exc.message, final=True) from None
                except HostError as exc:
                    raise _Reopen(exc.message, final="does not match" in exc.message) from None
            self._dropped = self._down = False
            return self._client

    def _open(self) -> paramiko.SSHClient:
        target = self.target
        if self._seen_key:
            target = dataclasses.replace(target, pinned_key=self._seen_key)
        client = paramiko.SSHClient()
        keys = client.get_host_keys()
        if target.pinned_key:
            keys.add(_known_name(target), target.pinned_key.split()[0], _pkey(target.pinned_key))
        elif target.known_hosts is not None and target.known_hosts.exists():
            try:
                client.load_system_host_keys(str(target.known_hosts))
            except (OSError, paramiko.SSHException) as exc:
                raise ConfigError(f"cannot read known_hosts {target.known_hosts}: {exc}") from None
        decide = _Decide(target)
        client.set_missing_host_key_policy(decide)
        where = f"SSH to {target.name}"
        try:
            sock = socket.create_connection((target.host, target.port), timeout=target.connect_timeout)
            # paramiko leaves Nagle on: every command would wait ~40 ms for a delayed ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except TimeoutError:
            client.close()
            raise HostError(f"{where} timed out after {target.connect_timeout:g}s") from None
        except ConnectionRefusedError:
            client.close()
            raise HostError(f"{where}: connection refused") from None
        except socket.gaierror:
            client.close()
            raise HostError(f"{where}: cannot resolve the host name {target.host}") from None
        except OSError as exc:
            client.close()
            raise HostError(f"{where}: {exc.strerror or exc}") from None
        try:
            client.connect(
                target.host, port=target.port, username=target.user, sock=sock,
                key_filename=str(target.identity_file) if target.identity_file else None,
                look_for_keys=target.identity_file is None, allow_agent=target.identity_file is None,
                timeout=target.connect_timeout, banner_timeout=target.connect_timeout,
                auth_timeout=target.connect_timeout, channel_timeout=target.connect_timeout,
            )
        except HostError:
            client.close()
            raise
        except paramiko.BadHostKeyException as exc:
            client.close()
            got = f"{exc.key.get_name()} {exc.key.get_base64()}"
            source = "the key pinned in this cluster's state" if target.pinned_key else str(target.known_hosts)
            raise HostError(
                f"{where}: the host key ({fingerprint(got)}) does not match {source}: "
                "someone may be intercepting the connection, or the host was reinstalled"
            ) from None
        except paramiko.PasswordRequiredException:
            client.close()
            raise ConfigError(
                f"the private key {target.identity_file} is encrypted: load it into ssh-agent and leave identity_file unset"
            ) from None
        except paramiko.AuthenticationException:
            client.close()
            key = f"the key {target.identity_file}" if target.identity_file else "the ssh-agent and default keys"
            raise HostError(f"{where}: authentication failed with {key}") from None
        except TimeoutError:
            client.close()
            raise HostError(f"{where} timed out after {target.connect_timeout:g}s") from None
        except FileNotFoundError as exc:
            client.close()
            raise ConfigError(f"the private key {exc.filename} does not exist") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            transport = client.get_transport()
            client.close()
            message = str(exc) or type(exc).__name__
            if "banner" in message.lower() or (transport is not None and not transport.remote_version):
                message = f"no SSH server answered within {target.connect_timeout:g}s"
            raise HostError(f"{where}: {message}") from None
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(15)
        server_key = transport.get_remote_server_key()
        key_line = f"{server_key.get_name()} {server_key.get_base64()}"
        if self._on_host_key is not None and self._seen_key is None:
            self._on_host_key(key_line, decide.accepted)
        self._seen_key = key_line
        return client

    def _forget_client(self) -> None:
        """Close and drop the client (under the lock)."""
        with contextlib.suppress(Exception):  # a dead connection may fail to close cleanly
            if self._sftp is not None:
                self._sftp.close()
            if self._client is not None:
                self._client.close()
        self._sftp = self._client = None

    def _discard(self, client: paramiko.SSHClient) -> None:
        """The connection client went away: the next call opens a new one."""
        with self._lock:
            if self._client is client:
                self._forget_client()
                self._dropped = True

    def close(self) -> None:
        if self._partial and not self._down:
            with contextlib.suppress(HostError):
                self._remove_partial(retry=False)
        with self._lock:
            self._forget_client()
            self._dropped = self._down = False

    @staticmethod
    def _gone(client: paramiko.SSHClient) -> bool:
        """Whether client's connection is gone. paramiko closes the channels a moment
        before it marks the transport inactive: give it that moment."""
        transport = client.get_transport()
        deadline = time.monotonic() + 1.0
        while transport is not None and transport.is_active() and time.monotonic() < deadline:
            time.sleep(0.02)
        return transport is None or not transport.is_active()

    def _session(self, what: str, action: Callable[[paramiko.SSHClient], _T], *, retry: bool) -> _T:
        """action(connection), on a connection opened again if the last one dropped; if
        this one drops meanwhile and retry, again, up to the policy's attempts. Errors
        say what it was doing."""
        waits = self.retry.waits() if retry and not self._down else []
        when = "before"  # the connection was gone when this call began; "while": it went during it
        for attempt in range(len(waits) + 1):
            last = attempt == len(waits)
            try:
                client = self.connect()
            except _Reopen as exc:
                if exc.final or last:
                    self._down = not exc.final
                    reason = str(exc).removeprefix(f"SSH to {self.name}: ").removeprefix(f"SSH to {self.name} ")
                    raise HostError(f"lost the SSH connection to {self.name} {when} {what}, "
                                    f"and opening it again failed: {reason}") from None
                time.sleep(waits[attempt])
                continue
            try:
                return action(client)
            except _Lost:
                pass
            except (paramiko.SSHException, EOFError, OSError) as exc:
                if not self._gone(client):  # the connection is fine: the operation failed
                    raise HostError(f"{self.name}: {what} failed: {str(exc) or type(exc).__name__}") from None
            self._discard(client)
            when = "while"
            if last:
                raise HostError(f"lost the SSH connection to {self.name} while {what}")
            time.sleep(waits[attempt])
        raise AssertionError("unreachable")

    # Commands -------------------------------------------------------------------------

    def _exec(self, client: paramiko.SSHClient, command: str, stdin: bytes, timeout: float,
              what: str) -> tuple[int, bytes, bytes]:
        transport = client.get_transport()
        if transport is None:
            raise _Lost
        channel = transport.open_session(timeout=self.target.connect_timeout)
        channel.settimeout(timeout)
        channel.exec_command(command)
        errors: list[bytes] = []

        def drain_stderr() -> None:
            with contextlib.suppress(OSError, paramiko.SSHException):
                while chunk := channel.recv_stderr(_CHUNK):
                    errors.append(chunk)

        reader = threading.Thread(target=drain_stderr, daemon=True)
        reader.start()
        try:
            if stdin:
                channel.sendall(stdin)
            channel.shutdown_write()
            output = []
            while chunk := channel.recv(_CHUNK):
                output.append(chunk)
            code = _exit_status(channel, timeout)
        except TimeoutError:
            channel.close()
            raise HostError(f"{what} on {self.name} did not finish in {timeout:.0f}s") from None
        reader.join(timeout=5)
        channel.close()
        if code == -1:  # closed without an exit status: the connection went away
            raise _Lost
        return code, b"".join(output), b"".join(errors)

    def run(self, argv: Sequence[str], *, stdin: bytes = b"", timeout: float = 60) -> Completed:
        # Any command: not known to be safe to run twice, so not retried.
        what = f"running {posixpath.basename(argv[0]) if argv else 'a command'}"
        code, out, err = self._session(what, lambda c: self._exec(c, shlex.join(argv), stdin, timeout, what),
                                       retry=False)
        return Completed(list(argv), code, out.decode(errors="replace"), err.decode(errors="replace"))

    def call(self, verb: str, **arguments: Any) -> Any:
        what = doing(verb, arguments)
        return self._session(what, lambda client: self._agent(client, verb, arguments, what),
                             retry=verb in RETRIED_VERBS)

    def _agent(self, client: paramiko.SSHClient, verb: str, arguments: Mapping[str, Any], what: str) -> Any:
        command = shlex.join([self.python, "-c", agent.BOOTSTRAP.format(sep=agent.SEPARATOR), verb])
        payload = (_AGENT_SOURCE + agent.SEPARATOR + json.dumps(arguments)).encode()
        # A stop waits for its processes: give the call their timeout and some more.
        timeout = float(arguments.get("timeout", 0)) + 120
        code, out, err = self._exec(client, command, payload, timeout, what)
        try:
            answer = json.loads(out)
        except ValueError:
            detail = err.decode(errors="replace").strip().splitlines()
            if code == 127 or any("not found" in line for line in detail[-2:]):
                raise HostError(f"{self.name} has no {self.python}: kubemark-up needs Python 3.8 or later there") from None
            raise HostError(
                f"the agent on {self.name} failed while {what} (exit {code})", detail="\n".join(detail[-10:])
            ) from None
        if "error" in answer:
            raise HostError(f"{self.name}: {answer['error']}")
        return answer["ok"]

    # Files ----------------------------------------------------------------------------

    def _sftp_for(self, client: paramiko.SSHClient) -> paramiko.SFTPClient:
        with self._lock:
            if self._client is not client:  # replaced meanwhile: this one is gone
                raise _Lost
            if self._sftp is None:
                self._sftp = client.open_sftp()
            return self._sftp

    def put(self, path: str, source: bytes | Path, *, mode: int) -> None:
        """Written to a temporary name beside path and renamed once whole: a transfer
        cut short never leaves a file under path."""
        if self._partial:
            with contextlib.suppress(HostError):
                self._remove_partial(retry=True)
        temp = f"{path}.kubemark-up.{secrets.token_hex(4)}"
        large = isinstance(source, Path) and source.stat().st_size > _CHUNK
        data = b"" if large or not isinstance(source, Path) else source.read_bytes()

        def action(client: paramiko.SSHClient) -> None:
            if isinstance(source, Path) and large:
                self._stream(client, path, temp, source, mode)
            else:
                self._put_small(client, path, temp, data if isinstance(source, Path) else source, mode)

        try:
            self._session(uploading(path), action, retry=True)
        except HostError:
            self._partial.add(temp)
            if not self._down:  # the host answers: take the piece away now, else on the next put or close
                with contextlib.suppress(HostError):
                    self._remove_partial(retry=False)
            raise

    def _remove_partial(self, *, retry: bool) -> None:
        paths = sorted(self._partial)
        what = doing("remove", {"paths": paths})
        self._session(what, lambda client: self._agent(client, "remove", {"paths": paths}, what), retry=retry)
        self._partial.difference_update(paths)

    def _put_small(self, client: paramiko.SSHClient, path: str, temp: str, data: bytes, mode: int) -> None:
        """Small files (keys, certificates, kubeconfigs) by SFTP: a few round trips each,
        no shell started, and the mode set on the open file before a byte is written.
        SFTP acknowledges every write, so only a whole file is renamed."""
        sftp = self._sftp_for(client)
        try:
            remote = sftp.open(temp, "wb")
        except PermissionError:
            raise HostError(f"{self.name}: cannot write {path} (permission denied)") from None
        except FileNotFoundError:
            raise HostError(f"{self.name}: cannot write {path} (no folder {posixpath.dirname(path)})") from None
        with remote:
            remote.chmod(mode)  # before any content
            remote.set_pipelined(True)
            remote.write(data)
        size = sftp.stat(temp).st_size
        if size != len(data):
            sftp.remove(temp)
            raise HostError(f"{self.name}: {posixpath.basename(path)} arrived with {size} of {len(data)} bytes; "
                            "the partial copy is removed")
        sftp.posix_rename(temp, path)

    def _stream(self, client: paramiko.SSHClient, path: str, temp: str, source: Path, mode: int) -> None:
        """A large file through `cat` on an exec channel: about twice SFTP's speed with
        paramiko. `cat` ends as if all had come when the connection drops, so the agent
        checks the size and SHA-256 of what arrived before it renames it."""
        script = 'umask 077; rm -f "$1" && cat > "$1" || { rm -f "$1"; exit 1; }'
        transport = client.get_transport()
        if transport is None:
            raise _Lost
        channel = transport.open_session(timeout=self.target.connect_timeout)
        channel.settimeout(max(120.0, self.target.connect_timeout))  # each write's wait for the window
        channel.exec_command(shlex.join(["sh", "-c", script, "sh", temp]))
        digest, size = hashlib.sha256(), 0
        try:
            with source.open("rb") as local:
                while chunk := local.read(_CHUNK):
                    channel.sendall(chunk)
                    digest.update(chunk)
                    size += len(chunk)
            channel.shutdown_write()
            code = _exit_status(channel, 120.0)
        except TimeoutError:
            channel.close()
            raise HostError(f"{uploading(path)} on {self.name} stalled for 120s") from None
        error = channel.recv_stderr(4096).decode(errors="replace").strip() if code > 0 else ""
        channel.close()
        if code == -1:
            raise _Lost
        if code != 0:
            raise HostError(f"{self.name}: cannot write {path} ({error or f'exit {code}'})")
        arguments = {"temp": temp, "path": path, "size": size, "sha256": digest.hexdigest(), "mode": mode}
        self._agent(client, "install", arguments, doing("install", arguments))

    def get(self, path: str, local: Path) -> bool:
        def action(client: paramiko.SSHClient) -> bool:
            try:
                self._sftp_for(client).get(path, str(local))
            except FileNotFoundError:
                return False
            return True

        return self._session(f"downloading {path}", action, retry=True)


def _exit_status(channel: paramiko.Channel, timeout: float) -> int:
    """The command's exit status once its channel says so (-1: closed without one),
    TimeoutError after timeout."""
    deadline = time.monotonic() + timeout
    while not channel.exit_status_ready():
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.005)
    return channel.recv_exit_status()


def _pkey(key_line: str) -> paramiko.PKey:
    kind, data = key_line.split()[:2]
    return paramiko.PKey.from_type_string(kind, base64.b64decode(data))


def _known_name(target: SSHTarget) -> str:
    """How known_hosts names a host: the bare name on port 22, else [name]:port."""
    return target.host if target.port == 22 else f"[{target.host}]:{target.port}"
