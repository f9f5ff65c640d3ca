"""One typed settings object, resolved from defaults < --config file < environment < flags.

Every setting can be set in the environment as KUBEMARK_UP_<NAME>; the names the
legacy start-kubemark.sh users already know (NUM_NODES, APISERVER_TEST_ARGS, ...)
are accepted too, listed in LEGACY_ENV. config/default.yaml documents them all.

Each provider declares its own settings (a ProviderSettings model): in the config
file under the provider's name (`preexisting: {host: ...}`), in the environment as
KUBEMARK_UP_<PROVIDER>_<NAME> or the provider's legacy names. Only the chosen
provider's are read, and they are checked with the rest, before anything is made.
The node engines' own section (pods:) is read alike, by the model the provider's
spec names: resolve is handed the lookups, and this module imports no provider or engine.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kubemark_up import config_sources as sources
from kubemark_up.errors import ConfigError

ENV_PREFIX = "KUBEMARK_UP_"
DEFAULT_KUBERNETES_VERSION = "v1.36.3"
DEFAULT_ETCD_VERSION = "v3.6.8"

# Legacy names, most specific first. In the legacy scripts KUBEMARK_<X> is the
# kubemark cluster's own value of <X> (plain <X> belonged to the root cluster),
# so it wins over <X>. An explicit list, not blanket prefix stripping.
LEGACY_ENV: dict[str, tuple[str, ...]] = {
    "provider": ("CLOUD_PROVIDER",),
    "nodes": ("KUBEMARK_NUM_NODES", "NUM_NODES"),
    "service_cluster_ip_range": ("SERVICE_CLUSTER_IP_RANGE",),
    "cluster_cidr": ("CLUSTER_IP_RANGE",),
    "dns_domain": ("DNS_DOMAIN",),
    "allocate_node_cidrs": ("ALLOCATE_NODE_CIDRS",),
    "terminated_pod_gc_threshold": ("TERMINATED_POD_GC_THRESHOLD",),
    "feature_gates": ("KUBE_FEATURE_GATES", "FEATURE_GATES"),
    "runtime_config": ("RUNTIME_CONFIG",),
    "storage_media_type": ("STORAGE_MEDIA_TYPE",),
    "etcd_compaction_interval_sec": ("KUBEMARK_ETCD_COMPACTION_INTERVAL_SEC", "ETCD_COMPACTION_INTERVAL_SEC"),
    "apiserver_extra_args": ("KUBEMARK_APISERVER_TEST_ARGS", "APISERVER_TEST_ARGS"),
    "controller_manager_extra_args": ("KUBEMARK_CONTROLLER_MANAGER_TEST_ARGS", "CONTROLLER_MANAGER_TEST_ARGS"),
    "scheduler_extra_args": ("KUBEMARK_SCHEDULER_TEST_ARGS", "SCHEDULER_TEST_ARGS"),
    "etcd_extra_args": ("ETCD_TEST_ARGS",),
    "log_level": ("TEST_CLUSTER_LOG_LEVEL",),
    "hollow_kubelet_log_level": ("HOLLOW_KUBELET_TEST_LOG_LEVEL",),
    "hollow_proxy_log_level": ("HOLLOW_PROXY_TEST_LOG_LEVEL",),
    "hollow_kubelet_extra_args": ("HOLLOW_KUBELET_TEST_ARGS",),
    "hollow_proxy_extra_args": ("HOLLOW_PROXY_TEST_ARGS",),
    "hollow_node_labels": ("HOLLOW_NODE_LABELS",),
    "kube_api_content_type": ("TEST_CLUSTER_API_CONTENT_TYPE",),
    "allowed_not_ready": ("ALLOWED_NOTREADY_NODES",),
}

# The legacy scripts spelled one provider differently.
_PROVIDER_ALIASES = {"pre-existing": "preexisting"}

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")
_NAME_RULE = "must be 1-40 lower-case letters, digits or '-', starting and ending with a letter or digit"
_VERSION_RE = re.compile(r"^v\d+\.\d+\.\d+$")
_FLAG_RE = re.compile(r"^--[a-z0-9][-a-z0-9.]*(=.*)?$", re.S)


class Section(BaseModel):
    """A group of settings with a section of its own in the config file (`pods:`) and
    KUBEMARK_UP_<SECTION>_<NAME> in the environment."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # Setting name -> the legacy environment variables that set it, most specific first.
    legacy_env: ClassVar[Mapping[str, tuple[str, ...]]] = {}


