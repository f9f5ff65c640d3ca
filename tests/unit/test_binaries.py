"""Resolving binaries with none at hand: the one-line errors, the build's version pin,
and the Go recipe's outputs, each with its own module, command and hash (the cache
and download paths, which need the real binaries, are in tests/cluster)."""

from __future__ import annotations

import pytest

from kubemark_up import binaries, config
from kubemark_up.errors import BinaryError
from kubemark_up.ui import UI

VERSION = config.DEFAULT_KUBERNETES_VERSION


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
    assert binaries.built_by("crane").module == "gobuild/tools"
    commands = binaries.build_commands(tmp_path, VERSION)
    assert commands["kubelet"][-1] == "k8s.io/kubernetes/cmd/kubelet"
    assert "gitVersion=v1.36.3" in " ".join(commands["kubelet"]) and "gitVersion" not in " ".join(commands["crane"])


def test_the_fleet_is_a_module_of_its_own_on_the_recipes_release(tmp_path):
    """kubemark-fleet builds from kubemark_up/fleet, stamped like the master, against the
    Kubernetes release the recipe pins; its Go tests are no part of what it is built from."""
    fleet = binaries.OUTPUTS["kubemark-fleet"]
    assert (fleet.module, fleet.package) == ("fleet", ".")
    assert not any(name.startswith("gobuild/") for name in fleet.files)
    assert "fleet/main.go" in fleet.files and not any(name.endswith("_test.go") for name in fleet.files)
    go_mod = (binaries.PACKAGE / "fleet" / "go.mod").read_text()
    assert f"\tk8s.io/kubernetes {binaries.pinned_version()}\n" in go_mod
    command = binaries.build_commands(tmp_path, VERSION)["kubemark-fleet"]
    assert command == binaries.build_commands(tmp_path, VERSION)["kube-master"][:-2] + [str(tmp_path / "kubemark-fleet"), "."]
