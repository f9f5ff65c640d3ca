"""The provisioning half's engine: start, stop, status, logs and locate, the same
steps for every provider (see engine.py)."""

from kubemark_up.cluster.engine import (
    collect_logs,
    context,
    gc,
    locate,
    plan,
    recorded_settings,
    shielded,
    start,
    status,
    stop,
)

__all__ = ["collect_logs", "context", "gc", "locate", "plan", "recorded_settings", "shielded", "start", "status", "stop"]
