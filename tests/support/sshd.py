"""A real OpenSSH server (/usr/sbin/sshd) on a loopback port, for tests.

sshd runs unprivileged: as the current user, or as the dedicated user SSH_USER
(created if missing) when we are root.  A non-root sshd has no privilege
separation and can only log in as itself, so the client logs in as that user.
Stdlib only (no paramiko), so tests and benchmarks can import it freely.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

SSHD = "/usr/sbin/sshd"  # sshd re-executes itself, so it needs an absolute path
SSH_USER = "kmup-ssh"  # the login user when the tests run as root


def _login_user() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam(SSH_USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", SSH_USER], check=True)
        return pwd.getpwnam(SSH_USER)


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
                   check=True, stdout=subprocess.DEVNULL)


def _penalties_off() -> str:
    """OpenSSH 9.8+ penalises a source address after failed logins (the wrong-key
    tests would lock loopback out): switch that off where the option exists."""
    banner = subprocess.run([SSHD, "-V"], check=False, capture_output=True, text=True).stderr
    found = re.search(r"OpenSSH_(\d+)\.(\d+)", banner)
    new = found is not None and (int(found[1]), int(found[2])) >= (9, 8)
    return "PerSourcePenalties no\n" if new else ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children() -> dict[int, list[int]]:
    """Map each pid to its child pids, read from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):  # it exited meanwhile
                stat = (entry / "stat").read_text()  # "pid (name) state ppid ..."; name may hold spaces
                tree.setdefault(int(stat.rpartition(")")[2].split()[1]), []).append(int(entry.name))
    return tree


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it is gone already
        os.kill(pid, sig)


def _is_sshd(pid: int) -> bool:
    """sshd itself, or (OpenSSH 9.8 and later) the sshd-session and sshd-auth it runs."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False
    return exe == SSHD or os.path.basename(exe) in ("sshd-session", "sshd-auth")


class SSHServer:
    """Start with start(); stop() kills every sshd process it started (the listener
    and each per-connection child: a dropped connection); drop_connections() kills
    only the per-connection ones (the server still answers); restart() comes back on
    the same port with the same host key, so known_hosts still matches, or with
    another (other_host_key), as a reinstalled host or an impostor would."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        pw = _login_user()
        self.user, self.home, self._uid, self._gid = pw.pw_name, Path(pw.pw_dir), pw.pw_uid, pw.pw_gid
        self.dir = Path(tempfile.mkdtemp(prefix="kmup-sshd-"))  # 0700
        self.port = _free_port()
        self.host_key, self.client_key, self.wrong_key, self.other_host_key = (
            self.dir / n for n in ("host_key", "client_key", "wrong_key", "other_host_key"))
        for key in (self.host_key, self.client_key, self.wrong_key, self.other_host_key):
            _keygen(key)
        (self.dir / "authorized_keys").write_text(self.client_key.with_suffix(".pub").read_text())
        host_pub = self.host_key.with_suffix(".pub").read_text().split()
        self.known_hosts = self.dir / "known_hosts"
        self.known_hosts.write_text(f"[{self.host}]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        self.host_key_fingerprint = subprocess.run(  # "SHA256:..."
            ["ssh-keygen", "-l", "-f", str(self.host_key)], check=True, capture_output=True, text=True
        ).stdout.split()[1]
        self.log = self.dir / "sshd.log"
        self.config = self.dir / "sshd_config"
        self.config.write_text(f"""\
ListenAddress {self.host}:{self.port}
HostKey {self.host_key}
PidFile {self.dir / "sshd.pid"}
AuthorizedKeysFile {self.dir / "authorized_keys"}
AllowUsers {self.user}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitUserEnvironment no
AllowTcpForwarding no
X11Forwarding no
MaxSessions 100
MaxStartups 100:30:200
LogLevel VERBOSE
Subsystem sftp internal-sftp
{_penalties_off()}""")
        # sshd's user must own what it reads; the client's files stay the caller's.
        for name in ("", "host_key", "host_key.pub", "other_host_key", "other_host_key.pub", "authorized_keys",
                     "sshd_config"):
            os.chown(self.dir / name, self._uid, self._gid)
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0, *, host_key: Path | None = None) -> None:
        """Start sshd and return once it answers with an SSH banner (with host_key
        instead of its own, when given)."""
        root = os.geteuid() == 0
        config = self.config
        if host_key is not None:
            config = self.dir / "sshd_config.other"
            config.write_text(self.config.read_text().replace(f"HostKey {self.host_key}\n", f"HostKey {host_key}\n"))
            os.chown(config, self._uid, self._gid)
        self._proc = subprocess.Popen(
            [SSHD, "-D", "-f", str(config), "-E", str(self.log)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, cwd=self.dir,
            user=self._uid if root else None, group=self._gid if root else None,
            extra_groups=[] if root else None,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._proc.poll() is None:
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-2.0-"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        tail = self.log.read_text(errors="replace").splitlines()[-20:] if self.log.exists() else []
        raise RuntimeError("sshd did not start:\n" + "\n".join(tail))

    def _sshd_tree(self) -> set[int]:
        """The listener and all its sshd descendants, each SIGSTOPped so that none
        forks meanwhile."""
        assert self._proc is not None
        found = {self._proc.pid}
        new = set(found)
        while new:  # re-read the tree until no new sshd process shows up
            for pid in new:
                _signal(pid, signal.SIGSTOP)
            tree = _children()
            new = {c for p in found for c in tree.get(p, []) if c not in found and _is_sshd(c)}
            found |= new
        return found

    def stop(self) -> None:
        """SIGKILL the listener and all its sshd descendants; their commands' other
        processes are left alone."""
        if self._proc is None:
            return
        if self._proc.poll() is not None:  # it died: its children are out of reach
            self._proc = None
            return
        for pid in self._sshd_tree():
            _signal(pid, signal.SIGKILL)
        self._proc.wait()
        self._proc = None

    def drop_connections(self) -> int:
        """SIGKILL every per-connection sshd process, as a network blip ends a connection
        (the client sees it closed); the listener goes on answering. Returns how many."""
        assert self._proc is not None and self._proc.poll() is None
        sessions = self._sshd_tree() - {self._proc.pid}
        for pid in sessions:
            _signal(pid, signal.SIGKILL)
        _signal(self._proc.pid, signal.SIGCONT)
        return len(sessions)

    def accepted(self) -> int:
        """How many logins the server has accepted so far (its log)."""
        return self.log.read_text(errors="replace").count("Accepted publickey") if self.log.exists() else 0

    def restart(self, *, host_key: Path | None = None) -> None:
        self.stop()
        self.start(host_key=host_key)

    def cleanup(self) -> None:
        """Stop, and remove the keys, config and log."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def ssh_command(self, *remote_argv: str, key: Path | None = None) -> list[str]:
        """An OpenSSH client argv that runs remote_argv on this server."""
        return ["ssh", "-i", str(key or self.client_key), "-p", str(self.port),
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
                f"{self.user}@{self.host}", *remote_argv]

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
