"""Checking requests against the official compute v1 discovery document (shipped in the
google-api-python-client wheel, read from the installed package): the HTTP method and
path must be one of its methods', path parameters must match their patterns, query
parameters must be the method's or the API's standard ones and of their type, and the
JSON body must hold only fields of the method's request schema, of their types, with the
fields that schema marks required for this method. Anything else is Rejected (400), as
the real API would refuse it.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import re
from dataclasses import dataclass
from typing import Any

SERVICE_PATH = "/compute/v1/"
# The standard system parameters also go by a "$" name (Google's "System Parameters"
# page); the REST client sends $alt.
_ALIASES = {"$alt": "alt"}


@functools.cache
def discovery_document() -> dict:
    path = importlib.resources.files("googleapiclient") / "discovery_cache" / "documents" / "compute.v1.json"
    return json.loads(path.read_text())


class Rejected(Exception):
    def __init__(self, code: int, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason



@dataclass(frozen=True)
class Route:
    verb: str
    regex: re.Pattern[str]
    literal: int  # literal characters: a literal segment wins over a parameter
    method: dict


class Discovery:
    def __init__(self, doc: dict) -> None:
        self.doc = doc
        self.schemas: dict[str, dict] = doc["schemas"]
        self.global_params: dict[str, dict] = doc["parameters"]
        self.routes: list[Route] = []
        for resource in doc["resources"].values():
            for method in resource["methods"].values():
                template = method.get("flatPath", method["path"])
                pattern = re.sub(r"\\\{([A-Za-z0-9_]+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
                literal = len(re.sub(r"\{[^}]+\}", "", template))
                self.routes.append(Route(method["httpMethod"], re.compile(pattern + r"\Z"), literal, method))
        self.routes.sort(key=lambda r: -r.literal)

    def match(self, verb: str, path: str) -> tuple[dict, dict[str, str]]:
        if not path.startswith(SERVICE_PATH):
            raise Rejected(404, f"no such path {path} (not under {SERVICE_PATH})", "notFound")
        rest = path[len(SERVICE_PATH):]
        other_verbs = []
        for route in self.routes:
            found = route.regex.match(rest)
            if found is None:
                continue
            if route.verb != verb:
                other_verbs.append(route.verb)
                continue
            return route.method, found.groupdict()
        if other_verbs:
            raise Rejected(405, f"{verb} is not allowed on {path} (allowed: {', '.join(sorted(set(other_verbs)))})")
        raise Rejected(404, f"no compute v1 method at {verb} {path}", "notFound")

    def check(self, method: dict, path_params: dict[str, str], query: dict[str, list[str]], body: bytes) -> Any:
        """Refuse what the method does not allow; the parsed body if it has one."""
        params: dict[str, dict] = method.get("parameters", {})
        for name, value in path_params.items():
            spec = params.get(name)
            if spec is None or spec.get("location") != "path":
                raise Rejected(400, f"path parameter {name} is not one of {method['id']}'s")
            if "pattern" in spec and not re.fullmatch(spec["pattern"], value):
                raise Rejected(400, f"Invalid value for field '{name}': '{value}'. Must match `{spec['pattern']}`")
        for raw_name, values in query.items():
            name = _ALIASES.get(raw_name, raw_name)
            spec = params.get(name) if params.get(name, {}).get("location") == "query" else self.global_params.get(name)
            if spec is None:
                raise Rejected(400, f"Invalid JSON payload received. Unknown name \"{raw_name}\": Cannot bind query parameter. "
                               f"Field '{raw_name}' could not be found in request message ({method['id']}).")
            if len(values) > 1 and not spec.get("repeated"):
                raise Rejected(400, f"query parameter {raw_name} given {len(values)} times")
            for value in values:
                if name == "alt" and raw_name == "$alt":
                    value = value.split(";")[0]  # "json;enum-encoding=int": the REST client's
                _check_scalar(value, spec, f"query parameter {raw_name}", from_query=True)
        for name, spec in params.items():
            if spec.get("required") and spec.get("location") == "query" and name not in query:
                raise Rejected(400, f"Required query parameter '{name}' is missing ({method['id']})")
        if "request" not in method:
            if body.strip():
                raise Rejected(400, f"{method['id']} takes no request body")
            return None
        try:
            parsed = json.loads(body or b"null")
        except ValueError:
            raise Rejected(400, "Invalid JSON payload received.") from None
        if not isinstance(parsed, dict):
            raise Rejected(400, f"{method['id']}: the request body must be a JSON object")
        self.check_value(parsed, method["request"], "resource", method["id"])
        return parsed

    def check_value(self, value: Any, schema: dict, where: str, method_id: str) -> None:
        if "$ref" in schema:
            schema = self.schemas[schema["$ref"]]
        kind = schema.get("type")
        if kind == "object":
            if not isinstance(value, dict):
                raise Rejected(400, f"Invalid value for field '{where}': expected an object")
            props: dict[str, dict] = schema.get("properties", {})
            extra = schema.get("additionalProperties")
            for key, item in value.items():
                if key in props:
                    self.check_value(item, props[key], f"{where}.{key}", method_id)
                elif extra is not None:
                    self.check_value(item, extra, f"{where}.{key}", method_id)
                else:
                    raise Rejected(400, f"Invalid JSON payload received. Unknown name \"{key}\" at '{where}': "
                                   "Cannot find field.")
            for key, spec in props.items():
                if method_id in spec.get("annotations", {}).get("required", []) and key not in value:
                    raise Rejected(400, f"Required field '{where}.{key}' not specified", "required")
        elif kind == "array":
            if not isinstance(value, list):
                raise Rejected(400, f"Invalid value for field '{where}': expected a list")
            for index, item in enumerate(value):
                self.check_value(item, schema["items"], f"{where}[{index}]", method_id)
        elif kind == "any" or kind is None:
            return
        else:
            _check_scalar(value, schema, f"field '{where}'", from_query=False)


_INT_FORMATS = {"int64", "uint64", "int32", "uint32"}


def _check_scalar(value: Any, spec: dict, where: str, *, from_query: bool) -> None:
    kind, fmt = spec.get("type"), spec.get("format")
    bad = Rejected(400, f"Invalid value for {where}: {value!r} (expected {kind}{f' {fmt}' if fmt else ''})")
    if kind == "string":
        if fmt in _INT_FORMATS:  # 64-bit integers travel as JSON strings; a number is taken too
            if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and re.fullmatch(r"-?\d+", value))):
                raise bad
            return
        if not isinstance(value, str):
            raise bad
        if "enum" in spec and value not in spec["enum"]:
            raise Rejected(400, f"Invalid value for {where}: {value!r} (one of {', '.join(spec['enum'])})")
    elif kind == "integer":
        if from_query:
            if not re.fullmatch(r"-?\d+", str(value)):
                raise bad
        elif isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.isdigit())):
            raise bad
    elif kind == "number":
        if from_query:
            try:
                float(value)
            except ValueError:
                raise bad from None
        elif isinstance(value, bool) or not isinstance(value, int | float | str):
            raise bad
    elif kind == "boolean" and value not in (("true", "false") if from_query else (True, False)):
        raise bad



@functools.cache
def _discovery() -> Discovery:
    return Discovery(discovery_document())
