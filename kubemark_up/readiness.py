"""Reading Nodes from the kubemark master: waiting until hollow nodes are Ready (a
watch, not polling `kubectl get nodes`), counting them, finding one by address.

Responses are read as raw JSON: the client's model classes cost milliseconds per
node, which adds up at thousands of nodes."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from kubemark_up.errors import ComponentError, ConfigError
from kubemark_up.ui import UI

WATCH_WINDOW = 5  # seconds; check() runs between windows, so a dead master is seen quickly
# Nodes per list request. One request for every node did not answer `status` within its
# 5 s at 6,000 fleet nodes on a loaded 2-core master; a page of 500 does, and the pages
# still read one snapshot (the apiserver's limit/continue).
LIST_PAGE = 500
_TRANSIENT = (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError)


def _api(kubeconfig: Path) -> client.CoreV1Api:
    return client.CoreV1Api(kube_config.new_client_from_config(config_file=str(kubeconfig)))


def is_ready(node: dict) -> bool:
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


def _list_nodes(api: client.CoreV1Api, timeout: float = 30) -> dict:
    """Every Node, as one list (the metadata of the last page: the snapshot's resourceVersion);
    timeout bounds each page's request."""
    items: list[dict] = []
    token: str | None = None
    while True:
        more: dict[str, Any] = {"_continue": token} if token else {}
        # Without preloading, the client returns the raw urllib3 response, whatever its types say.
        response: Any = api.list_node(limit=LIST_PAGE, _preload_content=False, _request_timeout=timeout, **more)
        page = json.loads(response.data)
        items.extend(page["items"])
        token = page["metadata"].get("continue")
        if not token:
            page["items"] = items
            return page


class ReadyWatch:
    """Watches the hollow nodes' Ready condition with one progress bar, across as many
    waits as start has waves: the watch goes on from where the last wait left it."""

    def __init__(self, kubeconfig: Path, *, names: Iterable[str], ui: UI,
                 also: Callable[[], tuple[str, int] | None] = lambda: None) -> None:
        """also() gives a second count to show (pods Running), asked between windows."""
        self.wanted = set(names)
        self.api = _api(kubeconfig)
        self.ui = ui
        self.also = also
        self.ready: set[str] = set()
        self._version: str | None = None
        self._update: Callable[..., None] = lambda done, **_: None
        self._progress: contextlib.ExitStack | None = None

    def __enter__(self) -> ReadyWatch:
        self._progress = contextlib.ExitStack()
        self._update = self._progress.enter_context(
            self.ui.counter("hollow nodes Ready", total=len(self.wanted))
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.close()

    def wait(self, *, need: int, deadline: float, check: Callable[[], None]) -> int:
        """Block until `need` of the nodes are Ready; return how many are. check() is
        called between watch windows and raises to stop the wait (a component died)."""
        while True:
            if time.monotonic() > deadline:  # also when every call below keeps failing
                missing = sorted(self.wanted - self.ready, key=_node_index)
                raise ComponentError(
                    f"only {len(self.ready)} of {len(self.wanted)} hollow nodes were Ready in time; "
                    f"not Ready: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}"
                )
            try:
                if self._version is None:
                    listing = _list_nodes(self.api, timeout=max(1.0, min(30.0, deadline - time.monotonic())))
                    self._version = listing["metadata"]["resourceVersion"]
                    self.ready = {
                        n["metadata"]["name"] for n in listing["items"]
                        if n["metadata"]["name"] in self.wanted and is_ready(n)
                    }
                    self._update(len(self.ready))
                if len(self.ready) >= need:
                    return len(self.ready)
                check()
                if (other := self.also()) is not None:
                    self._update(other[1], title=other[0])
                remaining = deadline - time.monotonic()
                if remaining > 0:
                    self._watch(max(1, int(min(remaining, WATCH_WINDOW))), need)
            except _TRANSIENT:
                # The apiserver blinked or the watch broke: check() tells a dead master
                # apart; otherwise list again after a moment.
                check()
                self._version = None
                time.sleep(1)

    def _watch(self, window: int, need: int) -> None:
        response: Any = self.api.list_node(
            watch=True, resource_version=self._version, timeout_seconds=window,
            allow_watch_bookmarks=True, _preload_content=False, _request_timeout=window + 10,
        )
        try:
            for line in iter_resp_lines(response):
                event = json.loads(line)
                if event["type"] == "ERROR":  # e.g. 410 Gone: list again
                    self._version = None
                    return
                node = event["object"]
                self._version = node["metadata"]["resourceVersion"]
                name = node["metadata"].get("name")
                if event["type"] == "BOOKMARK" or name not in self.wanted:
                    continue
                if event["type"] != "DELETED" and is_ready(node):
                    self.ready.add(name)
                else:
                    self.ready.discard(name)
                self._update(len(self.ready))
                if len(self.ready) >= need:
                    return
        finally:
            response.release_conn()


def _node_index(name: str) -> tuple[int, str]:
    tail = name.rsplit("-", 1)[-1]
    return (int(tail), name) if tail.isdigit() else (1 << 30, name)


def count_ready(kubeconfig: Path, names: Iterable[str]) -> tuple[int | None, str | None]:
    """How many of names are Ready now, or None and why not."""
    wanted = set(names)
    try:
        listing = _list_nodes(_api(kubeconfig), timeout=5)
    except _TRANSIENT as exc:
        return None, f"the apiserver did not answer: {type(exc).__name__}"
    return sum(1 for n in listing["items"] if n["metadata"]["name"] in wanted and is_ready(n)), None


def node_by_address(kubeconfig: Path, address: str, names: Iterable[str]) -> str | None:
    """The hollow node with this address (InternalIP, Hostname, ...), or None."""
    wanted = set(names)
    try:
        listing = _list_nodes(_api(kubeconfig), timeout=5)
    except _TRANSIENT:
        return None
    matches = [
        n["metadata"]["name"] for n in listing["items"]
        if n["metadata"]["name"] in wanted
        and any(a.get("address") == address for a in (n.get("status") or {}).get("addresses") or [])
    ]
    if len(matches) > 1:
        raise ConfigError(
            f"address {address} belongs to {len(matches)} hollow nodes (stock kubemark gives every "
            "hollow node the same fake InternalIP); name the node instead"
        )
    return matches[0] if matches else None
