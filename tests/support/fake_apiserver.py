"""The fake host's kube-apiserver: HTTPS on a loopback socket the test already holds,
with the serving certificate the cluster put on the fake host, answering what the
engine asks of a master from this machine: /readyz (and the other probes) and the
Node list, in which the hollow nodes the World calls Ready are Ready."""

from __future__ import annotations

import json
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit


class FakeApiserver:
    def __init__(self, listener: socket.socket, cert: bytes, key: bytes, *, ready: Callable[[], list[str]]) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.TemporaryDirectory() as folder:  # ssl reads the pair from files only
            (Path(folder) / "tls.crt").write_bytes(cert)
            (Path(folder) / "tls.key").write_bytes(key)
            context.load_cert_chain(Path(folder) / "tls.crt", Path(folder) / "tls.key")
        self.server = ThreadingHTTPServer(listener.getsockname(), _handler(ready), bind_and_activate=False)
        self.server.socket = context.wrap_socket(listener, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def _handler(ready: Callable[[], list[str]]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path in ("/readyz", "/livez", "/healthz"):
                self._answer(b"ok", "text/plain")
            elif url.path == "/api/v1/nodes" and "watch=true" in url.query:
                self._answer(b"", "application/json")  # a watch window in which nothing changed
            elif url.path == "/api/v1/nodes":
                items = [{"metadata": {"name": name, "resourceVersion": "1"},
                          "status": {"conditions": [{"type": "Ready", "status": "True"}]}} for name in ready()]
                listing = {"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}
                self._answer(json.dumps(listing).encode(), "application/json")
            else:
                self.send_error(404)

        def _answer(self, body: bytes, kind: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # quiet: the test says what failed
            return None

    return Handler
