"""The flunder workloads' sample-apiserver goes through the master's Host: its files
put there, started with the cluster's marker, watched and stopped there, on a host
that is not this machine too (a fake Host that records the agent's verbs)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kubemark_up.hosts import Completed, Host, ProcessHandle
from kubemark_up.master import MasterPaths
from kubemark_up.run.workloads import flunder

ROOT = "/srv/kubemark/c"
STALE_CERT = f"--tls-cert-file={ROOT}/runs/old.sample-apiserver/serving.crt"


class FakeHost(Host):
    name = "fake"
    supervisor = "/nowhere/supervise.py"

    def __init__(self, *, here: bool) -> None:
        self.is_this_machine = here
        self.calls: list[tuple[str, dict]] = []
        self.files: dict[str, int] = {}  # path -> mode

    def call(self, verb: str, **arguments: Any) -> Any:
        self.calls.append((verb, arguments))
        answers = {"find_marked": [[7, 1]], "cmdlines": [["sample-apiserver", STALE_CERT]], "stop": [],
                   "remove": None, "mkdirs": [True], "free_ports": [31000], "spawn": [[42, 9]], "alive": [True]}
        return answers[verb]

    def run(self, argv: Sequence[str], *, stdin: bytes = b"", timeout: float = 60) -> Completed:
        raise AssertionError("no command runs")

    def put(self, path: str, source: bytes | Path, *, mode: int) -> None:
        self.files[path] = mode

    def get(self, path: str, local: Path) -> bool:
        raise AssertionError("nothing is fetched")

    def verbs(self, verb: str) -> list[dict]:
        return [arguments for name, arguments in self.calls if name == verb]


class FakeKube:
    def __init__(self) -> None:
        self.apiservice_made = False

    def request(self, method: str, path: str, **_: Any) -> Any:
        if path.endswith("/apiservices/v1alpha1.wardle.example.com"):
            if not self.apiservice_made:
                return None
            return {"status": {"conditions": [{"type": "Available", "status": "True"}]}}
        return {"items": []} if method == "GET" else {}


class FakeRun:
    run_id = "r1"

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster
        self.kube = FakeKube()
        self.deadline = time.monotonic() + 60
        self.created: list[str] = []

    def namespace(self, index: int = 0) -> str:
        return "run-r1-0"

    def create(self, path: str, body: dict) -> dict:
        self.created.append(body["kind"])
        return body

    def cluster_object(self, collection: str, body: dict) -> dict:
        self.kube.apiservice_made = True
        self.created.append(body["kind"])
        return body


def _cluster(host: FakeHost, tmp_path: Path) -> Any:
    paths = MasterPaths(pki_dir=f"{ROOT}/pki", kubeconfig_dir=f"{ROOT}/pki/kubeconfigs", data_dir=f"{ROOT}/run",
                        bin_dir=f"{ROOT}/bin", log_dir=f"{ROOT}/logs")
    site = SimpleNamespace(host=host, paths=paths)
    kubeconfig = tmp_path / "kubeconfig.kubemark"
    kubeconfig.write_text("apiVersion: v1\n")
    return SimpleNamespace(
        provider=SimpleNamespace(master=lambda ctx: site), marker="/home/c",
        settings=SimpleNamespace(port_bounds=(20000, 32767)), state=SimpleNamespace(ports={"etcd_client": 2379}),
        dir=SimpleNamespace(home=tmp_path, kubeconfig=kubeconfig),
    )


@pytest.mark.parametrize("here", [False, True])
def test_the_sample_apiserver_runs_through_the_masters_host(tmp_path, monkeypatch, here):
    binary = tmp_path / "sample-apiserver"
    binary.write_bytes(b"\x7fELF")
    monkeypatch.setattr(flunder.binaries, "tool", lambda name, settings, home, ui: binary)
    host = FakeHost(here=here)
    run = FakeRun(_cluster(host, tmp_path))
    server = flunder.SampleAPIServer()
    server.start(run)  # type: ignore[arg-type]

    folder = f"{ROOT}/runs/r1.sample-apiserver"
    # A killed run's server went first, with the folder its command line names.
    assert host.verbs("find_marked") == [{"marker": "/home/c#sample-apiserver"}]
    assert host.verbs("stop")[0]["handles"] == [[7, 1]]
    assert host.verbs("remove")[0]["paths"] == [f"{ROOT}/runs/old.sample-apiserver"]
    # Its files were put on the master's host (the CA's key stays here); the binary too when that is elsewhere.
    wanted = {f"{folder}/serving.crt": 0o644, f"{folder}/serving.key": 0o600, f"{folder}/kubeconfig": 0o600}
    if not here:
        wanted[f"{folder}/sample-apiserver"] = 0o755
    assert host.files == wanted
    (spawned,) = host.verbs("spawn")[0]["specs"]
    assert spawned["marker"] == "/home/c#sample-apiserver" and spawned["log"] == f"{ROOT}/logs/sample-apiserver.r1.log"
    argv = spawned["argv"]
    assert argv[0] == (str(binary) if here else f"{folder}/sample-apiserver")
    assert "--secure-port=31000" in argv and f"--etcd-certfile={ROOT}/pki/apiserver-etcd-client.crt" in argv
    assert run.created == ["Service", "APIService"]

    server.stop()
    assert host.verbs("stop")[-1]["handles"] == [[42, 9]]
    assert host.verbs("remove")[-1]["paths"] == [folder]
    assert server.handle == ProcessHandle(42, 9)