class ProviderSettings(Section):
    """A provider's own settings; each provider subclasses it (none: this, empty)."""


def _ip_address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError("must be an IP address of the master's host (or 0.0.0.0 to bind every address)") from None
    return value


# An address the master is reached at or binds, kept as the text given: providers' settings.
IPAddress = Annotated[str, AfterValidator(_ip_address)]


@dataclass(frozen=True)
class ProviderSpec:
    """What resolve() needs to know of a provider to read its settings: its own model,
    and the models of the sections its node engines read (pods:)."""

    model: type[ProviderSettings]
    legacy_env: Mapping[str, tuple[str, ...]]
    sections: Mapping[str, type[Section]] = field(default_factory=dict)


def _check_name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError(_NAME_RULE)
    if value.isdigit():
        # `-n 100` once meant a cluster named 100; a count is --nodes.
        raise ValueError(f"{value!r} is all digits: a cluster name needs a letter (the node count is --nodes)")
    return value


class Settings(BaseModel):
    """Everything `start` needs to know. Field docs live in config/default.yaml."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "kubemark"
    provider: str = "local"
    nodes: int = Field(10, ge=0, le=100_000)

    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION
    etcd_version: str = DEFAULT_ETCD_VERSION
    bin_dir: Path | None = None
    binary_sources: list[Literal["download", "build"]] = ["download", "build"]
    release_url: str = "https://dl.k8s.io/release"
    etcd_release_url: str = "https://github.com/etcd-io/etcd/releases/download"

    apiserver_port: int = Field(0, ge=0, le=65535)
    port_range: str = "20000-32767"
    standard_metrics_ports: bool = True

    service_cluster_ip_range: str = "10.0.0.0/16"
    cluster_cidr: str | None = None
    node_cidr_mask_size: int = Field(24, ge=8, le=30)
    dns_domain: str = "cluster.local"
    allocate_node_cidrs: bool = True
    terminated_pod_gc_threshold: int = Field(100, ge=0)
    feature_gates: str = ""
    runtime_config: str = ""
    storage_media_type: str = ""
    etcd_compaction_interval_sec: int | None = Field(None, ge=0)
    etcd_quota_backend_bytes: int = Field(4 * 1024**3, ge=0)
    max_requests_inflight: int | None = Field(None, ge=0)
    max_mutating_requests_inflight: int | None = Field(None, ge=0)
    # kube-apiserver's watch cache: off passes --watch-cache=false; sizes, --watch-cache-sizes.
    # The apiserver writes an audit log of the hollow nodes' requests (kubemark-up fidelity).
    audit_nodes: bool = False
    watch_cache: bool = True
    watch_cache_sizes: str = ""

    apiserver_extra_args: list[str] = []
    controller_manager_extra_args: list[str] = []
    scheduler_extra_args: list[str] = []
    etcd_extra_args: list[str] = []

    log_level: str = "--v=2"
    hollow_kubelet_log_level: str | None = None
    hollow_proxy_log_level: str | None = None
    hollow_kubelet_extra_args: list[str] = []
    hollow_proxy_extra_args: list[str] = []
    hollow_node_labels: str = ""
    max_pods: int = Field(110, ge=1, le=10_000)
    register_with_taints: str = ""
    extended_resources: str = ""
    kube_api_content_type: str = ""

    key_algorithm: Literal["ecdsa-p256", "rsa-2048"] = "ecdsa-p256"

    master_ready_timeout: float = Field(300, gt=0)
    nodes_ready_timeout: float = Field(1800, gt=0)
    allowed_not_ready: int = Field(0, ge=0)
    stop_timeout: float = Field(30, gt=0)
    # Hollow nodes started at once, each wave Ready before the next; 0 sizes it to the host.
    node_start_wave: int = Field(0, ge=0)
    # Where the hollow nodes run: on the master's host, or as pods on a root cluster.
    hollow_nodes: Literal["host", "pods"] = "host"
    # What a hollow node is: stock kubemark processes, or nodes of a fleet process.
    node_engine: Literal["kubemark", "fleet"] = "fleet"
    fleet_processes: int = Field(1, ge=1)
    fleet_start_window: float = Field(10, ge=0)
    # The fleet's pod lifecycle (kubemark_up/fleet/podlife.go): seconds from a pod bound
    # to Running on average (default: the real kubelet's measured median; the spread
    # around it is the measurement's), and the lifetime of a batch pod that names none.
    fleet_pod_start_seconds: float = Field(0.52, ge=0)
    fleet_pod_lifetime_seconds: float = Field(0.0, ge=0)
    # Events a fleet node may have waiting to be sent (kubemark_up/fleet/events.go).
    fleet_event_queue_per_node: int = Field(200, ge=0)
    # The node engines' own section (hollow nodes as pods), checked by the model the
    # provider spec names (nodes/rootcluster/settings.py).
    pods: dict[str, Any] = {}

    # The chosen provider's own settings, checked by its ProviderSettings model.
    provider_settings: dict[str, Any] = {}

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_name(value)

    @field_validator("provider")
    @classmethod
    def _provider(cls, value: str) -> str:
        return _PROVIDER_ALIASES.get(value, value)

    @field_validator("kubernetes_version", "etcd_version")
    @classmethod
    def _version(cls, value: str) -> str:
        value = value if value.startswith("v") else "v" + value
        if not _VERSION_RE.match(value):
            raise ValueError("must look like v1.36.3")
        return value

    @field_validator("service_cluster_ip_range", "cluster_cidr")
    @classmethod
    def _cidr(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(ipaddress.ip_network(value, strict=True))
        except ValueError as exc:
            raise ValueError(f"not a network in CIDR form ({exc})") from None

    @field_validator("port_range")
    @classmethod
    def _port_range(cls, value: str) -> str:
        match = re.fullmatch(r"(\d+)-(\d+)", value)
        if not match or not (1024 <= int(match[1]) <= int(match[2]) <= 65535):
            raise ValueError("must be LOW-HIGH with 1024 <= LOW <= HIGH <= 65535")
        return value

    @field_validator(
        "apiserver_extra_args",
        "controller_manager_extra_args",
        "scheduler_extra_args",
        "etcd_extra_args",
        "hollow_kubelet_extra_args",
        "hollow_proxy_extra_args",
    )
    @classmethod
    def _flags(cls, value: list[str]) -> list[str]:
        for arg in value:
            if not _FLAG_RE.match(arg):
                raise ValueError(f"{arg!r} is not a --flag or --flag=value")
        return value

    @field_validator("watch_cache_sizes")
    @classmethod
    def _cache_sizes(cls, value: str) -> str:
        for item in filter(None, value.split(",")):
            resource, sep, size = item.partition("#")
            if not sep or not resource or not size.isdigit():
                raise ValueError(f"{item!r} is not RESOURCE[.GROUP]#SIZE (pods#1000,deployments.apps#100)")
        return value

    @field_validator("log_level", "hollow_kubelet_log_level", "hollow_proxy_log_level")
    @classmethod
    def _log_level(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"--v=\d+", value):
            raise ValueError("must look like --v=2")
        return value

    @model_validator(mode="after")
    def _networks_apart(self) -> Settings:
        services = ipaddress.ip_network(self.service_cluster_ip_range)
        if services.version == 4 and services.prefixlen > 28:
            raise ValueError("service_cluster_ip_range: too small (at most /28)")
        pods = ipaddress.ip_network(self.pod_cidr)
        if services.overlaps(pods):
            raise ValueError("cluster_cidr and service_cluster_ip_range overlap")
        if self.allocate_node_cidrs:
            if self.node_cidr_mask_size <= pods.prefixlen:
                raise ValueError(f"node_cidr_mask_size /{self.node_cidr_mask_size} must be longer than {pods}")
            ranges = 2 ** (self.node_cidr_mask_size - pods.prefixlen)
            if ranges < self.nodes:
                raise ValueError(
                    f"{pods} holds {ranges} node ranges of /{self.node_cidr_mask_size}, fewer than "
                    f"{self.nodes} nodes: set a larger cluster_cidr or a longer node_cidr_mask_size"
                )
        return self

    # Values derived from the settings, computed in one place.

    @property
    def pod_cidr(self) -> str:
        """The cluster's pod network: as set, or the smallest /N from 10.64.0.0 (at most /14, as
        kube-up's default) that gives every hollow node its own /node_cidr_mask_size."""
        if self.cluster_cidr:
            return self.cluster_cidr
        needed = max(1, self.nodes)
        prefix = min(14, self.node_cidr_mask_size - math.ceil(math.log2(needed)))
        return str(ipaddress.ip_network(f"10.64.0.0/{max(prefix, 10)}", strict=False))

    @property
    def first_service_ip(self) -> str:
        return str(next(ipaddress.ip_network(self.service_cluster_ip_range).hosts()))

    @property
    def inflight_limits(self) -> tuple[int, int]:
        """--max-requests-inflight / --max-mutating-requests-inflight: set, or the legacy
        start-kubemark-master.sh sizing (>=1000 nodes 1500/500, >=3000 3000/1000), else the
        kube-apiserver defaults 400/200."""
        if self.nodes >= 3000:
            default = (3000, 1000)
        elif self.nodes >= 1000:
            default = (1500, 500)
        else:
            default = (400, 200)
        mutating = self.max_mutating_requests_inflight
        return (self.max_requests_inflight if self.max_requests_inflight is not None else default[0],
                mutating if mutating is not None else default[1])

    @property
    def kubelet_log_level(self) -> str:
        return self.hollow_kubelet_log_level or self.log_level

    @property
    def proxy_log_level(self) -> str:
        return self.hollow_proxy_log_level or self.log_level

    @property
    def port_bounds(self) -> tuple[int, int]:
        low, high = self.port_range.split("-")
        return int(low), int(high)


