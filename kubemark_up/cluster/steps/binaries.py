"""Step "binaries": find, download or build the Kubernetes binaries start needs."""

from __future__ import annotations

from kubemark_up import binaries
from kubemark_up.providers.base import ClusterContext
from kubemark_up.steps import Step


def run(ctx: ClusterContext) -> None:
    if binaries.cached(ctx.settings, ctx.dir.home):
        with ctx.ui.step("find Kubernetes binaries"):
            found = binaries.resolve(ctx.settings, ctx.dir.home, ctx.ui)
    else:  # a download or build shows its own status lines
        found = binaries.resolve(ctx.settings, ctx.dir.home, ctx.ui)
    ctx.state.binaries = {name: str(binary.path) for name, binary in found.items()}


STEP = Step("binaries", "", run)  # shows download or build progress itself
