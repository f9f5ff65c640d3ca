"""Another machine as a Host, over SSH with paramiko.

Host keys are checked: against a key pinned in the cluster's state once learned,
else against known_hosts. An unknown host is refused unless trusting it was asked
for, and then its key is pinned, so every later command of that cluster checks the
very key first seen (trust on first use, never silent).

The agent runs with the host's python3 and comes with each call (agent.py), so the
host needs nothing installed but python3 and nothing is left there for it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko

from kubemark_up.errors import ConfigError, HostError
from kubemark_up.hosts import agent
from kubemark_up.hosts.base import Completed, Host

_AGENT_SOURCE = Path(agent.__file__).read_text()
_CHUNK = 1 << 20


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
    import hashlib

    blob = base64.b64decode(key_line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


class _Decide(paramiko.MissingHostKeyPolicy):
    """Called only for a host that neither the pinned key nor known_hosts knows."""

    def __init__(self, target: SSHTarget) -> None:
        self.target = target
        self.accepted = False  # an unknown key was taken on trust

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        line = f"{key.get_name()} {key.get_base64()}"
        if not self.target.trust_unknown_host:
            where = self.target.known_hosts or "known_hosts"
            raise HostError(
                f"the host key of {self.target.name} ({key.get_name()} {fingerprint(line)}) is not in {where}: "
                "check it and add it there, or set trust_unknown_host to accept it on first use"
            )
        self.accepted = True


class SSHHost(Host):
    def __init__(
        self, target: SSHTarget, *, supervisor: str, on_host_key: Callable[[str, bool], None] | None = None
    ) -> None:
        """on_host_key(key line, taken on trust) is called on the first connection of a
        target without a pinned key, for the caller to pin it."""
        self.target = target
        self.name = target.name
        self.supervisor = supervisor
        self.python = target.python
        self._on_host_key = on_host_key
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.Lock()

    # Connection ---------------------------------------------------------------------

    def connect(self) -> paramiko.SSHClient:
        with self._lock:
            if self._client is not None:
                transport = self._client.get_transport()
                if transport is not None and transport.is_active():
                    return self._client
                raise HostError(f"lost the SSH connection to {self.name}")
            self._client = self._open()
            return self._client

    def _open(self) -> paramiko.SSHClient:
        target = self.target
        client = paramiko.SSHClient()
        keys = client.get_host_keys()
        if target.pinned_key:
            kind, data = target.pinned_key.split()[:2]
            keys.add(_known_name(target), kind, paramiko.PKey.from_type_string(kind, base64.b64decode(data)))
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
        if self._on_host_key is not None and not target.pinned_key:
            server_key = transport.get_remote_server_key()
            self._on_host_key(f"{server_key.get_name()} {server_key.get_base64()}", decide.accepted)
        return client

    def close(self) -> None:
        with self._lock:
            if self._sftp is not None:
                self._sftp.close()
            if self._client is not None:
                self._client.close()
            self._sftp = self._client = None

    @contextlib.contextmanager
    def _lost(self) -> Iterator[None]:
        """What breaks mid-conversation is the connection's fault: one line naming the host."""
        try:
            yield
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise HostError(f"lost the SSH connection to {self.name} ({str(exc) or type(exc).__name__})") from None

    # Commands -------------------------------------------------------------------------

    def _exec(self, command: str, stdin: bytes, timeout: float) -> tuple[int, bytes, bytes]:
        client = self.connect()
        with self._lost():
            transport = client.get_transport()
            assert transport is not None
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
                deadline = time.monotonic() + timeout
                while not channel.exit_status_ready():
                    if time.monotonic() > deadline:
                        raise TimeoutError
                    time.sleep(0.005)
                code = channel.recv_exit_status()
            except TimeoutError:
                channel.close()
                raise HostError(f"`{command[:80]}` on {self.name} did not finish in {timeout:.0f}s") from None
            reader.join(timeout=5)
            channel.close()
        if code == -1:  # closed without an exit status: the connection went away
            raise HostError(f"lost the SSH connection to {self.name} (while running `{command[:40]}...`)")
        return code, b"".join(output), b"".join(errors)

    def run(self, argv: Sequence[str], *, stdin: bytes = b"", timeout: float = 60) -> Completed:
        code, out, err = self._exec(shlex.join(argv), stdin, timeout)
        return Completed(list(argv), code, out.decode(errors="replace"), err.decode(errors="replace"))

    def call(self, verb: str, **arguments: Any) -> Any:
        command = shlex.join([self.python, "-c", agent.BOOTSTRAP.format(sep=agent.SEPARATOR), verb])
        payload = (_AGENT_SOURCE + agent.SEPARATOR + json.dumps(arguments)).encode()
        # A stop waits for its processes: give the call their timeout and some more.
        timeout = float(arguments.get("timeout", 0)) + 120
        code, out, err = self._exec(command, payload, timeout)
        try:
            answer = json.loads(out)
        except ValueError:
            detail = err.decode(errors="replace").strip().splitlines()
            if code == 127 or any("not found" in line for line in detail[-2:]):
                raise HostError(f"{self.name} has no {self.python}: kubemark-up needs Python 3.8 or later there") from None
            raise HostError(
                f"the agent on {self.name} failed (exit {code})", detail="\n".join(detail[-10:])
            ) from None
        if "error" in answer:
            raise HostError(f"{self.name}: {answer['error']}")
        return answer["ok"]

    # Files ----------------------------------------------------------------------------

    def _sftp_client(self) -> paramiko.SFTPClient:
        client = self.connect()
        with self._lock:
            if self._sftp is None:
                with self._lost():
                    self._sftp = client.open_sftp()
            return self._sftp

    def put(self, path: str, source: bytes | Path, *, mode: int) -> None:
        if isinstance(source, Path):
            if source.stat().st_size > _CHUNK:
                self._stream(path, source, mode)
                return
            source = source.read_bytes()
        # Small files (keys, certificates, kubeconfigs) by SFTP: a few round trips each,
        # no shell started, and the mode set on the open file before a byte is written.
        sftp = self._sftp_client()
        with self._lost():
            try:
                remote = sftp.open(path, "wb")
            except PermissionError:
                raise HostError(f"{self.name}: cannot write {path} (permission denied)") from None
            with remote:
                remote.chmod(mode)  # before any content
                remote.set_pipelined(True)
                remote.write(source)

    def _stream(self, path: str, source: Path, mode: int) -> None:
        """A large file through `cat` on an exec channel: about twice SFTP's speed with
        paramiko. Written to a 0600 temporary beside it, given its mode, then renamed."""
        script = 'umask 077; t="$1.kubemark-up.$$"; rm -f "$t"; cat > "$t" && chmod "$2" "$t" && mv -f "$t" "$1"'
        command = shlex.join(["sh", "-c", script, "sh", path, f"{mode:o}"])
        client = self.connect()
        with self._lost():
            transport = client.get_transport()
            assert transport is not None
            channel = transport.open_session(timeout=self.target.connect_timeout)
            channel.exec_command(command)
            with source.open("rb") as local:
                while chunk := local.read(_CHUNK):
                    channel.sendall(chunk)
            channel.shutdown_write()
            code = channel.recv_exit_status()
            error = channel.recv_stderr(4096).decode(errors="replace").strip()
            channel.close()
        if code == -1:
            raise HostError(f"lost the SSH connection to {self.name} (while writing {path})")
        if code != 0:
            raise HostError(f"{self.name}: cannot write {path} ({error or f'exit {code}'})")

    def get(self, path: str, local: Path) -> bool:
        sftp = self._sftp_client()
        with self._lost():
            try:
                sftp.get(path, str(local))
            except FileNotFoundError:
                return False
        return True


def _known_name(target: SSHTarget) -> str:
    """How known_hosts names a host: the bare name on port 22, else [name]:port."""
    return target.host if target.port == 22 else f"[{target.host}]:{target.port}"
