"""Importing an audience on PostgreSQL: ``noti devices import`` (bulk route) against one request per device.

Starts a throwaway PostgreSQL (durable: fsync on) and Redis, runs ``noti gateway`` (one
uvicorn worker) as a subprocess, writes a CSV and a JSON-lines file of devices with owners
and tags, and times ``noti devices import`` (itself a subprocess, as a user runs it): new
devices from CSV, then the same devices again from JSON lines (every one an update). The
peer is the path the issue measured, one ``POST /api/devices/`` per device, driven by a few
concurrent clients on the same gateway in the same run; the ratio is printed.

The machine may be shared, so next to the wall-clock rate it prints the CPU seconds each
process spent per 100,000 devices (the CLI, the gateway, PostgreSQL's backends), which
another process's load does not change much.

Target (issue 11): >= 50,000 devices/s.
Usage: python bench/bench_devices.py [--devices 200000] [--peer-devices 3000]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
from _services import ROOT, PostgresServer, RedisServer
from bench_gateway import Gateway, _free_port
from sqlalchemy import func, select

from noti.gateway.auth import Scope, create_api_key
from noti.store import migrate
from noti.store.db import make_engine
from noti.store.models import Device, DeviceOwner

APP = "com.example.bench"


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> tuple[float, float]:
    """(CPU seconds of the process, of its waited-for children) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(value) for value in fields[11:15])
    return (utime + stime) / _TICK, (cutime + cstime) / _TICK


def tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and its child processes (the postmaster and its backends, or the gateway)."""
    own, waited = _cpu(root)
    total = own + waited
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == root:
                total += sum(_cpu(int(stat.parent.name)))
        except (OSError, ValueError):  # a process that ended meanwhile
            continue
    return total


@dataclass(frozen=True)
class Run:
    rate: float
    cli: float  # CPU seconds per 100,000 devices
    gateway: float
    postgres: float


def _device(n: int) -> dict[str, object]:
    return {"device_token": f"{n:064x}", "app": APP, "owner": f"user-{n // 2}", "tags": ["vip"] if n % 3 else []}


def write_files(directory: Path, count: int) -> tuple[Path, Path]:
    csv_file, jsonl_file = directory / "audience.csv", directory / "audience.jsonl"
    with csv_file.open("w") as out:
        out.write("device_token,app,owner,tags,is_active\n")
        for n in range(count):
            d = _device(n)
            out.write(f"{d['device_token']},{APP},{d['owner']},{'vip' if d['tags'] else ''},true\n")
    with jsonl_file.open("wb") as out:
        for n in range(count):
            out.write(orjson.dumps({**_device(n), "is_active": n % 10 != 0}) + b"\n")
    return csv_file, jsonl_file


def run_import(url: str, key: str, path: Path, count: int, label: str, extra: list[str], pids: tuple[int, int]) -> Run:
    noti = Path(sys.executable).with_name("noti")
    env = {**os.environ, "NOTI_URL": url, "NOTI_API_KEY": key, "NOTI_LOG_LEVEL": "WARNING"}
    gateway_pid, postmaster_pid = pids
    before = (resource.getrusage(resource.RUSAGE_CHILDREN), tree_cpu(gateway_pid), tree_cpu(postmaster_pid))
    started = time.perf_counter()
    result = subprocess.run(
        [str(noti), "devices", "import", str(path), *extra], env=env, cwd=ROOT, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"noti devices import failed: {result.stderr[-2000:]}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    per = 100_000 / count
    run = Run(
        rate=count / elapsed,
        cli=(usage.ru_utime + usage.ru_stime - before[0].ru_utime - before[0].ru_stime) * per,
        gateway=(tree_cpu(gateway_pid) - before[1]) * per,
        postgres=(tree_cpu(postmaster_pid) - before[2]) * per,
    )
    print(f"  {label:<48} {run.rate:>9,.0f} devices/s  ({elapsed:.2f} s, process start included)")
    print(f"    CPU s per 100k devices: CLI {run.cli:.2f}, gateway {run.gateway:.2f}, PostgreSQL {run.postgres:.2f}")
    return run


def one_request_per_device(url: str, key: str, count: int, clients: int) -> float:
    """Devices/s registering ``count`` new devices one POST /api/devices/ at a time, ``clients`` at once."""
    headers = {"Authorization": f"Bearer {key}"}

    def client(numbers: range) -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
            for n in numbers:
                response = http.post("/api/devices/", json={**_device(n), "device_token": f"{n:062x}ff"})
                response.raise_for_status()

    share = count // clients
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, [range(i * share, (i + 1) * share) for i in range(clients)]))
    rate = share * clients / (time.perf_counter() - started)
    print(f"  {'one POST /api/devices/ per device (peer), ' + str(clients) + ' clients':<48} {rate:>9,.0f} devices/s")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200_000)
    parser.add_argument("--peer-devices", type=int, default=3_000, help="the slow peer registers fewer devices")
    parser.add_argument("--peer-clients", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()

    postgres, redis_server = PostgresServer(durable=True), RedisServer()
    postgres.init()
    postgres.start()
    redis_server.start()
    gateway = None
    try:
        database_url = postgres.create_database("noti")
        engine = make_engine(database_url, pool_size=2)
        migrate.upgrade(engine)
        key = create_api_key(engine, "bench", [Scope.SEND, Scope.READ])
        gateway = Gateway(database_url, redis_server.url, _free_port(), batching=True)
        options = ["--batch-size", str(args.batch_size), "--concurrency", str(args.concurrency)]
        print(f"gateway: 1 uvicorn worker, PostgreSQL (fsync on) + Redis on loopback, {os.cpu_count()} cores shared")
        print(f"{args.devices:,} devices ({args.devices // 2:,} owners), batches of {args.batch_size:,}, "
              f"{args.concurrency} in flight:")  # fmt: skip
        with tempfile.TemporaryDirectory() as directory:
            csv_file, jsonl_file = write_files(Path(directory), args.devices)
            pids = (gateway.process.pid, int((postgres.data / "postmaster.pid").read_text().split()[0]))
            new = "noti devices import, CSV, all new"
            created = run_import(gateway.url, key, csv_file, args.devices, new, options, pids)
            again = "noti devices import, JSON lines, all updates"
            updated = run_import(gateway.url, key, jsonl_file, args.devices, again, options, pids)
        with engine.connect() as connection:
            devices = connection.execute(select(func.count()).select_from(Device)).scalar_one()
            owners = connection.execute(select(func.count()).select_from(DeviceOwner)).scalar_one()
        assert (devices, owners) == (args.devices, args.devices // 2), (devices, owners)
        peer = one_request_per_device(gateway.url, key, args.peer_devices, args.peer_clients)
        engine.dispose()
        for label, run in (("new", created), ("updates", updated)):
            busiest = max(("CLI", run.cli), ("gateway", run.gateway), ("PostgreSQL", run.postgres), key=lambda p: p[1])
            print(
                f"  {label}: with a core per process the busiest, {busiest[0]}, would bound the import near "
                f"{100_000 / busiest[1]:,.0f} devices/s (a projection from CPU time, not a measurement)"
            )
        slower = min(created.rate, updated.rate)
        print("target:")
        print(f"  import >= 50,000 devices/s: {slower:,.0f} (the slower run) {'ok' if slower >= 50_000 else 'MISSED'}")
        print(
            f"ratio import / one request per device: new x{created.rate / peer:.1f}, updates x{updated.rate / peer:.1f}"
        )
    finally:
        if gateway is not None:
            gateway.stop()
        redis_server.cleanup()
        postgres.cleanup()


if __name__ == "__main__":
    main()
