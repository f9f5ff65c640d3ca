"""Where a command runs: one small interface (Host), implemented for this machine
(LocalHost). An SSH host is the next implementation; callers do not change."""

from kubemark_up.hosts.base import MARKER_ENV, Host, ProcessHandle, Supervision, supervision_file
from kubemark_up.hosts.local import LocalHost

__all__ = ["MARKER_ENV", "Host", "LocalHost", "ProcessHandle", "Supervision", "supervision_file"]
