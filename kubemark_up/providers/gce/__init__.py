"""The gce provider (see provider.py): the master on a Compute Engine VM that
kubemark-up makes; the hollow nodes as pods on a root cluster or on the VM."""

from kubemark_up.providers.gce.provider import (
    KEY_FILE,
    GCEProvider,
    GCESettings,
    master_cores,
    master_disk_gb,
    names,
    root_disk_gb,
)

__all__ = ["KEY_FILE", "GCEProvider", "GCESettings", "master_cores", "master_disk_gb", "names", "root_disk_gb"]
