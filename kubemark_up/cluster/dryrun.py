"""--dry-run: what start would make, drawn from the steps start would run (each
step's title, and what its plan says it would make); nothing is made or written."""

from __future__ import annotations

from pathlib import Path

from kubemark_up.cluster.steps import shared_steps
from kubemark_up.config import Settings
from kubemark_up.providers import load
from kubemark_up.providers.base import ClusterContext
from kubemark_up.state import ClusterDir, ClusterInfo, ClusterState
from kubemark_up.ui import UI


def plan(settings: Settings, home: Path, ui: UI) -> list[str]:
    """The lines --dry-run prints: the provider's steps in order, each with its plan
    indented under it."""
    provider = load(settings)
    info = ClusterInfo(name=settings.name, provider=provider.name, settings=settings.model_dump(mode="json"))
    ctx = ClusterContext(dir=ClusterDir(home, settings.name), info=info, state=ClusterState(), settings=settings, ui=ui,
                         provider=provider)
    try:
        lines = ["start would, in order:"]
        for step in provider.steps(shared_steps()):
            lines.append(f"- {step.title or step.key}")
            if step.plan is not None:
                lines += [f"  {line}" for line in step.plan(ctx)]
        return lines
    finally:
        provider.close()

