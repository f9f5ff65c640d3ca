"""Resolving binaries: --bin-dir, the cache, and the official-release download path,
tested against a local HTTP server laid out like dl.k8s.io and etcd's GitHub
releases and serving the real binaries."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
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


def test_download_verifies_and_caches_the_official_binaries(release_server, tmp_path):
    server, _ = release_server
    with pytest.raises(BinaryError) as caught:
        binaries.resolve(_settings(server.url), tmp_path, UI(), sources=["download"])
    # kubemark is never published as a binary: it is the one thing left to build.
    assert "missing kubemark" in caught.value.message
    assert "kubemark-up binaries --source build" in caught.value.message
    cache = binaries.cache_dir(tmp_path, VERSION)
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest == {
        "etcd": {"source": "download", "version": ETCD},
        **{name: {"source": "download"} for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")},
    }
    versions = {name: binaries.version_of(binaries.Binary(name, cache / name, "download")) for name in manifest}
    assert versions["etcd"] == "etcd Version: 3.6.8"
    assert versions["kube-apiserver"] == f"Kubernetes {VERSION}"
    # Each checksum was fetched and checked before its binary was accepted.
    for name in ("kube-apiserver", "kube-scheduler"):
        path = f"/release/{VERSION}/bin/linux/{binaries.arch()}/{name}"
        assert server.requests.index(path + ".sha256") < server.requests.index(path)
    assert f"/etcd/{ETCD}/SHA256SUMS" in server.requests


def test_cached_binaries_are_not_fetched_again(release_server, tmp_path, bin_dir):
    server, _ = release_server
    cache = binaries.cache_dir(tmp_path, VERSION)
    cache.mkdir(parents=True)
    for name in binaries.NAMES:
        os.symlink((bin_dir / name).resolve(), cache / name)
    manifest = {n: {"source": "download"} for n in binaries.NAMES}
    manifest["etcd"]["version"] = ETCD
    (cache / "manifest.json").write_text(json.dumps(manifest))
    before = len(server.requests)
    found = binaries.resolve(_settings(server.url), tmp_path, UI())
    assert {b.source for b in found.values()} == {"cache"}
    assert len(server.requests) == before
    # Another etcd release is not what the cache holds: only etcd is fetched again.
    with pytest.raises(BinaryError) as caught:
        binaries.resolve(_settings(server.url, etcd_version="v3.6.6"), tmp_path, UI(), sources=["download"])
    assert f"{server.url}/etcd/v3.6.6/SHA256SUMS" in caught.value.message
    assert set(server.requests[before:]) == {"/etcd/v3.6.6/SHA256SUMS"}


def test_checksum_mismatch_keeps_nothing(release_server, tmp_path):
    server, root = release_server
    sha = root / "release" / VERSION / "bin" / "linux" / binaries.arch() / "kube-scheduler.sha256"
    good = sha.read_text()
    sha.write_text("f" * 64)
    try:
        with pytest.raises(BinaryError) as caught:
            binaries.resolve(_settings(server.url), tmp_path, UI(), sources=["download"])
    finally:
        sha.write_text(good)
    assert "checksum mismatch" in caught.value.message and "kube-scheduler" in caught.value.message
    cache = binaries.cache_dir(tmp_path, VERSION)
    assert not (cache / "kube-scheduler").exists()
    assert not list(cache.glob(".download.*"))


def test_bin_dir_wins_and_must_be_complete(tmp_path, bin_dir):
    found = binaries.resolve(config.Settings(bin_dir=bin_dir), tmp_path, UI())
    assert {b.source for b in found.values()} == {"bin-dir"}
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(bin_dir / "kubemark", partial / "kubemark")
    with pytest.raises(BinaryError) as caught:
        binaries.resolve(config.Settings(bin_dir=partial), tmp_path, UI())
    assert "lacks etcd, kube-apiserver, kube-controller-manager, kube-scheduler" in caught.value.message


def test_a_build_from_another_recipe_is_stale(tmp_path, bin_dir):
    cache = binaries.cache_dir(tmp_path, VERSION)
    cache.mkdir(parents=True)
    for name in binaries.NAMES:
        os.symlink((bin_dir / name).resolve(), cache / name)
    (cache / "manifest.json").write_text(json.dumps({n: {"source": "build", "recipe": "old"} for n in binaries.NAMES}))
    with pytest.raises(BinaryError):  # stale, and nothing may be fetched or built here
        binaries.resolve(config.Settings(), tmp_path, UI(), sources=[])
    (cache / "manifest.json").write_text(
        json.dumps({n: {"source": "build", "recipe": binaries.recipe_hash(binaries.built_by(n).name)}
                    for n in binaries.NAMES})
    )
    assert {b.source for b in binaries.resolve(config.Settings(), tmp_path, UI(), sources=[]).values()} == {"cache"}


def test_sources_are_tried_in_their_order(release_server, tmp_path, monkeypatch):
    server, _ = release_server
    built = []

    def fake_build(names, settings, cache, ui):
        built.extend(names)
        raise BinaryError("no Go here")

    monkeypatch.setattr(binaries, "_build", fake_build)
    # build first: it fails, download takes over and gets all it can; kubemark stays missing.
    with pytest.raises(BinaryError) as caught:
        binaries.resolve(_settings(server.url), tmp_path, UI(), sources=["build", "download"])
    assert sorted(built) == sorted(binaries.NAMES)
    assert "missing kubemark" in caught.value.message
    # download first from nowhere: build takes over (and here fails last, so its error shows).
    built.clear()
    with pytest.raises(BinaryError) as caught:
        binaries.resolve(_settings("http://127.0.0.1:9"), tmp_path / "other", UI(), sources=["download", "build"])
    assert caught.value.message == "no Go here" and sorted(built) == sorted(binaries.NAMES)


