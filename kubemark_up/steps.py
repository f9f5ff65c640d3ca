"""The steps `start` is made of, and how a provider adds its own (the shared steps
are in kubemark_up/cluster/steps/, one module per key).

A step is recorded in state.json as "started" before it acts and "done" after. Its
undo is what `stop` runs for it: stop walks the recorded steps backwards, whatever
the provider, and undoes each one that started (an undo must therefore cope with a
step that stopped half way, and with being run twice).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kubemark_up.context import Context


@dataclass(frozen=True)
class Step:
    key: str  # its name in state.steps; unique
    title: str  # its status line; "" for steps that show their own progress
    run: Callable[[Context], None]
    # Returns the problems it could not solve, one line each; [] when all is undone.
    undo: Callable[[Context], list[str]] | None = None
    undo_title: str = ""  # its status line in stop; "" shows none
    # For --dry-run: what it would make or start, one line each (a cloud resource, a
    # Kubernetes object, a set of processes), creating nothing; printed indented under
    # its title. None: its title says it all.
    plan: Callable[[Context], list[str]] | None = None


def insert(steps: Sequence[Step], *, before: str | None = None, after: str | None = None,
           new: Sequence[Step]) -> list[Step]:
    """steps with new placed just before (or after) the step keyed so."""
    keys = [step.key for step in steps]
    anchor = before if before is not None else after
    if anchor not in keys:
        raise ValueError(f"no step {anchor!r} among {keys}")
    at = keys.index(anchor) + (0 if before is not None else 1)
    return [*steps[:at], *new, *steps[at:]]
