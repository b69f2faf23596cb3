"""Gateway throughput on loopback: single sends/s with p50/p99 latency, and bulk tokens/s.

Starts a throwaway PostgreSQL (durable: fsync on) and Redis, runs ``noti gateway`` (one
uvicorn worker) as a subprocess, and drives it from a separate load-generator process:
``wrk`` (Debian package ``wrk``) for single sends, an httpx client for bulk. The peer is the
same gateway with micro-batching off (one transaction and one Redis round trip per send);
both run in the same session on the same servers, and their ratio is printed.

Targets (issue 6): >= 1,500 single sends/s per worker with p99 <= 25 ms; bulk >= 50,000 tokens/s.
The single-send targets hold for one shape and for a mix of shapes (issue 13), run separately.
Usage: python bench/bench_gateway.py [--seconds 10] [--connections 16] [--bulk-requests 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import redis.asyncio as aioredis
from _services import ROOT, PostgresServer, RedisServer
from sqlalchemy import func, insert, select, text

from noti import routes
from noti.gateway.auth import Scope, create_api_key
from noti.store import migrate
from noti.store.db import make_engine
from noti.store.models import Device, Notification

APP = "com.example.bench"
SINGLE_DEVICES = 1_000
BULK_SIZE = 10_000

_WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"
local count = %(devices)d
local i = 0
request = function()
  i = i + 1
  local token = string.format("%%064x", i %% count)
  local text = '","title":"Order shipped","body":"Your order ' .. i .. ' is on its way"}'
  local body = '{"device_token":"' .. token .. text
  return wrk.format(nil, nil, nil, body)
end
"""


