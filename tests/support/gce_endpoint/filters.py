"""Compute's list filters, the part of their grammar the provider uses."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from tests.support.gce_endpoint.discovery import Rejected

_TERM = re.compile(
    r"""\(?\s*(?P<field>[A-Za-z][\w.\-]*)\s*(?P<op>!=|=|:|\beq\b|\bne\b)\s*(?P<value>"[^"]*"|'[^']*'|[^\s()]+)\s*\)?""",
)


def parse_filter(text: str) -> Callable[[dict], bool]:
    """The subset of Compute's list filter grammar the provider uses: terms FIELD = V,
    FIELD != V, FIELD:* (has), FIELD:V, FIELD eq RE2, FIELD ne RE2, joined by spaces or
    AND. Anything else is refused, loudly: a filter silently ignored lists too much."""
    terms: list[tuple[str, str, str]] = []
    rest = text.strip()
    while rest:
        found = _TERM.match(rest)
        if found is None:
            raise Rejected(400, f"Invalid value for field 'filter': '{text}'. Invalid list filter expression.")
        value = found["value"]
        if value[:1] in "\"'":
            value = value[1:-1]
        terms.append((found["field"], found["op"], value))
        rest = rest[found.end():].lstrip()
        if rest.upper().startswith("AND "):
            rest = rest[4:].lstrip()

    def lookup(item: dict, path: str) -> Any:
        value: Any = item
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value

    def test(item: dict) -> bool:
        for name, op, value in terms:
            got = lookup(item, name)
            text_value = "" if got is None else str(got)
            if op == ":":
                ok = got is not None if value == "*" else value in text_value
            elif op == "=":
                ok = got is not None and _glob(value, text_value)
            elif op == "!=":
                ok = not (got is not None and _glob(value, text_value))
            elif op == "eq":
                ok = got is not None and re.fullmatch(value, text_value) is not None
            else:
                ok = not (got is not None and re.fullmatch(value, text_value) is not None)
            if not ok:
                return False
        return True

    return test


def _glob(pattern: str, value: str) -> bool:
    return re.fullmatch(".*".join(re.escape(part) for part in pattern.split("*")), value) is not None

