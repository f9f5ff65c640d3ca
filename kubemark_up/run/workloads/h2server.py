"""The http2-baseline server: HTTP/2 over TLS on a loopback address, streaming blocks.

    python -m kubemark_up.run.workloads.h2server --cert server.crt --key server.key --lifetime 120

prints one line, {"port": N}, once it listens. `GET /blocks?size=S&period=P&count=K`
answers with K blocks of S bytes, the i-th due P×i seconds after the request, each
sent as the stream's and the connection's flow-control windows allow (a late block
goes at once; its lateness is recorded). `GET /stats` answers with what every
finished stream sent (bytes, blocks, first and last send moments, the worst
lateness), as JSON. The server exits by itself after `lifetime` seconds.
Standard library and h2 only: asyncio, ssl, the h2 state machine.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import ssl
import sys
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions

MAX_BLOCK = 16 * 1024 * 1024
MAX_COUNT = 1_000_000
HIGH_WATER = 1024 * 1024  # bytes buffered in the transport before the sender waits


class Server:
    def __init__(self) -> None:
        self.finished: list[dict] = []


class Connection(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        self.transport: asyncio.Transport | None = None
        self.window_open = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()
        self.tasks: dict[int, asyncio.Task] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER)
        self.conn.initiate_connection()
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.flush()
            if self.transport is not None:
                self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self.request(event.stream_id, {str(k): str(v) for k, v in event.headers or []})
            elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
                self.window_open.set()
            elif isinstance(event, h2.events.DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                task = self.tasks.pop(event.stream_id, None)
                if task is not None:
                    task.cancel()
            elif isinstance(event, h2.events.ConnectionTerminated) and self.transport is not None:
                self.transport.close()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        for task in self.tasks.values():
            task.cancel()
        self.window_open.set()
        self.writable.set()

    def request(self, stream_id: int, headers: dict[str, str]) -> None:
        url = urlsplit(headers.get(":path", "/"))
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/stats":
            self.respond(stream_id, 200, json.dumps({"streams": self.server.finished}).encode())
        elif url.path == "/blocks":
            try:
                size, period, count = int(query["size"]), float(query["period"]), int(query["count"])
                if not (1 <= size <= MAX_BLOCK and 0 <= period <= 60 and 1 <= count <= MAX_COUNT):
                    raise ValueError
            except (KeyError, ValueError):
                self.respond(stream_id, 400, b"size (1..16 MiB), period (0..60 s) and count (1..1,000,000) please\n")
                return
            self.tasks[stream_id] = asyncio.ensure_future(self.blocks(stream_id, size, period, count))
        else:
            self.respond(stream_id, 404, b"no such path\n")

    def respond(self, stream_id: int, status: int, body: bytes) -> None:
        self.conn.send_headers(stream_id, [(":status", str(status)), ("content-length", str(len(body)))])
        self.conn.send_data(stream_id, body, end_stream=True)
        self.flush()

    async def blocks(self, stream_id: int, size: int, period: float, count: int) -> None:
        loop = asyncio.get_running_loop()
        self.conn.send_headers(stream_id, [(":status", "200"), ("content-type", "application/octet-stream")])
        self.flush()
        block = bytes(size)
        record: dict[str, Any] = {"stream": stream_id, "bytes": 0, "blocks": 0, "first": None, "last": None, "late_max": 0.0,
                  "size": size, "period": period}
        start = loop.time()
        try:
            for index in range(count):
                due = start + index * period
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    record["late_max"] = max(record["late_max"], -delay)
                view = memoryview(block)
                while view:
                    allowed = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
                    if allowed <= 0:
                        self.window_open.clear()
                        await self.window_open.wait()
                        continue
                    self.conn.send_data(stream_id, view[:allowed].tobytes())
                    view = view[allowed:]
                    self.flush()
                    if not self.writable.is_set():
                        await self.writable.wait()
                now = time.time()
                record["first"] = record["first"] or now
                record["last"] = now
                record["bytes"] += size
                record["blocks"] += 1
            self.conn.end_stream(stream_id)
            self.flush()
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            record["reset"] = True
        finally:
            self.tasks.pop(stream_id, None)
            self.server.finished.append(record)


async def serve(cert: str, key: str, host: str, port: int, lifetime: float) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["h2"])
    server = Server()
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(lambda: Connection(server), host, port, ssl=context)
    bound = listener.sockets[0].getsockname()[1]
    sys.stdout.write(json.dumps({"port": bound}) + "\n")
    sys.stdout.flush()
    try:
        await asyncio.sleep(lifetime)
    finally:
        listener.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="h2server", description=__doc__.splitlines()[0])
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--lifetime", type=float, default=300)
    args = parser.parse_args(argv)
    if not ipaddress.ip_address(args.host).is_loopback:
        parser.error(f"--host must be a loopback address, not {args.host}")
    try:
        asyncio.run(serve(args.cert, args.key, args.host, args.port, min(args.lifetime, 86_400)))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
