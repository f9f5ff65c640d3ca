"""The steps of start every provider shares, one module per step key; see
kubemark_up/steps.py for what a step is and how a provider adds its own."""

from __future__ import annotations

from kubemark_up.cluster.steps import apiserver, binaries, controllers, etcd, nodes, pki, ports, stage
from kubemark_up.steps import Step


def shared_steps() -> list[Step]:
    """The steps of start every provider shares, in order. Providers add theirs among
    them by key: before "pki" for what goes into the serving certificate (an address),
    before "stage" for the host itself."""
    # The master stops in reverse start order: the apiserver keeps retrying a dead etcd
    # for 30 s after SIGTERM, so etcd goes last.
    return [binaries.STEP, ports.STEP, pki.STEP, stage.STEP, etcd.STEP, apiserver.STEP, controllers.STEP, nodes.STEP]


__all__ = ["shared_steps"]
