"""Where a command runs: one small interface (Host), implemented for this machine
(LocalHost) and for another one over SSH (SSHHost, in hosts.ssh, imported only by
the providers that use it). Process work on either is done by the host agent."""

from kubemark_up.hosts.base import MARKER_ENV, Completed, Facts, Host, ProcessHandle, Supervision, supervision_file
from kubemark_up.hosts.local import LocalHost

__all__ = ["MARKER_ENV", "Completed", "Facts", "Host", "LocalHost", "ProcessHandle", "Supervision", "supervision_file"]
