"""Noti beside its Go and Java peers, in one run, against the same APNs servers.

Servers (each behind a counting TCP relay, bench/peers/relay.py): Noti's simulator in accept mode
(``noti apns-sim``, 2 workers) and Pushy's MockApnsServer in accept-all mode. Peers, each in its own
process so its CPU is its own:

- APNs clients: Noti's ``APNsClient``, stock httpx HTTP/2 and aioapns (the client processes of
  bench/bench_apns_client.py), Pushy's ``ApnsClient`` (Java) and sideshow/apns2 (Go), the last two
  our load clients in bench/peers/;
- full servers: ``noti sender`` (Redis stream → APNs → PostgreSQL records, fsync on) and gorush's
  server (REST → its local queue → APNs; its APNs traffic reaches the server under test through the
  relay's CONNECT proxy, its documented ``core.http_proxy``).

Same payload, token auth with the same key, 2 connections and 1,000 in flight (gorush: its
``max_concurrent_pushes``, over the connection Go's HTTP/2 transport opens), rounds interleaved
(round → server → peer). Per run: notifications/s, CPU µs per notification of the peer's process and
of the APNs server's processes (utime + stime from /proc), the peer's peak RSS (its VmHWM at exit,
from wait4) and bytes on the wire per notification (both directions, counted by the relay in a pass
of its own so the relay's cost stays out of the timed runs; gorush always goes through it).
Figures are medians over rounds; ratios are against Noti (its client, or its sender for the full
servers). The peers come from scripts/build-peers.sh (cached).

Usage: python bench/bench_peers.py [--count 20000] [--rounds 2] [--quick] [--report bench/REPORT.md]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from _services import ROOT, PostgresServer, RedisServer

from harness.apns import SimulatorProcess, start_simulator, stop_simulator
from harness.procs import answers_ok, free_port, reap, wait_until

BENCH = ROOT / "bench"
BUILD_SCRIPT = ROOT / "scripts" / "build-peers.sh"
APPLE_SANDBOX_HOST = "api.sandbox.push.apple.com"  # gorush's APNs host (development), reached via the proxy
CLIENTS = ("noti", "httpx", "aioapns", "pushy", "apns2")
FULL_SERVERS = ("noti-sender", "gorush")
PEERS = CLIENTS + FULL_SERVERS
LABELS = {
    "noti": "Noti APNsClient",
    "httpx": "stock httpx HTTP/2",
    "aioapns": "aioapns 4",
    "pushy": "Pushy 0.15.4 ApnsClient (Java)",
    "apns2": "sideshow/apns2 0.25 (Go)",
    "noti-sender": "noti sender (stream → APNs → PostgreSQL)",
    "gorush": "gorush 1.22.0 (REST → queue → APNs)",
}
SHORT_LABELS = {  # the plots' axis
    "noti": "Noti\nAPNsClient",
    "httpx": "httpx\n(stock HTTP/2)",
    "aioapns": "aioapns 4",
    "pushy": "Pushy 0.15.4\n(Java)",
    "apns2": "apns2 0.25\n(Go)",
    "noti-sender": "noti sender\n(full server)",
    "gorush": "gorush 1.22\n(full server)",
}
SERVERS = ("simulator", "pushy")
SERVER_LABELS = {"simulator": "Noti simulator (accept)", "pushy": "Pushy MockApnsServer (accept-all)"}
CONNECTIONS = 2
WARMUP = 500  # notifications each client sends before its measured run (bench_apns_client.py's)
WIRE_COUNT = 2000  # notifications in each peer's pass through the relay
RUN_TIMEOUT = 600.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
GORUSH_BATCH = 1000  # device tokens per gorush REST request


# ---------------------------------------------------------------- /proc


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of running processes (all their threads), from /proc/<pid>/stat."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / CLOCK_TICKS


def reset_peak_rss(pids: list[int]) -> None:
    """Start the processes' VmHWM afresh (writing 5 to clear_refs), so a run's peak is its own."""
    for pid in pids:
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_rss_mb(pids: list[int]) -> float:
    """The sum of the processes' high-water resident set sizes (VmHWM), in MB."""
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
    return total / 1024


def children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


# ---------------------------------------------------------------- servers under test


