"""SSHHost against the real unprivileged sshd (tests/support/sshd.py) when the
connection goes: killed mid-upload, dropped, the server restarted, or back with
another host key. An upload cut short never leaves a file under its name; what may
run twice is tried again on a new connection with the pinned key; what fails says
what it was doing. The policy itself: tests/unit/test_ssh_host.py. A run that rides
out a restarted sshd: test_preexisting_faults.py."""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import stat
import threading
import time
from pathlib import Path

import pytest

from kubemark_up.errors import HostError
from kubemark_up.hosts.ssh import Retry, SSHHost, SSHTarget

BIG = 128 << 20  # about kube-master's size


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big"
    with path.open("wb") as out:
        block = os.urandom(1 << 20)
        for n in range(BIG >> 20):
            out.write(n.to_bytes(8, "big") + block[8:])  # every MiB different
    return path


@pytest.fixture
def folder(sshd, tmp_path) -> Path:
    """A folder on the host that the SSH user may write."""
    made = sshd.home / f"kmup-ssh-faults-{os.getpid()}-{tmp_path.name}"
    made.mkdir(mode=0o755)
    shutil.chown(made, sshd.user)
    yield made
    shutil.rmtree(made, ignore_errors=True)


def _host(sshd, **target: object) -> SSHHost:
    settings: dict = {"host": sshd.host, "port": sshd.port, "user": sshd.user, "identity_file": sshd.client_key,
                      "known_hosts": sshd.known_hosts, "connect_timeout": 5, **target}
    return SSHHost(SSHTarget(**settings), supervisor="/nonexistent/supervise.py", retry=Retry(attempts=3, delay=0.2))


@pytest.fixture
def host(sshd):
    made = _host(sshd)
    yield made
    made.close()


def _digest(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _partial(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if ".kubemark-up." in p.name]


def _upload_until_cut(host: SSHHost, source: Path, target: Path, cut) -> list[HostError]:
    """put source to target in a thread; cut() once 8 MiB of it are on the host."""
    failed: list[HostError] = []

    def upload() -> None:
        try:
            host.put(str(target), source, mode=0o755)
        except HostError as exc:
            failed.append(exc)

    thread = threading.Thread(target=upload)
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(p.stat().st_size > 8 << 20 for p in _partial(target.parent)):
        time.sleep(0.005)
    assert _partial(target.parent), "the upload never began"
    cut()
    thread.join(timeout=120)
    assert not thread.is_alive()
    return failed


def test_an_upload_cut_off_by_a_killed_server_never_takes_its_name(sshd, host, folder, big_file):
    target = folder / "kube-master"
    host.facts()  # connected before the upload begins
    try:
        failed = _upload_until_cut(host, big_file, target, sshd.stop)
        # `cat` on the host saw its input end and exited 0, as at the end of a whole file.
        assert not target.exists()
        (error,) = failed
        assert error.message.startswith(f"lost the SSH connection to {host.name} while uploading kube-master "
                                        f"to {folder}, and opening it again failed: connection refused")
        assert "python" not in error.message and "\n" not in error.message
    finally:
        sshd.start()
    # The next upload takes the piece away, then puts a whole copy under the name.
    assert _partial(folder)
    host.put(str(folder / "small"), b"small", mode=0o600)
    assert _partial(folder) == []
    host.put(str(target), big_file, mode=0o755)
    assert _digest(target) == _digest(big_file) and stat.S_IMODE(target.stat().st_mode) == 0o755
    assert _partial(folder) == []


def test_an_upload_rides_out_a_dropped_connection(sshd, host, folder, big_file):
    target = folder / "kube-master"
    host.facts()
    logins = sshd.accepted()
    failed = _upload_until_cut(host, big_file, target, sshd.drop_connections)
    assert failed == []
    assert sshd.accepted() == logins + 1  # one new connection, and the whole file again on it
    assert _digest(target) == _digest(big_file) and stat.S_IMODE(target.stat().st_mode) == 0o755
    assert _partial(folder) == []


def test_reads_go_on_after_the_server_restarts(sshd, host, folder):
    (folder / "etcd.log").write_text("before\n")
    assert host.read_text(str(folder / "etcd.log")) == "before\n"
    logins = sshd.accepted()
    sshd.restart()  # every connection gone, the same port and key again
    assert host.read_text(str(folder / "etcd.log")) == "before\n"
    assert host.facts().uid == os.stat(folder).st_uid
    assert sshd.accepted() == logins + 1


def test_a_read_cut_off_says_what_it_was_doing(sshd, host):
    arrived, release = threading.Event(), threading.Event()

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            arrived.set()
            release.wait(60)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    failed: list[HostError] = []

    def fetch() -> None:
        try:
            host.fetch(url, timeout=60)
        except HostError as exc:
            failed.append(exc)

    thread = threading.Thread(target=fetch)
    thread.start()
    try:
        assert arrived.wait(60)
        sshd.stop()
        thread.join(timeout=60)
    finally:
        release.set()
        sshd.start()
        server.shutdown()
    (error,) = failed
    assert error.message == (f"lost the SSH connection to {host.name} while reading {url}, "
                             "and opening it again failed: connection refused")
    # Once the server is back, the same host goes on.
    assert host.facts().cpus >= 1


def test_a_changed_host_key_is_refused_on_reopening(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    pinned: list[tuple[str, bool]] = []
    host = SSHHost(SSHTarget(host=sshd.host, port=sshd.port, user=sshd.user, identity_file=sshd.client_key,
                             known_hosts=empty, trust_unknown_host=True, connect_timeout=5),
                   supervisor="/nonexistent/supervise.py", on_host_key=lambda key, trusted: pinned.append((key, trusted)),
                   retry=Retry(attempts=3, delay=0.2))
    try:
        host.facts()
        assert [trusted for _, trusted in pinned] == [True]
        logins = sshd.accepted()
        sshd.restart(host_key=sshd.other_host_key)  # the same address, another machine
        with pytest.raises(HostError) as caught:
            host.facts()
        # Gone before the call (or, if paramiko had not noticed yet, while it).
        assert caught.value.message.startswith(f"lost the SSH connection to {host.name} ")
        assert "checking the host (Python, CPUs, folders), and opening it again failed" in caught.value.message
        assert "does not match the key pinned in this cluster's state" in caught.value.message
        assert sshd.accepted() == logins  # refused before any login
        assert len(pinned) == 1  # and never pinned anew, although trust_unknown_host is set
    finally:
        host.close()
        sshd.restart()