# The same load with every request of another shape than the one before: each micro-batch then
# holds records with different columns set (issue 13: a batch must take any mix).
_WRK_MIXED_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"
local count = %(devices)d
local shapes = {
  '"title":"Order shipped"',
  '"body":"Your order is on its way","badge":1',
  '"title":"Sale","subtitle":"Today","sound":"chime.caf","category":"PROMO","thread_id":"sales"',
  '"push_type":"background","content_available":true,"data":{"sync":{"since":1733050000,"kinds":["a","b"]}}',
  '"loc_key":"ORDER_%%@","loc_args":["42"],"priority":5,"expiration":1893456000,"collapse_id":"order-42"',
  '"body":"Wake up","sound":{"critical":1,"name":"alarm.caf","volume":0.8},"interruption_level":"critical"',
  '"push_type":"liveactivity","event":"update","content_state":{"eta":12,"driver":"Ann"},"timestamp":1733050000',
  '"title":"Hi","body":"There","mutable_content":true,"relevance_score":0.5,"data":{"order":7,"tags":["x"]}',
}
local i = 0
request = function()
  i = i + 1
  local token = string.format("%%064x", i %% count)
  local body = '{"device_token":"' .. token .. '",' .. shapes[1 + i %% #shapes] .. '}'
  return wrk.format(nil, nil, nil, body)
end
"""


@dataclass(frozen=True)
class SingleResult:
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    cpu_us_per_send: float = 0.0  # the gateway process's CPU time per request: steadier than rates on a shared machine


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, children included) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(url: str, key: str, seconds: int, connections: int, *, mixed: bool = False) -> SingleResult:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write((_WRK_MIXED_SCRIPT if mixed else _WRK_SCRIPT) % {"key": key, "devices": SINGLE_DEVICES})
    try:
        output = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name,
             f"{url}/api/notifications/"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    finally:
        os.unlink(script.name)
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", output, re.MULTILINE))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    if socket_errors:
        print(f"    wrk socket errors: {socket_errors.group(1)}")
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    return SingleResult(
        rate, _ms(percentiles["50"]), _ms(percentiles["99"]), int(errors.group(1)) if errors else 0, requests
    )


def run_bulk(url: str, key: str, requests: int, concurrency: int) -> float:
    """Tokens/s of ``requests`` bulk sends of 10,000 tokens, ``concurrency`` clients at a time."""
    tokens = [f"{n:064x}" for n in range(BULK_SIZE)]
    body = orjson.dumps({"device_tokens": tokens, "title": "Flash sale", "body": "Everything must go"})
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    def client(count: int) -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=120) as http:
            for _ in range(count):
                response = http.post("/api/notifications/bulk/", content=body)
                response.raise_for_status()
                assert orjson.loads(response.content)["count"] == BULK_SIZE, response.text[:300]

    client(1)  # warm-up
    shares = [requests // concurrency + (1 if i < requests % concurrency else 0) for i in range(concurrency)]
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(client, shares))
    return requests * BULK_SIZE / (time.perf_counter() - started)


_SYNTHETIC_RECORDS = """
INSERT INTO notifications (id, device_token, app, status, push_type, priority, retry_count, created_at)
SELECT md5(g::text || random()::text)::uuid, lpad(to_hex(g % 100000), 64, '0'), :app,
       (ARRAY['sent','sent','sent','sent','sent','sent','sent','failed','invalid_token','queued'])[1 + g % 10],
       'alert', 10, 0, now() - (g % (30 * 24 * 3600)) * interval '1 second'
  FROM generate_series(1, :count) AS g
"""
_SYNTHETIC_COUNTS = """
INSERT INTO notification_counts (bucket, app, status, count)
SELECT date_trunc('hour', created_at), app, 'created', count(*) FROM notifications GROUP BY 1, 2
UNION ALL
SELECT date_trunc('hour', created_at), app, status, count(*) FROM notifications
 WHERE status IN ('sent', 'failed', 'invalid_token') GROUP BY 1, 2, 3
"""


def seed_history(database_url: str, count: int) -> None:
    """``count`` delivery records over 30 days, with the roll-up the writers would have kept."""
    engine = make_engine(database_url, pool_size=1)
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE notifications, notification_counts"))
        connection.execute(text(_SYNTHETIC_RECORDS), {"app": APP, "count": count})
        connection.execute(text(_SYNTHETIC_COUNTS))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE notifications"))
    engine.dispose()


def time_stats(url: str, key: str) -> dict[str, float]:
    """Milliseconds per stats request: overall, and for a window with partial edge hours."""
    now = datetime.now(UTC)
    windows = {
        "overall": {},
        "last 7 days (partial edge hours)": {"since": (now - timedelta(days=7, minutes=17)).isoformat()},
        "a day 10 days ago": {
            "since": (now - timedelta(days=10, minutes=31)).isoformat(),
            "until": (now - timedelta(days=9, minutes=5)).isoformat(),
        },
    }
    timings = {}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        for label, params in windows.items():
            http.get("/api/notifications/stats/", params=params).raise_for_status()
            started = time.perf_counter()
            for _ in range(5):
                http.get("/api/notifications/stats/", params=params).raise_for_status()
            timings[label] = (time.perf_counter() - started) / 5 * 1000
    return timings


class Gateway:
    """``noti gateway`` in a subprocess, one uvicorn worker."""

    def __init__(self, database_url: str, redis_url: str, port: int, *, batching: bool) -> None:
        env = {
            **os.environ,
            "NOTI_DATABASE_URL": database_url,
            "NOTI_REDIS_URL": redis_url,
            "NOTI_GATEWAY_HOST": "127.0.0.1",
            "NOTI_GATEWAY_PORT": str(port),
            "NOTI_GATEWAY_WORKERS": "1",
            "NOTI_GATEWAY_BATCHING": "true" if batching else "false",
            # the per-key limiter stays on (leases from Redis), far above the load
            "NOTI_GATEWAY_RATE_LIMIT": "1000000",
            "NOTI_GATEWAY_RATE_BURST": "1000000",
            "NOTI_APNS_ENVIRONMENT": "production",
            "NOTI_LOG_LEVEL": "WARNING",
        }
        noti = Path(sys.executable).with_name("noti")
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen([str(noti), "gateway"], env=env, cwd=ROOT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("the gateway did not become ready within 60 s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)


@contextmanager
def profiled(pid: int, directory: Path | None, label: str) -> Iterator[None]:
    """py-spy samples ``pid`` while the block runs, into ``directory/<label>.txt``; nothing without a directory."""
    if directory is None:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    output = directory / f"{re.sub(r'[^a-z0-9]+', '-', label.lower()).strip('-')}.txt"
    spy = Path(sys.executable).with_name("py-spy")
    recorder = subprocess.Popen(
        [str(spy), "record", "--nonblocking", "--pid", str(pid), "--rate", "200", "--format", "raw",
         "--output", str(output)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)
        recorder.wait(timeout=60)
        print(f"    profile: {output}")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _serve_app(redis_url: str) -> None:
    """The route of APP, as the operator publishes it: without one the gateway refuses every send."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        await routes.claim(client, APP, "production", routes.Route("default/bench", "BENCHTEAM1.BENCHKEY01"))
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="Duration of each single-send run")
    parser.add_argument("--connections", type=int, default=24, help="Concurrent connections of the load generator")
    parser.add_argument("--bulk-requests", type=int, default=12, help="Bulk requests of 10,000 tokens")
    parser.add_argument("--bulk-clients", type=int, default=2, help="Bulk requests in flight at once")
    parser.add_argument("--no-peer", action="store_true", help="Skip the run without micro-batching")
    parser.add_argument(
        "--stats-records", type=int, default=0, help="Then time the stats route over this many stored records"
    )
    parser.add_argument(
        "--profile", type=Path, metavar="DIR",
        help="Record py-spy profiles of the gateway during each measured run into DIR (collapsed stacks)",
    )  # fmt: skip
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("the load generator is wrk: apt-get install -y wrk")

    postgres, redis_server = PostgresServer(durable=True), RedisServer()
    postgres.init()
    postgres.start()
    redis_server.start()
    try:
        database_url = postgres.create_database("noti")
        engine = make_engine(database_url, pool_size=2)
        migrate.upgrade(engine)
        key = create_api_key(engine, "bench", [Scope.SEND, Scope.READ])
        asyncio.run(_serve_app(redis_server.url))
        with engine.begin() as connection:
            connection.execute(insert(Device), [{"app": APP, "device_token": f"{n:064x}"} for n in range(BULK_SIZE)])
        print(f"gateway: 1 uvicorn worker, PostgreSQL (fsync on) + Redis on loopback, {os.cpu_count()} cores shared")
        print(f"single sends: wrk, {args.connections} connections, {args.seconds} s per run")

        results: dict[str, SingleResult] = {}
        bulk_rate = 0.0
        modes = [("micro-batched", True, False), ("micro-batched, mixed shapes", True, True)]
        modes += [] if args.no_peer else [("one send per transaction", False, False)]
        for label, batching, mixed in modes:
            gateway = Gateway(database_url, redis_server.url, _free_port(), batching=batching)
            try:
                run_wrk(gateway.url, key, 2, args.connections, mixed=mixed)  # warm-up
                cpu_before = cpu_seconds(gateway.process.pid)
                with profiled(gateway.process.pid, args.profile, label):
                    result = run_wrk(gateway.url, key, args.seconds, args.connections, mixed=mixed)
                cpu = (cpu_seconds(gateway.process.pid) - cpu_before) / max(result.requests, 1) * 1e6
                results[label] = result = replace(result, cpu_us_per_send=cpu)
                print(
                    f"  {label:<28} {result.rate:>8,.0f} sends/s   p50 {result.p50_ms:6.2f} ms   "
                    f"p99 {result.p99_ms:6.2f} ms   errors {result.errors}   gateway CPU {cpu:5.0f} us/send"
                )
                if batching and not mixed:
                    bulk_rate = run_bulk(gateway.url, key, args.bulk_requests, args.bulk_clients)
            finally:
                gateway.stop()
        with engine.connect() as connection:
            records = connection.execute(select(func.count()).select_from(Notification)).scalar_one()
        engine.dispose()
        stats_timings: dict[str, float] = {}
        if args.stats_records:
            seed_history(database_url, args.stats_records)
            gateway = Gateway(database_url, redis_server.url, _free_port(), batching=True)
            try:
                stats_timings = time_stats(gateway.url, key)
            finally:
                gateway.stop()

        print(f"bulk: {args.bulk_requests} requests of {BULK_SIZE:,} tokens, {args.bulk_clients} in flight")
        print(f"  {'bulk':<26} {bulk_rate:>8,.0f} tokens/s")
        print(f"records written in total: {records:,}")
        batched = results["micro-batched"]
        mixed_run = results["micro-batched, mixed shapes"]
        for label, ms in stats_timings.items():
            print(f"  stats over {args.stats_records:,} records, {label}: {ms:.1f} ms")
        print("targets:")
        for name, run in (("one shape", batched), ("mixed shapes", mixed_run)):
            print(f"  single >= 1,500 sends/s, {name}: {run.rate:,.0f} {'ok' if run.rate >= 1500 else 'MISSED'}")
            print(f"  p99 <= 25 ms, {name}:           {run.p99_ms:.2f} ms {'ok' if run.p99_ms <= 25 else 'MISSED'}")
            print(f"  no errors, {name}:              {run.errors} {'ok' if run.errors == 0 else 'MISSED'}")
        print(f"  bulk >= 50,000 tokens/s: {bulk_rate:,.0f} {'ok' if bulk_rate >= 50_000 else 'MISSED'}")
        if "one send per transaction" in results:
            naive = results["one send per transaction"]
            print(
                f"ratio micro-batched / one per transaction: throughput x{batched.rate / naive.rate:.2f}, "
                f"p99 x{batched.p99_ms / naive.p99_ms:.2f}"
            )
    finally:
        redis_server.cleanup()
        postgres.cleanup()


if __name__ == "__main__":
    main()
