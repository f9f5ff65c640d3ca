"""Reading settings where they are given: a YAML config file, environment variables
(each setting's own name and its legacy ones), and a section of either checked by its
own model; a validation error as one line naming the setting and where it came from.
config.resolve puts them together."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from kubemark_up.errors import ConfigError


def _list_fields(model: type[BaseModel]) -> set[str]:
    return {name for name, f in model.model_fields.items() if f.annotation in (list[str], list[Literal["download", "build"]])}


def env_names(field: str, *, prefix: str, legacy: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """The environment variables that set `field`, highest precedence first."""
    return (prefix + field.upper(),) + tuple(legacy.get(field, ()))


def from_env(
    model: type[BaseModel], environ: Mapping[str, str], *, prefix: str, legacy: Mapping[str, tuple[str, ...]],
    skip: frozenset[str] = frozenset(),
) -> tuple[dict[str, Any], dict[str, str]]:
    """The values of model's fields set in environ, and where each came from."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    lists = _list_fields(model)
    for field in model.model_fields:
        if field in skip:
            continue
        for var in env_names(field, prefix=prefix, legacy=legacy):
            raw = environ.get(var)
            if not raw:  # the legacy scripts export many variables empty: unset
                continue
            if field in lists:
                try:
                    values[field] = shlex.split(raw.replace(",", " ") if field == "binary_sources" else raw)
                except ValueError as exc:
                    raise ConfigError(f"{field}: cannot split {var} like a command line ({exc})") from None
            else:
                values[field] = raw
            sources[field] = f"environment variable {var}"
            break
    return values, sources


def from_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {path} could not be read: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of setting: value")
    return data


def read_section(
    name: str, model: type[BaseModel], legacy: Mapping[str, tuple[str, ...]], section: Any,
    environ: Mapping[str, str], config_file: Path | None, *, prefix: str,
) -> dict[str, Any]:
    """A section's settings (a provider's, or a shared one like pods:) from its part of
    the config file and its environment variables (prefix<NAME>), checked by its model."""
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ConfigError(f"config file {config_file}: {name}: expected a mapping of setting: value")
    values = dict(section)
    sources = {key: f"config file {config_file}" for key in section}
    env_values, env_sources = from_env(model, environ, prefix=prefix, legacy=legacy)
    values.update(env_values)
    sources.update(env_sources)
    try:
        return model.model_validate(values).model_dump(mode="json")
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"] if not isinstance(part, int))
        if error["type"] == "extra_forbidden":
            raise ConfigError(f"unknown setting '{name}.{field}' in {sources.get(field, 'the config file')}") from None
        if error["type"] == "missing":
            raise ConfigError(
                f"{name}.{field} is required: set it under `{name}:` in the config file, "
                f"or as {prefix}{field.upper()}"
            ) from None
        message = error["msg"].removeprefix("Value error, ")
        where = sources.get(field)
        raise ConfigError(f"{name}.{field}: {message}" + (f" (from {where})" if where else "")) from None


def describe(exc: ValidationError, sources: Mapping[str, str]) -> str:
    """A validation error of the settings as one line: the setting, what is wrong, and
    where the value came from."""
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"] if not isinstance(part, int)) or "settings"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        where = sources.get(field, "")
        return f"unknown setting '{field}'" + (f" in {where}" if where else "")
    origin = sources.get(field)
    return f"{field}: {message}" + (f" (from {origin})" if origin else "")
