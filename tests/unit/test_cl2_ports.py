"""What clusterloader2 needs of a master it reaches over SSH: the controller-manager,
scheduler and etcd metrics on the ports its code fixes (10257, 10259, 2382), on the
providers whose master is reached over SSH; free ones on local, or when asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubemark_up.context import Context
from kubemark_up.master import STANDARD_METRICS_PORTS
from kubemark_up.providers import load
from kubemark_up.providers.registry import resolve_settings
from kubemark_up.state import ClusterDir, ClusterInfo, ClusterState
from kubemark_up.ui import UI

ENVIRON = {
    "local": {},
    "preexisting": {"KUBEMARK_UP_PREEXISTING_HOST": "10.0.0.5"},
    "gce": {"KUBEMARK_UP_GCE_PROJECT": "my-project", "KUBEMARK_UP_GCE_SOURCE_RANGES": "192.0.2.1/32"},
}


def _fixed(tmp_path: Path, provider: str, **extra: str) -> dict[str, int]:
    settings = resolve_settings(flags={"provider": provider, "nodes": 1}, environ={**ENVIRON[provider], **extra})
    chosen = load(settings)
    info = ClusterInfo(name="c", provider=provider, settings=settings.model_dump(mode="json"))
    ctx = Context(dir=ClusterDir(tmp_path, "c"), info=info, state=ClusterState(), settings=settings, ui=UI(),
                  provider=chosen)
    return chosen.fixed_ports(ctx)


def test_clusterloader2s_ports_are_what_its_code_fixes():
    assert STANDARD_METRICS_PORTS == {"controller_manager": 10257, "scheduler": 10259, "etcd_metrics": 2382}


@pytest.mark.parametrize("provider", ["preexisting", "gce"])
def test_a_master_over_ssh_serves_metrics_on_the_standard_ports(tmp_path, provider):
    fixed = _fixed(tmp_path, provider)
    assert {name: fixed[name] for name in STANDARD_METRICS_PORTS} == STANDARD_METRICS_PORTS
    assert fixed.get("apiserver") == (443 if provider == "gce" else None)
    assert _fixed(tmp_path, provider, KUBEMARK_UP_APISERVER_PORT="6443")["apiserver"] == 6443
    # Asked not to (several clusters on one host): picked free, as locally.
    assert not set(_fixed(tmp_path, provider, KUBEMARK_UP_STANDARD_METRICS_PORTS="false")) & set(STANDARD_METRICS_PORTS)


def test_a_local_master_picks_free_ports(tmp_path):
    assert _fixed(tmp_path, "local") == {}
    assert _fixed(tmp_path, "local", KUBEMARK_UP_APISERVER_PORT="6443") == {"apiserver": 6443}
