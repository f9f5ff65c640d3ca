"""The pods engines' settings: the `pods:` section of the config file (documented in
config/default.yaml) and KUBEMARK_UP_PODS_<NAME> in the environment. config.resolve
reads the section with this model, handed to it by the provider registry; engines
read it back from Settings with PodsSettings.of."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar, Self

from pydantic import Field, field_validator

from kubemark_up.config import Section, Settings


class PodsSettings(Section):
    """Hollow nodes as pods on a root cluster (hollow_nodes: pods). Field docs live in
    config/default.yaml, under `pods:`."""

    # legacy: the root cluster was kubectl's current one
    kubeconfig: Path | None = None
    context: str | None = None
    namespace: str = "kubemark"
    image: str | None = None
    template: Path | None = None
    kubelet_millicpu: int = Field(40, ge=1)
    kubelet_mem_ki: int = Field(102400, ge=1)
    proxy_millicpu: int | None = Field(None, ge=1)
    proxy_mem_per_node_ki: int = Field(50, ge=0)
    # node_engine: fleet: the hollow nodes each fleet pod carries, and its template.
    nodes_per_pod: int = Field(500, ge=1)
    fleet_template: Path | None = None
    legacy_env: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "kubeconfig": ("KUBEMARK_ROOT_KUBECONFIG", "KUBECONFIG"),
        "kubelet_millicpu": ("KUBEMARK_HOLLOW_KUBELET_MILLICPU",),
        "kubelet_mem_ki": ("KUBEMARK_HOLLOW_KUBELET_MEM_KB",),
        "proxy_millicpu": ("KUBEMARK_HOLLOW_PROXY_MILLICPU",),
        "proxy_mem_per_node_ki": ("KUBEMARK_HOLLOW_PROXY_MEM_PER_NODE_KB",),
    }

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", value):
            raise ValueError("must be a DNS label (lower-case letters, digits, '-')")
        return value

    @classmethod
    def of(cls, settings: Settings) -> Self:
        """The pods settings within settings (resolve checked them already)."""
        return cls.model_validate(settings.pods)
