"""Fixtures of the cluster tests of one provider: cloud (gce: tests/support/gce_cloud.py)
and remote (preexisting: tests/support/remote_host.py)."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.support.cli import CLI, kubemark_tmp_files, marked_processes
from tests.support.gce_cloud import Cloud, _host_key
from tests.support.gce_endpoint import ComputeEndpoint
from tests.support.remote_host import Remote


@pytest.fixture
def cloud(tmp_path, bin_dir, sshd):
    keys = sshd.dir / "authorized_keys"
    endpoint = ComputeEndpoint(op_seconds=0.05, authorized_keys=keys, host_keys=[_host_key(sshd)]).start()
    root = sshd.home / f"kmup-gce-{os.getpid()}-{tmp_path.name}"
    root.mkdir(mode=0o755)
    shutil.chown(root, sshd.user)
    made = Cloud(cli=CLI(home=tmp_path / "home", bin_dir=bin_dir), endpoint=endpoint, sshd=sshd, root=root,
                 keys_before=keys.read_text())
    yield made
    home = made.cli.home
    for name in [p.name for p in home.iterdir() if p.is_dir() and p.name != "bin"] if home.exists() else []:
        made.stop(name)
        for process in marked_processes(home / name):
            process.kill()
    endpoint.stop()
    keys.write_text(made.keys_before)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def remote(tmp_path, bin_dir, sshd) -> Remote:
    cli = CLI(home=tmp_path / "home", bin_dir=bin_dir)
    root = sshd.home / f"kmup-srv-{os.getpid()}-{tmp_path.name}"
    made = Remote(cli=cli, sshd=sshd, root=root, tmp_before=kubemark_tmp_files())
    yield made
    for name in [p.name for p in cli.home.iterdir() if p.is_dir() and p.name != "bin"] if cli.home.exists() else []:
        cli.run("stop", "--name", name)