# Settings that are sections of their own, checked by a model the provider spec names.
_SECTIONS = tuple(name for name, f in Settings.model_fields.items()
                  if f.annotation == dict[str, Any] and name != "provider_settings")


def provider_env_prefix(provider: str) -> str:
    return f"{ENV_PREFIX}{provider.upper().replace('-', '_')}_"


def resolve(
    *,
    flags: Mapping[str, Any] | None = None,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    provider_spec: Callable[[str], ProviderSpec],
    provider_names: Callable[[], set[str]],
) -> Settings:
    """Merge defaults < config file < environment < flags into one validated Settings,
    the chosen provider's own settings and the sections of its node engines included.
    provider_spec and provider_names look providers up (providers.registry passes its
    own: see registry.resolve_settings)."""
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    sections: dict[str, Any] = {}
    if config_file is not None:
        file_values = sources.from_file(config_file)
        providers = provider_names() if set(file_values) - set(Settings.model_fields) else set()
        for key in list(file_values):
            if key in _SECTIONS or (key in providers and key not in Settings.model_fields):
                sections[key] = file_values.pop(key)
        merged.update(file_values)
        origins.update({key: f"config file {config_file}" for key in file_values})
    skip = frozenset({"provider_settings", *_SECTIONS})
    env_values, env_origins = sources.from_env(Settings, environ, prefix=ENV_PREFIX, legacy=LEGACY_ENV, skip=skip)
    merged.update(env_values)
    origins.update(env_origins)
    for key, value in (flags or {}).items():
        if value is not None:
            merged[key] = value
            origins[key] = "--" + key.replace("_", "-")
    provider = str(merged.get("provider") or Settings.model_fields["provider"].default)
    provider = _PROVIDER_ALIASES.get(provider, provider)
    spec = provider_spec(provider)
    merged["provider_settings"] = sources.read_section(
        provider, spec.model, spec.legacy_env, sections.get(provider), environ, config_file,
        prefix=provider_env_prefix(provider))
    for name in _SECTIONS:
        model = spec.sections.get(name, Section)  # a section no model claims takes no settings
        merged[name] = sources.read_section(name, model, model.legacy_env, sections.get(name), environ, config_file,
                                            prefix=provider_env_prefix(name))
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(sources.describe(exc, origins)) from None
    if settings.bin_dir is not None and not settings.bin_dir.expanduser().is_dir():
        where = origins.get("bin_dir")
        raise ConfigError(f"bin_dir: {settings.bin_dir} is not a folder" + (f" (from {where})" if where else ""))
    return settings


def cluster_name(flag: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The cluster a command acts on: --name, else KUBEMARK_UP_NAME, else the default."""
    environ = os.environ if environ is None else environ
    name = str(flag or environ.get(ENV_PREFIX + "NAME") or Settings.model_fields["name"].default)
    try:
        return _check_name(name)
    except ValueError as exc:
        raise ConfigError(f"name: {name!r}: {exc}") from None


def home_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where clusters and the binary cache live: $KUBEMARK_UP_HOME, else ~/.kubemark-up."""
    environ = os.environ if environ is None else environ
    return Path(environ.get(ENV_PREFIX + "HOME") or Path.home() / ".kubemark-up").expanduser().absolute()
