"""One ``noti sender`` process end to end: stream → APNs simulator → PostgreSQL record.

Starts throwaway PostgreSQL (fsync on) and Redis, the APNs simulator as a subprocess, queues
``--count`` notifications the way the gateway does, then runs one sender until every record
is final. Prints notifications/s, the sender's CPU seconds per notification (its own cost,
apart from the machine's noise) and its peak RSS, against the targets.
Usage: python bench/bench_sender.py [--count 50000] [--profile sender.prof]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis
from _services import PostgresServer, RedisServer

from harness.apns import start_simulator, stop_simulator
from harness.procs import answers_ok, free_port, wait_until
from harness.sender import enqueue, final_count, statuses
from noti.store import migrate
from noti.store.db import make_engine

TARGET_RATE = 2000.0  # notifications/s
TARGET_RSS_MB = 100.0  # issue 17
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14 and 15)


def peak_rss_mb(pid: int) -> float:
    """The process's high-water resident set size (VmHWM) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000, help="notifications to send")
    parser.add_argument("--profile", type=Path, help="run the sender under cProfile, writing its stats here")
    args = parser.parse_args()

    postgres, redis_server = PostgresServer(durable=True), RedisServer()
    workdir = Path(tempfile.mkdtemp(prefix="noti-bench-sender-"))
    simulator = None
    sender: subprocess.Popen[bytes] | None = None
    try:
        postgres.init()
        postgres.start()
        redis_server.start()
        simulator = start_simulator(workdir)
        url = postgres.create_database("noti")
        engine = make_engine(url)
        migrate.upgrade(engine)
        client = redis.Redis.from_url(redis_server.url)

        started = time.perf_counter()
        enqueue(engine, client, simulator, [f"{i:064x}" for i in range(args.count)], with_devices=True)
        print(f"queued {args.count:,} notifications in {time.perf_counter() - started:.1f}s")

        health_port = free_port()
        env = {
            **os.environ, **simulator.sender_env(), "NOTI_DATABASE_URL": url, "NOTI_REDIS_URL": redis_server.url,
            "NOTI_SENDER_HEALTH_PORT": str(health_port), "NOTI_LOG_LEVEL": "WARNING",
        }  # fmt: skip
        # Away from the repository root, whose operator/ folder would shadow the standard library.
        profile = ["-m", "cProfile", "-o", str(args.profile.resolve())] if args.profile else []
        sender = subprocess.Popen(
            [
                sys.executable,
                *profile,
                "-m",
                "noti.cli",
                "sender",
                "--credential",
                simulator.sender_env()["NOTI_CREDENTIAL"],
            ],
            env=env,
            cwd=workdir,
        )
        pid = sender.pid

        def serving() -> bool:
            if sender is not None and sender.poll() is not None:
                raise RuntimeError(f"the sender exited with {sender.returncode}")
            return answers_ok(f"http://127.0.0.1:{health_port}/healthz")

        wait_until(serving, timeout=60, what="noti sender")
        # The clock starts once the sender serves: imports and connecting are not per-notification cost.
        cpu_start, clock = cpu_seconds(pid), time.perf_counter()
        done = 0
        while done < args.count:
            time.sleep(0.1)
            done = final_count(engine)
            if sender.poll() is not None:
                raise RuntimeError(f"the sender exited with {sender.returncode} at {done:,} final")
            if time.perf_counter() - clock > 600:
                raise RuntimeError(f"only {done:,} final after 600s")
        elapsed = time.perf_counter() - clock
        cpu = cpu_seconds(pid) - cpu_start
        rss = peak_rss_mb(pid)
        recorded = statuses(engine)
        metrics = httpx.get(f"http://127.0.0.1:{health_port}/metrics", timeout=5).text
        retried = {
            line.split('reason="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("noti_sender_notifications_total{") and 'result="retried"' in line
        }
        apns = simulator.counters()
        sender.send_signal(signal.SIGTERM)
        code = sender.wait(60)
        engine.dispose()
        client.close()

        rate = args.count / elapsed
        print(f"records: {recorded}; sender exited with {code} after SIGTERM")
        print(f"APNs answered {apns['total']:,} requests: {apns['by_outcome']}; the sender retried {retried or 'none'}")
        print(f"cores: {os.cpu_count()} shared by the sender, the simulator, Redis and PostgreSQL (fsync on)")
        print(f"  end to end        {rate:>10,.0f} notifications/s in {elapsed:.1f}s   (target >= {TARGET_RATE:,.0f})"
              f"  {'OK' if rate >= TARGET_RATE else 'BELOW TARGET'}")  # fmt: skip
        print(f"  sender CPU        {cpu / args.count * 1e6:>10,.0f} µs/notification ({cpu:.1f} CPU s, "
              f"{cpu / elapsed:.0%} of a core)")  # fmt: skip
        print(f"  sender peak RSS   {rss:>10,.1f} MB                          (target <= {TARGET_RSS_MB:,.0f})"
              f"  {'OK' if rss <= TARGET_RSS_MB else 'ABOVE TARGET'}")  # fmt: skip
    finally:
        if sender is not None and sender.poll() is None:
            sender.kill()
            sender.wait(10)
        if simulator is not None:
            stop_simulator(simulator)
        redis_server.cleanup()
        postgres.cleanup()


if __name__ == "__main__":
    main()
