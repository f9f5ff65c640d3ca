"""Finding providers: the entry-point group `kubemark_up.providers`, the one path by
which built-in and third-party providers alike are found. Loaded lazily: only the
provider a command uses is imported. resolve_settings hands these lookups to
config.resolve, which imports no provider."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from kubemark_up import config
from kubemark_up.config import ProviderSpec, Settings
from kubemark_up.errors import ConfigError, KubemarkUpError
from kubemark_up.nodes import registry as nodes
from kubemark_up.providers.base import Provider

GROUP = "kubemark_up.providers"


@dataclass(frozen=True)
class ProviderInfo:
    name: str
    package: str
    version: str
    target: str


def available() -> list[ProviderInfo]:
    infos = []
    for ep in entry_points(group=GROUP):
        dist = ep.dist
        infos.append(
            ProviderInfo(
                name=ep.name,
                package=dist.name if dist else "?",
                version=dist.version if dist else "?",
                target=ep.value,
            )
        )
    return sorted(infos, key=lambda info: info.name)


def provider_class(name: str) -> type[Provider]:
    """The Provider subclass registered as name; a one-line error otherwise."""
    matches = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not matches:
        known = ", ".join(info.name for info in available()) or "none installed"
        raise ConfigError(f"unknown provider '{name}' (known: {known})")
    ep = matches[0]
    try:
        cls = ep.load()
    except Exception as exc:  # a broken plug-in is the plug-in's fault: name it
        raise KubemarkUpError(f"provider '{name}' ({ep.value}) failed to load: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise KubemarkUpError(f"provider '{name}' ({ep.value}) is not a kubemark_up Provider subclass")
    return cls


def names() -> set[str]:
    return {info.name for info in available()}


def spec(name: str) -> ProviderSpec:
    """How to read the provider's own settings, and its node engines' sections."""
    cls = provider_class(name)
    return ProviderSpec(model=cls.settings_model, legacy_env=cls.legacy_env, sections=nodes.sections())


def resolve_settings(**kwargs: Any) -> Settings:
    """config.resolve (flags, config_file, environ) with the providers found here."""
    return config.resolve(provider_spec=spec, provider_names=names, **kwargs)


def load(settings: Settings) -> Provider:
    """The provider settings name, built with its own settings."""
    cls = provider_class(settings.provider)
    try:
        provider = cls(cls.settings_model.model_validate(settings.provider_settings))
    except ValueError as exc:  # settings recorded by another version of the provider
        raise ConfigError(f"the settings of provider '{settings.provider}' do not fit it: {exc}") from None
    provider.name = provider.name or settings.provider
    return provider
