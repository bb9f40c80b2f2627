"""The bench's load generator: POST /v1/orders over raw asyncio streams with keep-alive.

A lean client, so the bench measures the server and not itself: each request's bytes are built
before the clock starts, and an answer is read as a status line, headers and a Content-Length
body (no HTTP library on the hot path). It runs in its own process, so its CPU time is its own:
it reports `time.process_time()` for the run.

Closed loop (`rate` null): `connections` clients each send their next order when the last is
answered. Open loop (`rate` R): order i is due at start + i/R, whatever came back, and its
latency is counted from when it was due (a slow answer delays the next ones, and that delay is
counted, not hidden). Reads a JSON spec on stdin (`url`, `key`, `connections`, `rate`,
`orders`: the bodies), writes a JSON result on stdout. Run by bench/end_to_end.py.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any
from urllib.parse import urlsplit


def request(host: str, key: str, body: dict[str, Any]) -> bytes:
    payload = json.dumps(body, separators=(",", ":")).encode()
    head = (
        f"POST /v1/orders HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
        f"Idempotency-Key: place-{body['id']}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


async def answer(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """One response: its status, its body, and whether the server will close the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:] if line)
    }
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readuntil(b"\r\n")
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, body, headers.get("connection", "").lower() == "close"


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    parts = urlsplit(spec["url"])
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    work = [(o["id"], request(f"{host}:{port}", spec["key"], o)) for o in spec["orders"]]
    rate: float | None = spec.get("rate")
    queue: asyncio.Queue[tuple[str, bytes, float | None] | None] = asyncio.Queue()
    latencies: list[float] = []
    answered: dict[str, float] = {}
    errors: list[str] = []

    async def client() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        while (item := await queue.get()) is not None:
            order_id, data, due = item
            sent = time.perf_counter()
            writer.write(data)
            status, body, close = await answer(reader)
            done = time.perf_counter()
            latencies.append(done - (sent if due is None else due))
            if status == 201:
                answered[order_id] = done
            else:
                errors.append(f"{status} {body[:200].decode(errors='replace')}")
            if close:
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
        writer.close()

    cpu = time.process_time()
    began = time.perf_counter()
    clients = [asyncio.create_task(client()) for _ in range(spec["connections"])]
    for i, (order_id, data) in enumerate(work):
        due = None
        if rate:
            due = began + i / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
        queue.put_nowait((order_id, data, due))
    for _ in clients:
        queue.put_nowait(None)
    await asyncio.gather(*clients)
    ended = time.perf_counter()
    return {
        "began": began,
        "ended": ended,
        "latencies": latencies,
        "answered": answered,
        "errors": errors,
        "cpu_s": time.process_time() - cpu,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(json.load(sys.stdin)))))
