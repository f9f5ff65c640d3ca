"""The gce provider: the master on a Compute Engine VM that kubemark-up makes; the
hollow nodes as pods on a root cluster or on the VM.

settings.py: the `gce:` settings, the master's size, the resources' names and marks;
resources.py: one record per kind of cloud resource (body, calls, dry-run lines);
sshkeys.py: the cluster's SSH key on the VM, and the VM's host key checked;
api.py: the Compute calls; provider.py: the provider (its steps, stop, sweep, gc).
"""

from kubemark_up.providers.gce.provider import GCEProvider
from kubemark_up.providers.gce.settings import (
    KEY_FILE,
    GCESettings,
    master_cores,
    master_disk_gb,
    names,
    owner,
    root_disk_gb,
)

__all__ = ["KEY_FILE", "GCEProvider", "GCESettings", "master_cores", "master_disk_gb", "names", "owner", "root_disk_gb"]