@dataclass
class Relay:
    """bench/peers/relay.py in front of one server: plain relay and CONNECT proxy on one port."""

    process: subprocess.Popen[str]
    port: int

    @classmethod
    def start(cls, upstream_port: int) -> Relay:
        process = subprocess.Popen(
            [sys.executable, str(BENCH / "peers" / "relay.py"), "--upstream", f"127.0.0.1:{upstream_port}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert process.stdout is not None
        return cls(process, json.loads(process.stdout.readline())["port"])

    def _ask(self, command: str) -> dict[str, int]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        counters: dict[str, int] = json.loads(self.process.stdout.readline())
        return counters

    def reset(self) -> None:
        self._ask("reset")

    def count(self) -> dict[str, int]:
        """Bytes each way and connections opened since the last reset."""
        return self._ask("count")

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(10)


@dataclass
class Server:
    """One APNs server under test, its relay and the processes whose CPU is the server's."""

    name: str
    port: int
    relay: Relay
    pids: Callable[[], list[int]]
    stop: Callable[[], None]

    def url(self, *, via_relay: bool) -> str:
        return f"https://127.0.0.1:{self.relay.port if via_relay else self.port}"


def start_simulator_server(directory: Path, cert: Path, key: Path, workers: int) -> tuple[Server, SimulatorProcess]:
    simulator = start_simulator(directory, workers=workers, extra=("--cert", str(cert), "--key", str(key)))
    port = int(simulator.url.rsplit(":", 1)[1])
    relay = Relay.start(port)
    main_pid = simulator.process.pid

    def stop() -> None:
        relay.stop()
        stop_simulator(simulator)

    server = Server("simulator", port, relay, lambda: [main_pid, *children(main_pid)], stop)
    return server, simulator


def start_pushy_server(jar: Path, cert: Path, key: Path) -> Server:
    java = shutil.which("java")
    if java is None:
        raise SystemExit("bench_peers: java is not installed (Pushy's server and client need a JDK 17+)")
    process = subprocess.Popen(
        [java, "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", str(jar), "dev.noti.benchpeers.AcceptAllServer",
         "--cert", str(cert), "--key", str(key), "--port", "0", "--max-concurrent-streams", "1000"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise SystemExit(f"bench_peers: Pushy's server did not start (exit {process.wait(10)})")
    port = int(json.loads(line)["port"])
    relay = Relay.start(port)

    def stop() -> None:
        relay.stop()
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    return Server("pushy", port, relay, lambda: [process.pid], stop)


# ---------------------------------------------------------------- one run of one peer


@dataclass(frozen=True)
class Setup:
    """What every peer is given: the key, the CA, the payload, the peers' binaries."""

    directory: Path
    peers_dir: Path
    ca: Path
    key_path: Path
    key_id: str
    team_id: str
    bundle: str
    payload: Path
    concurrency: int
    postgres: PostgresServer | None
    redis: RedisServer | None


@dataclass
class Run:
    peer: str
    server: str
    round: int
    sent: int
    ok: int
    seconds: float
    cpu: float  # CPU seconds of the peer's process over the run
    server_cpu: float  # CPU seconds of the APNs server's processes over the run
    peak_rss_mb: float  # the peer process's peak RSS
    wire_bytes: int | None = None  # both directions, when the run went through the relay
    wire_connections: int | None = None  # TCP connections the relay saw opened during the run

    @property
    def rate(self) -> float:
        return self.sent / self.seconds

    @property
    def cpu_us(self) -> float:
        return self.cpu / self.sent * 1e6

    @property
    def server_cpu_us(self) -> float:
        return self.server_cpu / self.sent * 1e6


def _read_result(process: subprocess.Popen[str], timeout: float) -> tuple[dict[str, Any], float]:
    """The client's result line, and its peak RSS (MB): VmHWM, sampled until the line comes.

    Not wait4's ru_maxrss: a child starts with its parent's, which exec does not reset.
    """
    assert process.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(process.stdout.readline() if process.stdout else ""))
    reader.start()
    peak, deadline = 0.0, time.monotonic() + timeout
    while reader.is_alive():
        with suppress(OSError, RuntimeError):  # it may have just exited: the last sample stands
            peak = max(peak, peak_rss_mb([process.pid]))
        reader.join(0.05)
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"a peer process did not answer within {timeout:.0f}s")
    if not lines or not lines[0].strip():
        raise RuntimeError(f"a peer process exited without its result (exit {process.wait(30)})")
    result: dict[str, Any] = json.loads(lines[0])
    return result, peak


def _wire(counters: dict[str, int] | None) -> tuple[int | None, int | None]:
    if counters is None:
        return None, None
    return counters["up"] + counters["down"], counters["connections"]


def _wait_exit(process: subprocess.Popen[str], timeout: float) -> float:
    """Reap the process: the CPU seconds (user + system) it used over its life, from wait4's rusage."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"a peer process did not exit within {timeout:.0f}s")
        time.sleep(0.01)


def client_command(peer: str, setup: Setup, url: str, count: int) -> list[str]:
    common = {
        "--url": url, "--ca": str(setup.ca), "--key": str(setup.key_path), "--key-id": setup.key_id,
        "--team-id": setup.team_id, "--count": str(count), "--concurrency": str(setup.concurrency),
    }  # fmt: skip
    if peer in ("noti", "httpx", "aioapns"):  # bench_apns_client.py's client processes, reused as they are
        args = [sys.executable, str(BENCH / "bench_apns_client.py"), "--client", peer, "--bundle", setup.bundle]
        args += ["--payload", str(setup.payload)]
    elif peer == "pushy":
        java = shutil.which("java") or "java"
        jar = str(setup.peers_dir / "noti-pushy-peer.jar")
        args = [java, "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", jar, "dev.noti.benchpeers.LoadClient"]
    else:
        args = [str(setup.peers_dir / "apns2-load")]
    if peer in ("pushy", "apns2"):
        common |= {
            "--topic": setup.bundle, "--payload": str(setup.payload), "--connections": str(CONNECTIONS),
            "--warmup": str(min(WARMUP, count)),
        }  # fmt: skip
    for option, value in common.items():
        args += [option if peer != "apns2" else "-" + option.lstrip("-"), value]
    return args


def run_client(peer: str, server: Server, setup: Setup, count: int, *, via_relay: bool, round_: int) -> Run:
    """One client process: warm up, then send ``count`` notifications on our signal."""
    process = subprocess.Popen(
        client_command(peer, setup, server.url(via_relay=via_relay), count),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=setup.directory,
    )  # fmt: skip
    assert process.stdin is not None and process.stdout is not None
    try:
        line = process.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"{peer}: the client failed to warm up (said {line!r}, exit {process.wait(30)})")
        server_pids = server.pids()
        reset_peak_rss(server_pids)
        server.relay.reset()
        cpu_before, server_before = cpu_seconds([process.pid]), cpu_seconds(server_pids)
        process.stdin.write("go\n")
        process.stdin.flush()
        result, rss = _read_result(process, RUN_TIMEOUT)
        server_cpu = cpu_seconds(server_pids) - server_before
        wire = server.relay.count() if via_relay else None
        cpu = _wait_exit(process, 60) - cpu_before
        return Run(
            peer, server.name, round_, int(result["sent"]), int(result["ok"]), float(result["seconds"]),
            cpu, server_cpu, rss, *_wire(wire),
        )  # fmt: skip
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def run_sender(server: Server, setup: Setup, count: int, *, via_relay: bool, round_: int) -> Run:
    """One ``noti sender`` process draining ``count`` queued notifications into final records."""
    import redis as redis_client

    from harness.apns import credential_for
    from harness.sender import enqueue, final_count
    from noti.store import migrate
    from noti.store.db import make_engine

    assert setup.postgres is not None and setup.redis is not None
    url = setup.postgres.create_database(f"peers_{server.name}_{round_}_{int(time.time() * 1000)}")
    engine = make_engine(url)
    migrate.upgrade(engine)
    client = redis_client.Redis.from_url(setup.redis.url)
    client.flushall()
    content = json.loads(setup.payload.read_bytes())["aps"]["alert"]
    extra = {key: value for key, value in json.loads(setup.payload.read_bytes()).items() if key != "aps"}
    enqueue(
        engine, client, _Credential(setup.bundle), [f"{i:064x}" for i in range(count)], with_devices=True,
        content={"title": content["title"], "body": content["body"], **({"data": extra} if extra else {})},
    )  # fmt: skip
    health_port = free_port()
    env = {
        **os.environ, "NOTI_APNS_TEAM_ID": setup.team_id, "NOTI_APNS_KEY_ID": setup.key_id,
        "NOTI_APNS_KEY_FILE": str(setup.key_path), "NOTI_APNS_BUNDLE_ID": setup.bundle,
        "NOTI_APNS_ENVIRONMENT": "sandbox", "NOTI_APNS_ENDPOINT": server.url(via_relay=via_relay),
        "NOTI_APNS_CA_FILE": str(setup.ca), "NOTI_DATABASE_URL": url, "NOTI_REDIS_URL": setup.redis.url,
        "NOTI_SENDER_HEALTH_PORT": str(health_port), "NOTI_LOG_LEVEL": "WARNING",
    }  # fmt: skip
    server_pids = server.pids()
    reset_peak_rss(server_pids)
    server.relay.reset()
    # Away from the repository root, whose operator/ folder would shadow the standard library.
    process = subprocess.Popen(
        [sys.executable, "-m", "noti.cli", "sender", "--credential", credential_for(setup.bundle)], env=env,
        cwd=setup.directory, text=True,
    )  # fmt: skip
    try:

        def serving() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"noti sender exited with {process.returncode}")
            return answers_ok(f"http://127.0.0.1:{health_port}/healthz")

        wait_until(serving, timeout=60, what="noti sender")
        # As bench_sender.py: the clock starts once the sender serves (imports and connecting excluded).
        cpu_before, server_before, clock = cpu_seconds([process.pid]), cpu_seconds(server_pids), time.perf_counter()
        done = 0
        while done < count:
            time.sleep(0.05)
            done = final_count(engine)
            if process.poll() is not None:
                raise RuntimeError(f"noti sender exited with {process.returncode} at {done:,} final")
            if time.perf_counter() - clock > RUN_TIMEOUT:
                raise RuntimeError(f"noti sender: only {done:,} final after {RUN_TIMEOUT:.0f}s")
        seconds = time.perf_counter() - clock
        cpu = cpu_seconds([process.pid]) - cpu_before
        server_cpu = cpu_seconds(server_pids) - server_before
        rss = peak_rss_mb([process.pid])
        wire = server.relay.count() if via_relay else None
        ok = _sent_count(engine)
        return Run("noti-sender", server.name, round_, count, ok, seconds, cpu, server_cpu, rss, *_wire(wire))
    finally:
        if process.poll() is None:
            process.terminate()
            reap(process, 30)
        engine.dispose()
        client.close()


@dataclass(frozen=True)
class _Credential:
    """What harness.sender.enqueue reads of a simulator: the app's bundle id."""

    bundle_id: str


def _sent_count(engine: Any) -> int:
    from sqlalchemy import func, select

    from noti.store.models import Notification

    with engine.connect() as connection:
        query = select(func.count()).where(Notification.status == "sent")
        return int(connection.execute(query).scalar_one())


def _gorush_config(directory: Path, setup: Setup, port: int, proxy_port: int, count: int) -> Path:
    config = f"""
core:
  enabled: true
  address: "127.0.0.1"
  port: "{port}"
  queue_num: {count + WARMUP + GORUSH_BATCH}
  max_notification: 100
  sync: false
  mode: "release"
  http_proxy: "http://127.0.0.1:{proxy_port}"
grpc:
  enabled: false
android:
  enabled: false
huawei:
  enabled: false
queue:
  engine: "local"
ios:
  enabled: true
  key_path: "{setup.key_path}"
  key_type: "p8"
  production: false
  max_concurrent_pushes: {setup.concurrency}
  max_retry: 0
  key_id: "{setup.key_id}"
  team_id: "{setup.team_id}"
log:
  format: "string"
  access_log: "stdout"
  access_level: "error"
  error_log: "stderr"
  error_level: "error"
  hide_token: true
stat:
  engine: "memory"
"""
    path = directory / "gorush.yml"
    path.write_text(config)
    return path


def run_gorush(server: Server, setup: Setup, count: int, *, round_: int) -> Run:
    """gorush's server: REST requests of 1,000 tokens each → its queue → APNs through the CONNECT proxy."""
    port = free_port()
    config = _gorush_config(setup.directory, setup, port, server.relay.port, count)
    # gorush calls Apple's sandbox host; our certificate names it too, and Go trusts SSL_CERT_FILE.
    env = {**os.environ, "SSL_CERT_FILE": str(setup.ca)}
    log = (setup.directory / f"gorush-{server.name}-{round_}.log").open("w")  # its request log, off the console
    process = subprocess.Popen(
        [str(setup.peers_dir / "gorush"), "-c", str(config)], env=env, cwd=setup.directory,
        stdout=log, stderr=log, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    payload = json.loads(setup.payload.read_bytes())
    alert = payload["aps"]["alert"]
    data = {key: value for key, value in payload.items() if key != "aps"}
    try:
        with httpx.Client(base_url=base, timeout=30) as http:

            def serving() -> bool:
                if process.poll() is not None:
                    raise RuntimeError(f"gorush exited with {process.returncode}")
                try:
                    return http.get("/healthz").status_code == 200
                except httpx.HTTPError:
                    return False

            def delivered() -> tuple[int, int]:
                ios = http.get("/api/stat/app").json()["ios"]
                return int(ios["push_success"]), int(ios["push_error"])

            def push(first: int, number: int) -> None:
                for start in range(first, first + number, GORUSH_BATCH):
                    tokens = [f"{i:064x}" for i in range(start, min(start + GORUSH_BATCH, first + number))]
                    notification = {
                        "tokens": tokens, "platform": 1, "title": alert["title"], "message": alert["body"],
                        "topic": setup.bundle, "push_type": "alert", "priority": "high", "data": data,
                    }  # fmt: skip
                    http.post("/api/push", json={"notifications": [notification]}).raise_for_status()

            def wait_for(total: int) -> None:
                deadline = time.monotonic() + RUN_TIMEOUT
                while sum(delivered()) < total:
                    if process.poll() is not None:
                        raise RuntimeError(f"gorush exited with {process.returncode}")
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"gorush: only {sum(delivered()):,} of {total:,} answered")
                    time.sleep(0.05)  # each poll costs gorush a little CPU (and a log line)

            wait_until(serving, timeout=30, what="gorush")
            warmup = min(WARMUP, count)
            push(0, warmup)  # connects, mints its token, warms its code paths
            wait_for(warmup)
            success_before = delivered()[0]
            server_pids = server.pids()
            reset_peak_rss([process.pid, *server_pids])
            server.relay.reset()
            cpu_before, server_before, clock = cpu_seconds([process.pid]), cpu_seconds(server_pids), time.perf_counter()
            push(warmup, count)
            wait_for(warmup + count)
            seconds = time.perf_counter() - clock
            cpu = cpu_seconds([process.pid]) - cpu_before
            server_cpu = cpu_seconds(server_pids) - server_before
            rss = peak_rss_mb([process.pid])
            wire = server.relay.count()
            ok = delivered()[0] - success_before
        return Run("gorush", server.name, round_, count, ok, seconds, cpu, server_cpu, rss, *_wire(wire))
    finally:
        process.terminate()
        reap(process, 30)
        log.close()


def run_peer(peer: str, server: Server, setup: Setup, count: int, *, via_relay: bool, round_: int) -> Run:
    if peer == "noti-sender":
        return run_sender(server, setup, count, via_relay=via_relay, round_=round_)
    if peer == "gorush":
        return run_gorush(server, setup, count, round_=round_)
    return run_client(peer, server, setup, count, via_relay=via_relay, round_=round_)


# ---------------------------------------------------------------- summary and report


@dataclass
class Row:
    """A peer's medians against one server."""

    peer: str
    server: str
    runs: int
    sent: int
    ok: int
    rate: float
    cpu_us: float
    server_cpu_us: float
    peak_rss_mb: float
    wire_bytes: float | None
    wire_connections: float | None  # TCP connections opened per measured relay run (handshakes)
    cpu_vs_noti: float = 0.0
    rate_vs_noti: float = 0.0
    rates: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        return LABELS[self.peer]


def summarize(runs: list[Run], wire_runs: list[Run]) -> list[Row]:
    """Medians per (server, peer), with ratios against Noti's client or sender."""
    rows: list[Row] = []
    for server in dict.fromkeys(run.server for run in runs):
        for peer in dict.fromkeys(run.peer for run in runs if run.server == server):
            mine = [run for run in runs if run.server == server and run.peer == peer]
            relayed = [run for run in [*mine, *wire_runs] if run.server == server and run.peer == peer]
            wired = [run.wire_bytes / run.sent for run in relayed if run.wire_bytes is not None]
            opened = [run.wire_connections for run in relayed if run.wire_connections is not None]
            rows.append(Row(
                peer, server, len(mine), sum(run.sent for run in mine), sum(run.ok for run in mine),
                statistics.median(run.rate for run in mine), statistics.median(run.cpu_us for run in mine),
                statistics.median(run.server_cpu_us for run in mine),
                max(run.peak_rss_mb for run in mine), statistics.median(wired) if wired else None,
                statistics.median(opened) if opened else None,
                rates=[run.rate for run in mine], cpus=[run.cpu_us for run in mine],
            ))  # fmt: skip
    for row in rows:
        reference = "noti-sender" if row.peer in FULL_SERVERS else "noti"
        base = next((other for other in rows if other.server == row.server and other.peer == reference), None)
        if base is not None:
            row.cpu_vs_noti = row.cpu_us / base.cpu_us
            row.rate_vs_noti = row.rate / base.rate
    return rows


def _fmt(value: float | None, spec: str = ",.0f") -> str:
    return "—" if value is None else format(value, spec)


def table(rows: list[Row], server: str) -> list[str]:
    """A Markdown table of one server's rows."""
    lines = [
        "| peer | notif/s | CPU µs/notif (peer) | vs Noti | server CPU µs/notif | peak RSS MB | bytes/notif "
        "| new conns | ok/sent |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row.server != server:
            continue
        lines.append(
            f"| {row.label} | {row.rate:,.0f} | {row.cpu_us:,.0f} | {row.cpu_vs_noti:.2f}× | "  # noqa: RUF001
            f"{row.server_cpu_us:,.0f} | {row.peak_rss_mb:,.0f} | {_fmt(row.wire_bytes)} | "
            f"{_fmt(row.wire_connections)} | {row.ok:,}/{row.sent:,} |"
        )
    return lines


def plot(rows: list[Row], directory: Path) -> list[Path]:
    """Bar charts by peer, one bar per server: throughput, and CPU per notification (peer process)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    servers = list(dict.fromkeys(row.server for row in rows))
    peers = list(dict.fromkeys(row.peer for row in rows))
    paths = []
    for name, attribute, title in (
        ("peers_throughput.png", "rate", "Notifications/s (median over rounds; higher is better)"),
        ("peers_cpu.png", "cpu_us", "CPU µs per notification, peer process (lower is better)"),
    ):
        figure, axes = plt.subplots(figsize=(10, 5.5), dpi=100)
        width = 0.8 / len(servers)
        for index, server in enumerate(servers):
            values = [
                next((getattr(row, attribute) for row in rows if row.peer == peer and row.server == server), 0.0)
                for peer in peers
            ]
            positions = [p + (index - (len(servers) - 1) / 2) * width for p in range(len(peers))]
            bars = axes.bar(positions, values, width, label=SERVER_LABELS[server])
            axes.bar_label(bars, labels=[f"{value:,.0f}" for value in values], fontsize=8, padding=2)
        axes.set_xticks(range(len(peers)), [SHORT_LABELS[peer] for peer in peers], fontsize=9)
        clients = sum(peer in CLIENTS for peer in peers)
        if 0 < clients < len(peers):  # APNs clients on the left, full servers on the right
            axes.axvline(clients - 0.5, color="grey", linestyle=":", linewidth=1)
        axes.set_title(title)
        axes.legend(title="APNs server", fontsize=8)
        axes.spines[["top", "right"]].set_visible(False)
        figure.tight_layout()
        path = directory / name
        figure.savefig(path)
        plt.close(figure)
        paths.append(path)
    return paths


def write_report(
    path: Path, rows: list[Row], runs: list[Run], wire_runs: list[Run], options: argparse.Namespace, built: str
) -> None:
    servers = list(dict.fromkeys(row.server for row in rows))
    lines = [
        "# Noti beside its peers: APNs clients and full servers, one run, same servers",
        "",
        f"Generated by `bench/bench_peers.py {' '.join(options.argv)}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} ({os.cpu_count()} cores; see the caveats).",
        f"{options.count:,} notifications per run, {options.rounds} round(s) interleaved (round → server → peer), "
        f"the same {options.payload_bytes}-byte payload, token auth with one key, {CONNECTIONS} connections, "
        f"{options.concurrency:,} in flight. Medians over rounds; peak RSS is the highest. Peers: {built}.",
        "",
        "- **CPU µs/notif (peer)**: utime + stime of the peer's own process over the measured run, per notification"
        " (client processes: from the go signal to exit; `noti sender`: from serving to the last final record,"
        " so its connecting is included; gorush: from the first REST request to the last answer, its REST"
        " intake included).",
        "- **new conns**: TCP (so TLS) connections the peer opened during a measured relay run, after its warm-up.",
        "- **server CPU µs/notif**: the APNs server's processes (the simulator's workers included) over the same run.",
        "- **vs Noti**: the peer's CPU per notification over Noti's (`APNsClient` for clients, `noti sender` for"
        " full servers), against the same server.",
        (
            "- **bytes/notif**: both directions of the TLS connections over the measured runs, counted by a"
            " loopback relay every run went through (`--relay-all`; warm-up and handshakes excluded)."
            if options.relay_all
            else f"- **bytes/notif**: both directions of the TLS connections, counted by a loopback relay in a pass of"
            f" {min(options.count, WIRE_COUNT):,} notifications per peer (warm-up and handshakes excluded); gorush's"
            " timed runs go through it too (its CONNECT proxy), the others' do not."
        ),
        "",
    ]
    for server in servers:
        lines += [f"## Against {SERVER_LABELS[server]}", "", *table(rows, server), ""]
    lines += [
        "![Notifications/s by peer](peers_throughput.png)",
        "",
        "![CPU µs per notification by peer](peers_cpu.png)",
        "",
        "## Every run",
        "",
        "Round 0 is the relay pass that counts bytes on the wire.",
        "",
        "| round | server | peer | notif/s | CPU µs/notif | server CPU µs/notif | peak RSS MB | bytes/notif "
        "| connections |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {run.round} | {run.server} | {run.peer} | {run.rate:,.0f} | {run.cpu_us:,.0f} | "
            f"{run.server_cpu_us:,.0f} | {run.peak_rss_mb:,.0f} | "
            f"{_fmt(None if run.wire_bytes is None else run.wire_bytes / run.sent)} | {_fmt(run.wire_connections)} |"
            for run in [*runs, *wire_runs]
        ),
        "",
        "## Caveats",
        "",
        *options.caveats,
        "",
    ]
    path.write_text("\n".join(lines))


# ---------------------------------------------------------------- main


def build_peers() -> Path:
    """$NOTI_PEERS_DIR, else scripts/build-peers.sh's cached directory (built on first use)."""
    if explicit := os.environ.get("NOTI_PEERS_DIR"):
        return Path(explicit)
    result = subprocess.run([str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"bench_peers: {BUILD_SCRIPT.relative_to(ROOT)} failed (exit {result.returncode})")
    return Path(result.stdout.strip().splitlines()[-1])


def write_payload(directory: Path) -> Path:
    """The payload every peer sends (215 bytes, as Noti builds it): an alert and two custom keys."""
    from noti.apns.payload import NotificationContent, build_payload

    content = NotificationContent(
        title="Flash sale", body="Everything must go: 40% off every item in store and online until midnight",
        data={"deeplink": "app://sale/summer-2026?ref=push", "campaign": "flash-sale-2026-12-01-eu-west-1-b"},
    )  # fmt: skip
    path = directory / "payload.json"
    path.write_bytes(build_payload(content))
    return path


@contextmanager
def services(directory: Path, peers: list[str]) -> Iterator[tuple[PostgresServer | None, RedisServer | None]]:
    """Throwaway PostgreSQL (fsync on) and Redis, when the sender is among the peers."""
    if "noti-sender" not in peers:
        yield None, None
        return
    postgres, redis_server = PostgresServer(durable=True), RedisServer()
    try:
        postgres.init()
        postgres.start()
        redis_server.start()
        yield postgres, redis_server
    finally:
        redis_server.cleanup()
        postgres.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=20_000, help="notifications per run (default 20,000)")
    parser.add_argument("--quick", action="store_true", help="CI-sized: 2,000 notifications per run")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, interleaved across servers and peers")
    parser.add_argument("--concurrency", type=int, default=1000, help="notifications in flight")
    parser.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated subset of {','.join(PEERS)}")
    parser.add_argument("--servers", default=",".join(SERVERS), help=f"comma-separated subset of {','.join(SERVERS)}")
    parser.add_argument("--workers", type=int, default=2, help="simulator worker processes")
    parser.add_argument("--no-wire", action="store_true", help="skip the relay pass that counts bytes on the wire")
    parser.add_argument(
        "--relay-all", action="store_true",
        help="send every run through the counting relay instead of a pass of its own (fewer runs; the smallest mode)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="write every run and the summary here")
    parser.add_argument("--report", type=Path, help="write a Markdown report and its PNG plots beside it")
    args_list = sys.argv[1:] if argv is None else argv
    options = parser.parse_args(args_list)
    load_at_start = os.getloadavg()[0]
    options.argv = args_list
    if options.quick and "--count" not in args_list:
        options.count = 2000
    peers = [peer.strip() for peer in options.peers.split(",") if peer.strip()]
    servers = [server.strip() for server in options.servers.split(",") if server.strip()]
    unknown = [name for name in peers if name not in PEERS] + [name for name in servers if name not in SERVERS]
    if unknown:
        parser.error(f"unknown peer or server {', '.join(unknown)}: peers are {', '.join(PEERS)}; "
                     f"servers are {', '.join(SERVERS)}")  # fmt: skip
    if options.count < 1 or options.rounds < 1:
        parser.error("--count and --rounds must be at least 1")

    peers_dir = build_peers()
    from noti.apns.simulator import generate_certificate

    runs: list[Run] = []
    wire_runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="noti-bench-peers-") as name:
        directory = Path(name)
        cert, tls_key = generate_certificate(directory, ("127.0.0.1", "localhost", APPLE_SANDBOX_HOST))
        payload = write_payload(directory)
        options.payload_bytes = len(payload.read_bytes())
        started: dict[str, Server] = {}
        simulator: SimulatorProcess | None = None
        with services(directory, peers) as (postgres, redis_server):
            try:
                sim_server, simulator = start_simulator_server(directory, cert, tls_key, options.workers)
                started["simulator"] = sim_server
                if "pushy" in servers:
                    started["pushy"] = start_pushy_server(peers_dir / "noti-pushy-peer.jar", cert, tls_key)
                setup = Setup(
                    directory, peers_dir, cert, simulator.key_path, simulator.key_id, simulator.team_id,
                    simulator.bundle_id, payload, options.concurrency, postgres, redis_server,
                )  # fmt: skip
                print(
                    f"{options.count:,} notifications per run, {options.rounds} round(s), {options.payload_bytes}-byte"
                    f" payload, {CONNECTIONS} connections, {options.concurrency} in flight; peers from {peers_dir}",
                    flush=True,
                )
                for round_ in range(1, options.rounds + 1):
                    for server_name in servers:
                        server = started[server_name]
                        for peer in peers:
                            run = run_peer(
                                peer, server, setup, options.count, via_relay=options.relay_all, round_=round_
                            )
                            runs.append(run)
                            print(
                                f"  round {round_} {server_name:<9} {peer:<12} {run.rate:>8,.0f}/s "
                                f"{run.cpu_us:>6,.0f} µs CPU/notif  server {run.server_cpu_us:>5,.0f} µs  "
                                f"{run.peak_rss_mb:>5,.0f} MB  {run.ok:,}/{run.sent:,} ok",
                                flush=True,
                            )
                if not (options.no_wire or options.relay_all):
                    wire_count = min(options.count, WIRE_COUNT)
                    for server_name in servers:
                        for peer in peers:
                            if peer == "gorush":
                                continue  # its timed runs already went through the relay
                            run = run_peer(peer, started[server_name], setup, wire_count, via_relay=True, round_=0)
                            wire_runs.append(run)
                            assert run.wire_bytes is not None
                            print(
                                f"  wire    {server_name:<9} {peer:<12} {run.wire_bytes / run.sent:>6,.0f} bytes/notif"
                                f"  {run.wire_connections} connection(s)  {run.ok:,}/{run.sent:,} ok",
                                flush=True,
                            )
            finally:
                for server in started.values():
                    server.stop()
                if simulator is not None and "simulator" not in started:
                    stop_simulator(simulator)

    rows = summarize(runs, wire_runs)
    print()
    for server_name in servers:
        print(f"Against {SERVER_LABELS[server_name]}:")
        print("\n".join(table(rows, server_name)))
        print()
    failed = [f"{run.peer}@{run.server} round {run.round}: {run.ok}/{run.sent}" for run in [*runs, *wire_runs]
              if run.ok != run.sent]  # fmt: skip
    if options.json:
        options.json.write_text(json.dumps({
            "runs": [asdict(run) for run in runs], "wire_runs": [asdict(run) for run in wire_runs],
            "rows": [asdict(row) for row in rows], "failed": failed,
        }, indent=2))  # fmt: skip
    if options.report:
        options.report.parent.mkdir(parents=True, exist_ok=True)
        plot(rows, options.report.parent)
        options.caveats = [
            f"- {os.cpu_count()} cores, shared with whatever else ran (load average {load_at_start:.1f} at the start,"
            f" {os.getloadavg()[0]:.1f} at the end): rounds are interleaved so that noise spreads over every peer,"
            " and medians are shown.",
            "- The peers and the APNs servers share the same cores, so a fast client competes with its server.",
            "- gorush's traffic crosses the relay's CONNECT proxy in every run (the relay's CPU is nobody's here)."
            " With a proxy configured gorush swaps apns2's HTTP/2 transport for `http.Transport` +"
            " `http2.ConfigureTransports`, which under 1,000 pushes in flight keeps opening new TLS connections"
            ' ("new conns"): its CPU and bytes per notification include those handshakes, an upper bound.',
            "- Pushy's JVM is warmed by the same 500 notifications as every client; its JIT still compiles during"
            " the measured run and that CPU is its process's. A larger --count amortises it.",
            "- Pushy's client is given JWS-form (raw R||S) provider-token signatures by a JCA provider in"
            " bench/peers/pushy-client (Pushy 0.15 signs in DER form, which Noti's simulator refuses).",
        ]
        write_report(options.report, rows, runs, wire_runs, options, peers_dir.name)
        print(f"report: {options.report}")
    if failed:
        print("not every notification was delivered: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
