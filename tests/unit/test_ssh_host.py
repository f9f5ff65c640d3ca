"""SSHHost's policy after a dropped connection, without a server: which agent calls are
tried again and how often, what the one-line errors say; and the agent's check of an
upload before it takes its final name. The same against a real sshd, with real drops:
tests/cluster/test_ssh_faults.py."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from kubemark_up.errors import HostError
from kubemark_up.hosts import agent
from kubemark_up.hosts import ssh as ssh_module
from kubemark_up.hosts.ssh import RETRIED_VERBS, Retry, SSHHost, SSHTarget, doing

NAME = "kubernetes@10.0.0.5:22"


def test_the_default_policy_waits_longer_each_time_and_gives_up():
    assert Retry().waits() == [1.0, 2.0, 4.0]
    assert Retry(attempts=1).waits() == []
    assert Retry(attempts=3, delay=0.5, factor=3).waits() == [0.5, 1.5]


def test_only_what_may_run_twice_is_tried_again():
    assert set(agent.VERBS) >= RETRIED_VERBS
    for read in ("alive", "fetch", "probe", "read", "facts", "supervision", "usage", "sha256", "listdir"):
        assert read in RETRIED_VERBS
    # A second start would start twice; made/removed answers would change.
    for once in ("spawn", "mkdirs", "rmdir_if_empty", "install"):
        assert once not in RETRIED_VERBS


def test_every_verb_is_described_without_the_bootstrap():
    for verb in agent.VERBS:
        said = doing(verb, {})
        assert said and "python" not in said and "import" not in said and "agent's" not in said, verb
    assert doing("fetch", {"url": "https://127.0.0.1:10259/metrics"}) == "reading https://127.0.0.1:10259/metrics"
    spec = {"argv": ["python3", "/srv/bin/supervise.py"], "log": "/srv/c/logs/kube-apiserver.log"}
    assert doing("spawn", {"specs": [spec]}) == "starting kube-apiserver"
    assert doing("spawn", {"specs": [spec, spec, spec]}) == "starting kube-apiserver and 2 more"


class _Transport:
    def __init__(self) -> None:
        self.active = True

    def is_active(self) -> bool:
        return self.active


class _Client:
    """What SSHHost asks of a paramiko client when a call fails."""

    def __init__(self) -> None:
        self.transport = _Transport()

    def get_transport(self) -> _Transport:
        return self.transport

    def close(self) -> None:
        self.transport.active = False


@pytest.fixture
def dropping(monkeypatch):
    """An SSHHost whose every connection drops in the middle of each agent call; how
    many calls reached the host, and the waits between them."""
    host = SSHHost(SSHTarget(host="10.0.0.5", port=22, user="kubernetes"), supervisor="/x/supervise.py")
    seen = {"calls": 0, "waits": []}

    def connect() -> _Client:
        with host._lock:
            if host._client is None:
                host._client = _Client()
            return host._client

    def agent_call(client, verb, arguments, what):
        seen["calls"] += 1
        client.transport.active = False  # the connection went away under it
        raise OSError("Socket is closed")

    monkeypatch.setattr(host, "connect", connect)
    monkeypatch.setattr(host, "_agent", agent_call)
    monkeypatch.setattr(ssh_module.time, "sleep", lambda seconds: seen["waits"].append(seconds))
    return host, seen


def test_a_read_is_tried_again_then_says_what_it_was_doing(dropping):
    host, seen = dropping
    with pytest.raises(HostError) as caught:
        host.fetch("https://127.0.0.1:10259/metrics")
    assert caught.value.message == f"lost the SSH connection to {NAME} while reading https://127.0.0.1:10259/metrics"
    assert seen["calls"] == 4 and seen["waits"] == [1.0, 2.0, 4.0]


def test_a_process_start_is_not_tried_again(dropping):
    host, seen = dropping
    with pytest.raises(HostError) as caught:
        host.spawn(["kube-apiserver"], log="/srv/c/logs/kube-apiserver.log", env={}, marker="m")
    assert caught.value.message == f"lost the SSH connection to {NAME} while starting kube-apiserver"
    assert "python" not in caught.value.message
    assert seen["calls"] == 1 and seen["waits"] == []


def test_a_host_that_does_not_come_back_is_waited_for_once(monkeypatch):
    host = SSHHost(SSHTarget(host="10.0.0.5", port=22, user="kubernetes"), supervisor="/x/supervise.py",
                   retry=Retry(attempts=3))
    attempts, waits = [], []

    def connect():
        attempts.append(1)
        raise ssh_module._Reopen(f"SSH to {NAME}: connection refused", final=False)

    monkeypatch.setattr(host, "connect", connect)
    monkeypatch.setattr(ssh_module.time, "sleep", waits.append)
    with pytest.raises(HostError) as caught:
        host.read_text("/srv/c/logs/etcd.log")
    assert caught.value.message == (f"lost the SSH connection to {NAME} before reading /srv/c/logs/etcd.log, "
                                    "and opening it again failed: connection refused")
    assert len(attempts) == 3 and waits == [1.0, 2.0]
    # Until it answers again, later calls try once each rather than wait again.
    with pytest.raises(HostError):
        host.find_marked("m")
    assert len(attempts) == 4 and waits == [1.0, 2.0]


def test_a_changed_host_key_on_reopening_is_not_tried_again(monkeypatch):
    host = SSHHost(SSHTarget(host="10.0.0.5", port=22, user="kubernetes"), supervisor="/x/supervise.py")
    attempts = []

    def connect():
        attempts.append(1)
        raise ssh_module._Reopen(f"SSH to {NAME}: the host key (SHA256:x) does not match the key pinned", final=True)

    monkeypatch.setattr(host, "connect", connect)
    with pytest.raises(HostError, match="does not match the key pinned"):
        host.facts()
    assert len(attempts) == 1


# The agent's side of an upload ------------------------------------------------------


def _upload(tmp_path: Path, data: bytes) -> tuple[str, str]:
    temp, final = tmp_path / "kube-master.kubemark-up.1234", tmp_path / "kube-master"
    temp.write_bytes(data)
    return str(temp), str(final)


def test_a_whole_upload_takes_its_name_and_mode(tmp_path):
    data = os.urandom(4096)
    temp, final = _upload(tmp_path, data)
    agent.install(temp, final, len(data), hashlib.sha256(data).hexdigest(), 0o755)
    assert Path(final).read_bytes() == data and not Path(temp).exists()
    assert stat.S_IMODE(Path(final).stat().st_mode) == 0o755


@pytest.mark.parametrize("arrived", ["short", "changed"])
def test_a_piece_of_an_upload_never_takes_its_name(tmp_path, arrived):
    data = os.urandom(4096)
    temp, final = _upload(tmp_path, data[:1000] if arrived == "short" else data[::-1])
    with pytest.raises(agent.AgentError) as caught:
        agent.install(temp, final, len(data), hashlib.sha256(data).hexdigest(), 0o755)
    said = str(caught.value)
    assert "\n" not in said and said.startswith("kube-master arrived with ")
    assert ("1000 of 4096 bytes" if arrived == "short" else "another SHA-256") in said
    assert list(tmp_path.iterdir()) == []


def test_usage_reads_proc():
    (cpu, rss) = agent.usage([os.getpid(), 2**22 + 7])[str(os.getpid())]
    assert cpu > 0 and rss > 1 << 20
    assert list(agent.usage([2**22 + 7])) == []


def test_a_drop_then_a_host_that_does_not_answer(dropping, monkeypatch):
    host, seen = dropping
    first = host.connect

    def connect():
        if seen["calls"]:
            raise ssh_module._Reopen(f"SSH to {NAME}: connection refused", final=False)
        return first()

    monkeypatch.setattr(host, "connect", connect)
    with pytest.raises(HostError) as caught:
        host.probe("https://127.0.0.1:6443/readyz")
    assert caught.value.message == (f"lost the SSH connection to {NAME} while probing https://127.0.0.1:6443/readyz, "
                                    "and opening it again failed: connection refused")
    assert seen["calls"] == 1 and seen["waits"] == [1.0, 2.0, 4.0]
