"""A reflector as client-go runs one: LIST with resourceVersion=0 (served by the watch
cache), then WATCH from the list's version with allowWatchBookmarks and a timeout drawn
from [300, 600) s; when the server ends a watch it resumes from the last version seen
(bookmarks included) and relists only on 410 Gone or a broken connection."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable
from typing import Any

import h2.exceptions
import httpx

from kubemark_up.nodes.fleet.client import ApiError, Client

log = logging.getLogger(__name__)

MIN_WATCH_TIMEOUT = 300  # s; client-go's reflector draws minWatchTimeout x (1 + U[0, 1))
Handler = Callable[[str, dict], None]


class Reflector:
    def __init__(self, client: Client, path: str, *, on_event: Handler | None = None, what: str = "",
                 field_selector: str | None = None, label_selector: str | None = None) -> None:
        self.client, self.path, self.on_event, self.what = client, path, on_event, what or path
        self.params: dict[str, str] = {}
        if field_selector:
            self.params["fieldSelector"] = field_selector
        if label_selector:
            self.params["labelSelector"] = label_selector
        self.synced = asyncio.Event()
        self.version: str | None = None
        self.watches = 0  # WATCH requests made (for the fidelity report)
        self.relists = 0
        self.stopped = False

    def stop(self) -> None:
        """No new watch once the open one ends (within its 300-600 s): like the kubelet's
        per-object watches, stopped after 5 idle minutes. Never cancel a reflector's task
        instead: a task cancelled in the middle of an HTTP/2 read leaks its stream in
        httpcore, or wedges the whole connection if it held the connection's read lock
        (both seen here with httpx 0.28 and httpcore 1.0)."""
        self.stopped = True

    async def run(self) -> None:
        backoff = 0.8
        while not self.stopped:
            try:
                if self.version is None:
                    await self._list()
                await self._watch()
                backoff = 0.8
            except asyncio.CancelledError:
                raise
            except (ApiError, httpx.HTTPError, h2.exceptions.H2Error, OSError, ValueError) as exc:
                log.debug("%s: %s", self.what, exc)
                if isinstance(exc, ApiError) and exc.status == 410:
                    self.version = None
                    continue
                self.version = None  # a broken watch relists, as the reflector does
                await asyncio.sleep(backoff * (1 + random.random()))
                backoff = min(backoff * 2, 30)

    async def _list(self) -> None:
        body = await self.client.request("GET", self.path, params={**self.params, "resourceVersion": "0"})
        self.relists += 1
        self.version = body["metadata"]["resourceVersion"]
        if self.on_event:
            self.on_event("SYNC", body)  # the whole list: the handler replaces what it held
        self.synced.set()

    async def _watch(self) -> None:
        timeout = int(MIN_WATCH_TIMEOUT * (1 + random.random()))
        params = {**self.params, "watch": "1", "resourceVersion": self.version or "0", "timeoutSeconds": str(timeout),
                  "allowWatchBookmarks": "true"}
        self.watches += 1
        async with self.client.stream(self.path, params, timeout=timeout + 30) as response:
            if response.status_code != 200:
                raise ApiError(response.status_code, (await response.aread()).decode(errors="replace"))
            async for line in response.aiter_lines():
                if not line:
                    continue
                event: dict[str, Any] = json.loads(line)
                kind, obj = event.get("type", ""), event.get("object") or {}
                if kind == "ERROR":
                    raise ApiError(int(obj.get("code") or 500), obj.get("message", ""))
                self.version = (obj.get("metadata") or {}).get("resourceVersion") or self.version
                if kind != "BOOKMARK" and self.on_event:
                    self.on_event(kind, obj)
