"""The provisioning half's engine: start and stop (engine.py) through the same steps
for every provider (steps/), the master's supervision (supervision.py), status, logs
and locate (inspect.py), --dry-run (dryrun.py) and gc (gc.py)."""

from kubemark_up.cluster.dryrun import plan
from kubemark_up.cluster.engine import context, recorded_settings, shielded, start, stop
from kubemark_up.cluster.gc import gc
from kubemark_up.cluster.inspect import collect_logs, locate, status

__all__ = ["collect_logs", "context", "gc", "locate", "plan", "recorded_settings", "shielded", "start", "status", "stop"]
