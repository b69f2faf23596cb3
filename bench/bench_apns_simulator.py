"""CPU the APNs simulator spends per notification in accept mode (one worker), under our client's load.

Starts ``noti apns-sim`` with one worker, drives it with ``bench_apns_client.py``'s client
processes, and prints the simulator's CPU per notification read from /proc (TLS included),
beside the clients' own. Issue 17's target is ≤ 40 µs per notification.

``--replay`` measures instead, in this process, the simulator's own Python per request: a
client's byte stream is recorded once (jh2 as the client), then replayed into fresh
connections with no TLS and no sockets, so the figure barely depends on the machine's load.

Usage: python bench/bench_apns_simulator.py [--count 20000] [--concurrency 1000] [--processes 1] [--rounds 3]
       python bench/bench_apns_simulator.py --replay [--count 20000] [--batch 100]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _services import ROOT  # noqa: F401  (puts tests/ on sys.path for the harness)
from bench_apns_client import _run_clients, _simulator_cpu

from harness.apns import start_simulator, stop_simulator


class _Sink:
    """A transport that keeps nothing."""

    def write(self, data: bytes) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


async def _replay(count: int, batch: int, rounds: int) -> list[float]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from jh2.config import H2Configuration
    from jh2.connection import H2Connection

    from noti.apns.payload import NotificationContent, build_headers, build_payload
    from noti.apns.simulator.protocol import APNsProtocol
    from noti.apns.simulator.rules import RegisteredKey
    from noti.apns.simulator.state import State
    from noti.apns.tokens import mint

    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    state = State(keys=[RegisteredKey("TEAM", "KID", ("com.example.app",), public.decode())])
    authorization = f"bearer {mint(key, 'KID', 'TEAM', int(time.time()))}"
    content = NotificationContent(title="Flash sale", body="Everything must go", data={"deeplink": "app://sale"})
    payload, headers = build_payload(content), list(build_headers(content, "com.example.app").items())

    # Record: a live exchange, so the client's flow control and HPACK state are real.
    server, client = APNsProtocol(state, 1000), H2Connection(H2Configuration(client_side=True))
    written: list[bytes] = []
    server.connection_made(_Sink())  # type: ignore[arg-type]
    server.transport.write = written.append  # type: ignore[union-attr, method-assign]
    client.initiate_connection()
    chunks, sent = [], 0
    while sent < count:
        for _ in range(min(batch, count - sent)):
            stream_id = client.get_next_available_stream_id()
            client.send_headers(stream_id, [
                (":method", "POST"), (":scheme", "https"), (":path", f"/3/device/{sent:064x}"),
                (":authority", "127.0.0.1:2197"), ("authorization", authorization), *headers,
                ("apns-id", str(uuid.uuid4())), ("content-length", str(len(payload))),
            ])  # fmt: skip
            client.send_data(stream_id, payload, end_stream=True)
            sent += 1
        chunks.append(client.data_to_send())
        server.data_received(chunks[-1])
        await asyncio.sleep(0)
        client.receive_data(b"".join(written))
        written.clear()
        for stream_id in [stream_id for stream_id, stream in client.streams.items() if stream.closed]:
            del client.streams[stream_id]

    figures = []
    for _ in range(rounds):
        state.reset()
        server = APNsProtocol(state, 1000)
        server.connection_made(_Sink())  # type: ignore[arg-type]
        started = time.process_time()
        for chunk in chunks:
            server.data_received(chunk)
            await asyncio.sleep(0)
        figures.append((time.process_time() - started) / count * 1e6)
        assert state.counters()["by_outcome"] == {"Success": count}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="notifications per client process")
    parser.add_argument("--concurrency", type=int, default=1000, help="notifications in flight per client")
    parser.add_argument("--processes", type=int, default=1, help="client processes at once")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--replay", action="store_true", help="in-process: the simulator's Python, no TLS")
    parser.add_argument("--batch", type=int, default=100, help="with --replay: requests per read")
    options = parser.parse_args()
    if options.replay:
        figures = asyncio.run(_replay(options.count, options.batch, options.rounds))
        print(" ".join(f"{figure:.1f}" for figure in figures), "µs CPU per request, replayed without TLS")
        print(f"simulator median: {statistics.median(figures):.1f} µs CPU per request (its Python alone)")
        return
    with tempfile.TemporaryDirectory(prefix="noti-bench-sim-") as directory:
        simulator = start_simulator(Path(directory), workers=1)
        try:
            figures = []
            for round_ in range(1, options.rounds + 1):
                before = _simulator_cpu(simulator)
                runs = _run_clients(simulator, ["noti"] * options.processes, options)
                sent = sum(run.sent for run in runs)
                # The clients' warm-up (≤ 500 each) is counted by the simulator too.
                served = sent + min(500, options.count) * options.processes
                per = (_simulator_cpu(simulator) - before) / served * 1e6
                client = sum(run.cpu for run in runs) / sent * 1e6
                rate = sum(run.rate for run in runs)
                figures.append(per)
                print(
                    f"round {round_}: simulator {per:6.1f} µs CPU/notification; "
                    f"client {client:6.1f} µs; {rate:,.0f} notifications/s; ok {sum(r.ok for r in runs):,}/{sent:,}"
                )
            print(f"simulator median: {statistics.median(figures):.1f} µs CPU per notification")
        finally:
            stop_simulator(simulator)


if __name__ == "__main__":
    main()
