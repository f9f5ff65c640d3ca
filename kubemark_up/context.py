"""What every step works with: the cluster's folder, its state, its settings, the UI."""

from __future__ import annotations

from dataclasses import dataclass

from kubemark_up.config import Settings
from kubemark_up.hosts import ProcessHandle
from kubemark_up.state import ClusterDir, ClusterState, ProcessRecord
from kubemark_up.ui import UI


@dataclass
class Context:
    dir: ClusterDir
    state: ClusterState
    settings: Settings
    ui: UI

    def save(self) -> None:
        self.dir.save(self.state)

    @staticmethod
    def handle(record: ProcessRecord) -> ProcessHandle | None:
        if record.pid is None or record.create_time is None:
            return None
        return ProcessHandle(record.pid, record.create_time)
