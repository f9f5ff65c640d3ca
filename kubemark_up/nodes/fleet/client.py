"""One identity's client: its own TLS certificate and its own HTTP/2 connection, over
which all its requests and watches are multiplexed, as client-go does."""

from __future__ import annotations

import logging
import ssl
import time
from typing import Any

import h2.exceptions
import httpx

# Requests other than watches: the heartbeat client's timeout (min of the status
# update frequency and the lease duration).
REQUEST_TIMEOUT = 10.0
SLOW = 2.0  # s: a request this slow is logged
log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"{status}: {text[:200]}")
        self.status = status


class Client:
    def __init__(self, *, server: str, ca: str, cert: str, key: str, user_agent: str) -> None:
        context = ssl.create_default_context(cafile=ca)
        context.load_cert_chain(cert, key)
        self.http = httpx.AsyncClient(
            base_url=server, http2=True, verify=context, timeout=REQUEST_TIMEOUT,
            headers={"User-Agent": user_agent, "Accept": "application/json"},
            # One connection, and another only when the server's limit of concurrent
            # streams is reached, as Go's HTTP/2 transport does (a kubelet holds 2-3).
            limits=httpx.Limits(max_connections=3, max_keepalive_connections=3),
        )

    async def request(self, method: str, path: str, *, body: Any = None, params: dict | None = None,
                      content_type: str = "application/json") -> dict:
        headers = {"Content-Type": content_type} if body is not None else None
        began = time.monotonic()
        try:
            response = await self.http.request(method, path, json=body, params=params, headers=headers)
        except (httpx.HTTPError, h2.exceptions.H2Error) as exc:  # status 0: no answer
            raise ApiError(0, f"{type(exc).__name__}: {exc}") from None
        finally:
            if (took := time.monotonic() - began) > SLOW:
                log.info("slow: %s %s took %.1fs", method, path, took)
        if response.status_code >= 300:
            raise ApiError(response.status_code, response.text)
        return response.json() if response.content else {}

    def stream(self, path: str, params: dict, timeout: float) -> Any:
        return self.http.stream("GET", path, params=params, timeout=httpx.Timeout(timeout, connect=REQUEST_TIMEOUT))

    async def close(self) -> None:
        await self.http.aclose()
