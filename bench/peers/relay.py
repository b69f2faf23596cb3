"""A loopback TCP relay that counts the bytes on the wire, and an HTTP CONNECT proxy on the same port.

bench/bench_peers.py puts one in front of each APNs server under test. A connection that starts with
``CONNECT`` (gorush's ``core.http_proxy``) is answered ``200`` and tunnelled to the upstream whatever
host it names, so gorush's traffic for Apple's sandbox host reaches the server under test; any other
connection (a client speaking TLS straight away) is relayed as it is. Only the bytes after the
CONNECT exchange are counted: what the client and the server said to each other.

Prints ``{"port": N}`` first; then answers each stdin line ``count`` with
``{"up": B, "down": B, "connections": N}`` (``reset`` zeroes them first) and exits when stdin closes.
Usage: python bench/peers/relay.py --upstream 127.0.0.1:2197
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys

CHUNK = 1 << 16
counters = {"up": 0, "down": 0, "connections": 0}


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str) -> None:
    try:
        while data := await reader.read(CHUNK):
            counters[direction] += len(data)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, RuntimeError):  # RuntimeError: the other side closed
        pass
    finally:
        with contextlib.suppress(RuntimeError):
            writer.close()


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: tuple[str, int]) -> None:
    first = await reader.read(CHUNK)
    if not first:
        writer.close()
        return
    if first.startswith(b"CONNECT "):
        while b"\r\n\r\n" not in first:  # the request's headers, then the tunnel
            more = await reader.read(CHUNK)
            if not more:
                writer.close()
                return
            first += more
        _, _, first = first.partition(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
    try:
        up_reader, up_writer = await asyncio.open_connection(*upstream)
    except OSError:
        writer.close()
        return
    counters["connections"] += 1
    if first:
        counters["up"] += len(first)
        up_writer.write(first)
    await asyncio.gather(_pipe(reader, up_writer, "up"), _pipe(up_reader, writer, "down"))


async def main(upstream: tuple[str, int]) -> None:
    server = await asyncio.start_server(lambda r, w: _serve(r, w, upstream), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"port": port}), flush=True)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while line := await stdin.readline():
        if line.strip() == b"reset":
            counters.update(up=0, down=0, connections=0)
        print(json.dumps(counters), flush=True)
    # Our parent is done: leave without cancelling the tunnels still open (nothing to flush).
    os._exit(0)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--upstream", required=True, help="host:port of the server under test")
    host, _, port = parser.parse_args().upstream.rpartition(":")
    try:
        import uvloop

        uvloop.run(main((host, int(port))))
    except ImportError:
        asyncio.run(main((host, int(port))))
