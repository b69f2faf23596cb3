"""Notifications/s one client process sustains against the APNs simulator over TLS HTTP/2.

Runs, in the same run against the same simulator (2 worker processes sharing one port):
our ``APNsClient`` (httpx API over ``noti.apns.transport``), httpx's stock HTTP/2
transport, and aioapns (PyPI), each in its own process so its CPU is its own, sending
the same notifications; then several processes of our client at once, to show the
simulator serves well beyond what one client sends. All clients run on uvloop, as the
sender does.

aioapns has no endpoint option: it connects to the class attributes ``APNS_SERVER`` and
``APNS_PORT`` of its protocol class, so its process sets those two (and passes an
``ssl_context`` trusting the simulator's CA), nothing else.

Usage: python bench/bench_apns_client.py [--count 20000] [--concurrency 1000] [--processes 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.apns import SimulatorProcess

KINDS = ("noti", "httpx", "aioapns")
LABELS = {
    "noti": "noti APNsClient (H2Transport)",
    "httpx": "httpx AsyncClient(http2=True), stock",
    "aioapns": "aioapns 4 (PyPI)",
}
CHILD_TIMEOUT = 300.0  # seconds a client process may take, warm-up included


@dataclass(frozen=True)
class Run:
    kind: str
    sent: int
    ok: int
    seconds: float
    cpu: float
    started: float  # wall clock, to merge concurrent runs
    finished: float

    @property
    def rate(self) -> float:
        return self.sent / self.seconds

    @property
    def cpu_per_notification_us(self) -> float:
        return self.cpu / self.sent * 1e6


# ---------------------------------------------------------------- client process


async def _drive(send: Callable[[int], Awaitable[bool]], count: int, concurrency: int) -> int:
    """Send ``count`` notifications with ``concurrency`` in flight; the number answered 200."""
    next_index = 0
    ok = 0

    async def worker() -> None:
        nonlocal next_index, ok
        while next_index < count:
            index = next_index
            next_index += 1
            if await send(index):
                ok += 1

    await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))
    return ok


async def _client_main(options: argparse.Namespace, key_pem: bytes) -> None:
    from noti.apns.payload import NotificationContent, build_headers, build_payload
    from noti.apns.tokens import load_signing_key, mint

    content = NotificationContent(title="Flash sale", body="Everything must go", data={"deeplink": "app://sale"})
    payload = build_payload(content)
    if options.payload_bytes:  # bench_peers.py's, which every peer sends; the headers stay this content's
        payload = options.payload_bytes
    key = load_signing_key(key_pem)
    tokens = [f"{i:064x}" for i in range(options.count)]
    send: Callable[[int], Awaitable[bool]]
    close: Callable[[], Awaitable[None]]

    if options.kind == "noti":
        from noti.apns.client import APNsClient, client_ssl_context
        from noti.apns.tokens import ProviderTokens

        client = APNsClient(
            options.bundle,
            endpoint=options.url,
            tokens=ProviderTokens(key, options.key_id, options.team_id),
            ssl_context=client_ssl_context(ca_file=options.ca),
            connections=2,
        )

        async def send(index: int) -> bool:
            return (await client.send(tokens[index], content, payload=payload)).ok

        close = client.aclose
    elif options.kind == "httpx":
        import ssl

        import httpx

        authorization = f"bearer {mint(key, options.key_id, options.team_id, int(time.time()))}"
        http = httpx.AsyncClient(
            base_url=options.url,
            http2=True,
            verify=ssl.create_default_context(cafile=options.ca),
            limits=httpx.Limits(max_connections=2, max_keepalive_connections=2),
            timeout=30.0,
        )

        async def send(index: int) -> bool:
            headers = build_headers(content, options.bundle)
            headers["authorization"] = authorization
            response = await http.post(f"/3/device/{tokens[index]}", content=payload, headers=headers)
            return response.status_code == 200

        close = http.aclose
    else:
        import ssl

        import orjson
        from aioapns import APNs, NotificationRequest, PushType
        from aioapns.connection import APNsDevelopmentClientProtocol

        host, _, port = options.url.removeprefix("https://").rpartition(":")
        APNsDevelopmentClientProtocol.APNS_SERVER = host
        APNsDevelopmentClientProtocol.APNS_PORT = int(port)
        message = orjson.loads(payload)
        apns = APNs(
            key=key_pem.decode(),
            key_id=options.key_id,
            team_id=options.team_id,
            topic=options.bundle,
            use_sandbox=True,
            max_connections=2,
            ssl_context=ssl.create_default_context(cafile=options.ca),
        )

        async def send(index: int) -> bool:
            request = NotificationRequest(
                device_token=tokens[index], message=message, notification_id=str(uuid.uuid4()),
                push_type=PushType.ALERT,
            )  # fmt: skip
            return (await apns.send_notification(request)).is_successful

        async def close() -> None:
            apns.pool.close()

    # Warm up: connections open, the token minted, code paths hot; not measured.
    warm = await _drive(send, min(500, options.count), options.concurrency)
    if warm == 0:
        raise SystemExit(f"{options.kind}: the warm-up sent nothing successfully")
    print("ready", flush=True)
    sys.stdin.readline()  # the parent starts every process at once
    cpu_started, started, wall_started = time.process_time(), time.perf_counter(), time.time()
    ok = await _drive(send, options.count, options.concurrency)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    wall_finished = time.time()
    await close()
    print(json.dumps({
        "kind": options.kind, "sent": options.count, "ok": ok, "seconds": seconds, "cpu": cpu,
        "started": wall_started, "finished": wall_finished,
    }), flush=True)  # fmt: skip


# ---------------------------------------------------------------- orchestration


def _simulator_cpu(simulator: SimulatorProcess) -> float:
    """CPU seconds the simulator's processes (its workers included) have used so far (Linux /proc)."""
    pids = [simulator.process.pid]
    children = Path(f"/proc/{simulator.process.pid}/task/{simulator.process.pid}/children")
    pids += [int(pid) for pid in children.read_text().split()]
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def _run_clients(simulator: SimulatorProcess, kinds: list[str], options: argparse.Namespace) -> list[Run]:
    """Start one process per kind, release them together, collect their figures."""
    command = [
        sys.executable, __file__, "--url", simulator.url, "--ca", str(simulator.ca_path),
        "--key", str(simulator.key_path), "--key-id", simulator.key_id, "--team-id", simulator.team_id,
        "--bundle", simulator.bundle_id, "--count", str(options.count), "--concurrency", str(options.concurrency),
    ]  # fmt: skip
    processes = [
        subprocess.Popen([*command, "--client", kind], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for kind in kinds
    ]
    deadline = time.monotonic() + CHILD_TIMEOUT
    try:
        for process in processes:
            assert process.stdout is not None
            if process.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a client process failed to warm up (exit {process.wait(10)})")
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        runs = []
        for process in processes:
            out, _ = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            runs.append(Run(**json.loads(out.strip().splitlines()[-1])))
        return runs
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)


