"""The errors kubemark-up raises, and the exit code each one ends the CLI with.

    KubemarkUpError          exit 1  something went wrong
    ├── ConfigError          exit 2  a bad flag, setting, file, or a name nobody knows
    ├── NotFoundError        exit 1  an unknown cluster or node
    ├── BinaryError          exit 1  a Kubernetes binary is missing or could not be had
    ├── HostError            exit 1  a host cannot be reached, or refused what was asked of it
    ├── ComponentError       exit 1  a process failed, exited or never became ready
    └── RunError             exit 1  a workload run failed (a refused call, a wait out of time)

Only the CLI (kubemark_up/cli/) prints them. Errors from libraries (paramiko, the Kubernetes client) are translated where
they are called, keeping what the user needs (the command, the tail of its log).
"""

from __future__ import annotations


class KubemarkUpError(Exception):
    exit_code = 1

    def __init__(self, message: str, *, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        # Shown under the one-line message: a log tail, a command's output.
        self.detail = detail


class ConfigError(KubemarkUpError):
    exit_code = 2


class NotFoundError(KubemarkUpError):
    pass


class BinaryError(KubemarkUpError):
    pass


class HostError(KubemarkUpError):
    pass


class ComponentError(KubemarkUpError):
    pass


class RunError(KubemarkUpError):
    """A workload run failed (an API call refused, a wait that ran out of time)."""
