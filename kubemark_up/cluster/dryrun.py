"""--dry-run: what start would make; nothing is made or written."""

from __future__ import annotations

from pathlib import Path

from kubemark_up.cluster.steps import shared_steps
from kubemark_up.config import Settings
from kubemark_up.context import Context
from kubemark_up.providers import load
from kubemark_up.state import ClusterDir, ClusterInfo, ClusterState
from kubemark_up.ui import UI


def plan(settings: Settings, home: Path, ui: UI) -> list[str]:
    """--dry-run: what start would make, from the provider; nothing is made or written."""
    provider = load(settings)
    info = ClusterInfo(name=settings.name, provider=provider.name, settings=settings.model_dump(mode="json"))
    ctx = Context(dir=ClusterDir(home, settings.name), info=info, state=ClusterState(), settings=settings, ui=ui,
                  provider=provider)
    try:
        return provider.plan(ctx, provider.steps(shared_steps()))
    finally:
        provider.close()

