"""The gce provider's settings and sizing: GCESettings (the `gce:` section), the
master's size by node count as the legacy kube-up scripts chose it, and the names
and marks of the cloud resources a cluster makes.

Resource names (GCE: at most 63 characters; cluster names are at most 40):
kubemark-up-<name>-{master,pd,events-pd,ip,https,ssh}.

Marks: every resource carries the labels kubemark-up-cluster=<name> and
kubemark-up-owner=<owner> (firewall rules, which have no labels: both in their
description), the owner a short hash of the user, the machine and the kubemark-up
home that made it, so that gc and a stop without state touch only what this owner
made, also in a project others use.
"""

from __future__ import annotations

import getpass
import hashlib
import ipaddress
import os
import posixpath
import re
import socket
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from kubemark_up.config import IPAddress, ProviderSettings

LABEL = "kubemark-up-cluster"
OWNER_LABEL = "kubemark-up-owner"
PREFIX = "kubemark-up-"
# The firewall rules' mark (they have no labels): the description begins with it.
DESCRIPTION = "kubemark-up cluster {name} (owner {owner}"
KEY_FILE = "gce-ssh-key"  # in pki/: the cluster's SSH key, 0600
MASTER_PD_DEVICE = "master-pd"
EVENTS_PD_DEVICE = "master-event-pd"
HTTPS_PORT = 443

# Legacy get-master-size (cluster/kubemark/gce/config-default.sh via kube-up's
# util.sh): the master's vCPUs by node count, above each bound.
_CORES = ((3000, 64), (500, 32), (250, 16), (100, 8), (10, 4), (5, 2))


def master_cores(nodes: int) -> int:
    return next((cores for above, cores in _CORES if nodes > above), 1)


def master_disk_gb(nodes: int) -> int:
    """Legacy get-master-disk-size: 20 GB; 100 above 500 nodes; 200 above 3,000."""
    return 200 if nodes > 3000 else 100 if nodes > 500 else 20


def root_disk_gb(nodes: int) -> int:
    """Legacy get-master-root-disk-size: 20 GB; 100 above 500 nodes; 500 above 3,000."""
    return 500 if nodes > 3000 else 100 if nodes > 500 else 20


def machine_type(settings: GCESettings, nodes: int) -> str:
    """The master VM's: the one set, else n1-standard with the legacy vCPU count."""
    return settings.machine_type or f"n1-standard-{master_cores(nodes)}"


def names(cluster: str) -> dict[str, str]:
    base = PREFIX + cluster
    return {"instance": f"{base}-master", "disk": f"{base}-pd", "events_disk": f"{base}-events-pd",
            "address": f"{base}-ip", "firewall": f"{base}-https", "ssh_firewall": f"{base}-ssh",
            "tag": f"{base}-master"}


def owner(home: Path) -> str:
    """Who made a resource, as a label value: a short hash of the user, this machine's
    name and the kubemark-up home (its absolute path). The same for every command run
    from that home by that user; another home, user or machine is another owner."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container): the uid will do
        user = str(os.getuid())
    text = f"{user}@{socket.gethostname()}:{home.expanduser().absolute()}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


_ZONE = re.compile(r"[a-z]+-[a-z]+\d+-[a-z]")
_REGION = re.compile(r"[a-z]+-[a-z]+\d+")


class GCESettings(ProviderSettings):
    """Documented in config/default.yaml, under `gce:`."""

    project: str
    zone: str = "us-central1-b"
    region: str | None = None
    network: str = "default"
    subnetwork: str | None = None
    machine_type: str | None = None
    disk_type: str = "pd-ssd"
    disk_size_gb: int | None = Field(None, ge=10, le=65536)
    root_disk_size_gb: int | None = Field(None, ge=10, le=65536)
    events_disk: bool = False
    image: str = "projects/debian-cloud/global/images/family/debian-12"
    source_ranges: list[str] = Field(default_factory=list)
    ssh_user: str = "kubemark-up"
    ssh_port: int = Field(22, ge=1, le=65535)
    connect_timeout: float = Field(10, gt=0)
    ssh_wait_timeout: float = Field(300, gt=0)
    python: str = "python3"
    remote_root: str = "/mnt/disks/master-pd/kubemark-up"
    events_root: str = "/mnt/disks/master-event-pd/kubemark-up"
    bind_address: IPAddress = "0.0.0.0"
    operation_timeout: float = Field(600, gt=0)
    api_retry_timeout: float = Field(120, gt=0)
    host_key_wait_timeout: float = Field(60, ge=0)

    @field_validator("project")
    @classmethod
    def _project(cls, value: str) -> str:
        if not re.fullmatch(r"(?:[-a-z0-9.]+:)?[a-z][-a-z0-9]{4,28}[a-z0-9]", value):
            raise ValueError("a project ID: 6-30 lower-case letters, digits or '-', starting with a letter")
        return value

    @field_validator("zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        if not _ZONE.fullmatch(value):
            raise ValueError("a zone like us-central1-b")
        return value

    @field_validator("region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is not None and not _REGION.fullmatch(value):
            raise ValueError("a region like us-central1")
        return value

    @field_validator("disk_size_gb", "root_disk_size_gb", mode="before")
    @classmethod
    def _gigabytes(cls, value: Any) -> Any:
        # The legacy variables say "20GB".
        if isinstance(value, str) and re.fullmatch(r"\d+\s*GB", value, re.I):
            return int(value[:-2])
        return value

    @field_validator("source_ranges", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            return [part.strip() for item in value for part in str(item).split(",") if part.strip()]
        return value

    @field_validator("source_ranges")
    @classmethod
    def _ranges(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=True)
            except ValueError:
                raise ValueError(f"{item!r} is not a network in CIDR form") from None
        return value

    @field_validator("remote_root", "events_root")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not posixpath.isabs(value):
            raise ValueError("must be an absolute path on the VM")
        return posixpath.normpath(value)

    @model_validator(mode="after")
    def _region_of_zone(self) -> GCESettings:
        if self.region is not None and not self.zone.startswith(self.region + "-"):
            raise ValueError(f"region: zone {self.zone} is not in region {self.region}")
        return self

    @property
    def region_name(self) -> str:
        return self.region or self.zone.rsplit("-", 1)[0]


def network(settings: GCESettings) -> str:
    return f"projects/{settings.project}/global/networks/{settings.network}"