def _print_run(run: Run) -> None:
    print(
        f"  {LABELS[run.kind]:<40} {run.rate:>9,.0f} notifications/s   "
        f"{run.cpu_per_notification_us:>6,.0f} µs CPU/notification   ({run.ok:,}/{run.sent:,} ok)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=20_000, help="notifications per client process")
    parser.add_argument("--concurrency", type=int, default=1000, help="notifications in flight per client")
    parser.add_argument("--processes", type=int, default=3, help="client processes for the capacity run")
    parser.add_argument("--workers", type=int, default=2, help="simulator worker processes")
    parser.add_argument("--client", choices=KINDS, help=argparse.SUPPRESS)
    for hidden in ("--url", "--ca", "--key", "--key-id", "--team-id", "--bundle", "--payload"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    options = parser.parse_args()

    import uvloop

    if options.client:
        options.kind = options.client
        options.payload_bytes = Path(options.payload).read_bytes() if options.payload else None
        uvloop.run(_client_main(options, Path(options.key).read_bytes()))
        return

    # The harness (pytest, SQLAlchemy, redis: ~85k objects) only here, never in a client process, whose
    # every full garbage collection and exit would walk it: its CPU would be the harness's, not the client's.
    from _services import ROOT  # noqa: F401  (puts tests/ on sys.path for the harness)

    from harness.apns import start_simulator, stop_simulator

    with tempfile.TemporaryDirectory(prefix="noti-bench-apns-") as directory:
        simulator = start_simulator(Path(directory), workers=options.workers)
        try:
            print(
                f"{options.count:,} notifications per client process, {options.concurrency} in flight, "
                f"simulator: {options.workers} workers, TLS HTTP/2 on loopback"
            )
            single: dict[str, Run] = {}
            simulator_cpu = 0.0
            for kind in KINDS:  # one at a time, so each competes only with the simulator for the CPUs
                simulator.reset()
                cpu_before = _simulator_cpu(simulator)
                (run,) = _run_clients(simulator, [kind], options)
                counted = simulator.counters()["total"]
                assert counted >= run.sent, f"{kind}: the simulator counted {counted} of {run.sent}"
                if kind == "noti":
                    simulator_cpu = (_simulator_cpu(simulator) - cpu_before) / counted  # warm-up included
                single[kind] = run
                _print_run(run)
            ours = single["noti"]
            print(
                f"  noti vs stock httpx: {ours.rate / single['httpx'].rate:.1f}x notifications/s, "
                f"{single['httpx'].cpu / ours.cpu:.1f}x less CPU per notification"
            )
            print(
                f"  noti vs aioapns:     {ours.rate / single['aioapns'].rate:.1f}x notifications/s, "
                f"{single['aioapns'].cpu / ours.cpu:.1f}x less CPU per notification"
            )

            served_per_s = options.workers / simulator_cpu
            print(
                f"  simulator: {simulator_cpu * 1e6:,.0f} µs CPU per notification, so its {options.workers} workers "
                f"serve {served_per_s:,.0f} notifications/s given {options.workers} cores "
                f"= {served_per_s / ours.rate:.1f}x what one noti process sends"
            )
            simulator.reset()
            runs = _run_clients(simulator, ["noti"] * options.processes, options)
            total = sum(run.sent for run in runs)
            span = max(run.finished for run in runs) - min(run.started for run in runs)
            counted = simulator.counters()["total"]
            cores = os.cpu_count() or 1
            ceiling = cores / (ours.cpu / ours.sent + simulator_cpu)
            print(
                f"  {options.processes} noti processes at once: {total / span:,.0f} notifications/s together "
                f"({counted:,} counted) = {total / span / ours.rate:.1f}x one process; clients and simulator share "
                f"this machine's {cores} cores, whose CPU alone caps them at ~{ceiling:,.0f}/s"
            )
        finally:
            stop_simulator(simulator)


if __name__ == "__main__":
    main()
