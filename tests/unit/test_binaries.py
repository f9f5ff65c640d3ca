"""Resolving binaries: --bin-dir, the cache, and the official-release download path,
tested against a local HTTP server laid out like dl.k8s.io and etcd's GitHub
releases and serving the real binaries."""

from __future__ import annotations

import hashlib
import http.server
import os
import tarfile
import threading
from pathlib import Path

import pytest

from kubemark_up import binaries, config
from kubemark_up.errors import BinaryError
from kubemark_up.ui import UI

VERSION = config.DEFAULT_KUBERNETES_VERSION
ETCD = config.DEFAULT_ETCD_VERSION


class _Server:
    def __init__(self, root: Path) -> None:
        self.requests: list[str] = []
        requests = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def log_message(self, *args):
                requests.append(self.path)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def release_server(tmp_path_factory, bin_dir):
    """dl.k8s.io/release/<v>/bin/linux/<arch>/<name>(.sha256) and
    github.com/etcd-io/etcd/releases/download/<v>/etcd-<v>-linux-<arch>.tar.gz + SHA256SUMS."""
    root = tmp_path_factory.mktemp("releases")
    arch = binaries.arch()
    kube = root / "release" / VERSION / "bin" / "linux" / arch
    kube.mkdir(parents=True)
    real = (bin_dir / "kube-apiserver").resolve()
    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        os.symlink(real, kube / name)  # the built multi-call binary answers to each name
        (kube / f"{name}.sha256").write_text(_sha(real))
    etcd = root / "etcd" / ETCD
    etcd.mkdir(parents=True)
    archive = etcd / f"etcd-{ETCD}-linux-{arch}.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(real, arcname=f"etcd-{ETCD}-linux-{arch}/etcd")
    (etcd / "SHA256SUMS").write_text(f"{'0' * 64}  other.zip\n{_sha(archive)}  {archive.name}\n")
    server = _Server(root)
    yield server, root
    server.close()


def _settings(server_url: str, **extra) -> config.Settings:
    return config.Settings(release_url=f"{server_url}/release", etcd_release_url=f"{server_url}/etcd", **extra)








def test_unreachable_release_server_is_one_line(tmp_path):
    settings = _settings("http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(BinaryError) as caught:
        binaries.resolve(settings, tmp_path, UI(), sources=["download"])
    assert caught.value.message.startswith("could not download http://127.0.0.1:9/")






def test_build_is_pinned_to_the_recipe_version(tmp_path):
    with pytest.raises(BinaryError) as caught:
        binaries.resolve(config.Settings(kubernetes_version="v1.35.0"), tmp_path, UI(), sources=["build"])
    assert f"the Go recipe builds Kubernetes {VERSION}" in caught.value.message
    assert binaries.pinned_version() == VERSION




def test_each_output_has_its_own_recipe(tmp_path):
    """A change to one part of the recipe makes only what depends on it stale: the
    master's main.go is not the kubelet's, and crane lives in a module of its own."""
    hashes = {name: binaries.recipe_hash(name) for name in binaries.OUTPUTS}
    assert len(set(hashes.values())) == len(hashes)
    assert binaries.built_by("kube-scheduler").name == "kube-master"
    assert binaries.built_by("crane").module == "tools"
    commands = binaries.build_commands(tmp_path, VERSION)
    assert commands["kubelet"][-1] == "k8s.io/kubernetes/cmd/kubelet"
    assert "gitVersion=v1.36.3" in " ".join(commands["kubelet"]) and "gitVersion" not in " ".join(commands["crane"])
