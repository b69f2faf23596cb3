"""A NotificationCampaign to every device, end to end: ``kubectl apply`` → Completed.

``--devices`` active devices (default 1,000,000) are COPYed into a throwaway PostgreSQL (fsync and
synchronous_commit on); etcd and kube-apiserver, Redis and the APNs simulator (``noti apns-sim``)
run from the test harness, the operator as ``noti operator`` (the chart's intervals and scaling
defaults). There is no kubelet: this script stands in for it and for the Deployment controller,
running as many ``noti sender`` processes as the sender Deployment the operator wrote asks for,
each with that Deployment's container env (only the mounted files' paths are local), and
reporting them available once /readyz answers. Then an ``allDevices`` campaign is applied with
kubectl and its status followed until Completed.

Prints apply → fan-out done, apply → Completed, sends/s every 10 s, CPU seconds and peak RSS per
process (operator, each sender, simulator, PostgreSQL's processes together, Redis; kube-apiserver
and etcd apart), Redis's used_memory_peak, the notifications table's size, and the CPU per
notification each implies, against the target: ≤ 5 minutes apply → Completed on 2 cores.
Usage: python bench/bench_campaign.py [--devices 1000000] [--max-senders 20] [--rate 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import psycopg
import redis
from _services import PostgresServer, RedisServer
from bench_sender import CLOCK_TICKS, peak_rss_mb
from kubernetes import client as k8s
from sqlalchemy import Engine, func, select, text

from harness.apns import SimulatorProcess, start_simulator, stop_simulator
from harness.k8s import KubeCluster, apply_crds
from harness.operator import (
    CREDENTIAL,
    GROUP,
    SENDER_DEPLOYMENT,
    VERSION,
    OperatorProcess,
    apply_campaign,
    apply_credential,
    report_available,
    secrets,
    sender_env,
    spawn_sender,
    start_operator,
    stop_operator,
)
from harness.procs import answers_ok, free_port, wait_until
from noti.queue import StreamKeys, campaign_counters, campaign_fanout_cursor
from noti.store import migrate
from noti.store.db import make_engine
from noti.store.models import Notification

NAMESPACE, CAMPAIGN = "bench", "everyone"
TARGET_SECONDS = 300.0  # apply → Completed of 1,000,000 devices on this 2-core machine
WINDOW = 10.0  # seconds per line of the sends/s timeline
COPY_ROWS = 50_000  # devices per COPY buffer
# The chart's operator defaults (charts/noti/values.yaml): what a cluster would run.
CHART_OPERATOR_ENV = {
    "NOTI_OPERATOR_SCALE_DOWN_SECONDS": "300", "NOTI_OPERATOR_SENDER_RATE": "1000",
    "NOTI_OPERATOR_DRAIN_SECONDS": "60", "NOTI_OPERATOR_LEASE_SECONDS": "15",
}  # fmt: skip


# --- processes and their cost ------------------------------------------------------------------


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process, its live children and every child it has reaped (cutime, cstime)."""
    fields = _stat(pid)
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime, stime, cutime, cstime
    for child in _children(pid):
        with contextlib.suppress(OSError):
            ticks += sum(int(x) for x in _stat(child)[11:13])
    return ticks / CLOCK_TICKS


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def pss_mb(pids: list[int]) -> float:
    """The proportional set size of ``pids`` together (shared memory counted once), in MB."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
    return total / 1024


@dataclass
class Sender:
    """One local ``noti sender`` standing in for a pod of the Deployment."""

    index: int
    process: subprocess.Popen[bytes]
    health_port: int
    started: float  # seconds after apply (negative: before)
    stopped: float | None = None
    cpu_at_apply: float = 0.0
    cpu: float | None = None  # at its end, or at Completed
    rss_mb: float | None = None
    terminating: bool = False
    measured: bool = False  # cpu and rss_mb were taken at Completed

    def ready(self) -> bool:
        return (
            not self.terminating
            and self.process.poll() is None
            and answers_ok(f"http://127.0.0.1:{self.health_port}/readyz")
        )


def reap_with_usage(process: subprocess.Popen[bytes], timeout: float = 40) -> resource.struct_rusage:
    """Wait for ``process`` (SIGKILL after ``timeout``) and return its rusage: its CPU and peak RSS to the end."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return usage
        if time.monotonic() > deadline:
            process.kill()
            deadline = float("inf")
        time.sleep(0.1)


class Profiler:
    """py-spy on a process until it exits (``--py-spy DIR``): where its time goes, idle waits included."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.spies: list[tuple[str, subprocess.Popen[bytes]]] = []

    def attach(self, name: str, pid: int) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        command = ["py-spy", "record", "--idle", "--rate", "50", "--format", "raw", "--pid", str(pid),
                   "--output", str(self.folder / f"{name}.txt")]  # fmt: skip
        self.spies.append((name, subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))

    def wait(self) -> None:
        """Wait for each py-spy to write its file (they end with their process)."""
        for _, spy in self.spies:
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(30)
            if spy.poll() is None:
                spy.send_signal(signal.SIGINT)
                spy.wait(30)


def top_frames(path: Path, count: int = 12) -> list[tuple[float, str]]:
    """Shares of samples by (innermost Noti frame ← innermost frame) in a py-spy raw file."""
    found: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        ours = [f for f in frames if "/noti/" in f or "site-packages" not in f]
        key = f"{ours[-1] if ours else frames[0]} ← {frames[-1]}"
        found[key] = found.get(key, 0) + int(n)
        total += int(n)
    ranked = sorted(found.items(), key=lambda item: -item[1])[:count]
    return [(n / max(total, 1), key) for key, n in ranked]


class Kubelet:
    """Runs as many local senders as the sender Deployment asks for and reports them available, as the
    kubelet and the Deployment controller would; notes every replica count it was asked for."""

    def __init__(
        self, cluster: KubeCluster, simulator: SimulatorProcess, folder: Path, clock: Clock, profiler: Profiler
    ) -> None:
        self.cluster, self.simulator, self.folder, self.clock = cluster, simulator, folder, clock
        self.profiler = profiler
        self.api = cluster.api_client()
        self.apps = k8s.AppsV1Api(self.api)
        self.env: dict[str, str] = {}
        self.senders: list[Sender] = []
        self.replicas: list[tuple[float, int]] = []  # (seconds after apply, replicas asked for)
        self._reported = -1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kubelet", daemon=True)
        self._reapers: list[threading.Thread] = []
        self.error: BaseException | None = None

    def start(self) -> None:
        # One env for every pod: the Deployment's template is applied once (its digest unchanged).
        self.env = sender_env(self.cluster, NAMESPACE, self.simulator)
        self._thread.start()

    def running(self) -> list[Sender]:
        return [s for s in self.senders if not s.terminating]

    def _run(self) -> None:
        try:
            while not self._stop.wait(0.5):
                self.step()
        except BaseException as error:  # surfaced by the main loop
            self.error = error

    def step(self) -> None:
        wanted = int(self.apps.read_namespaced_deployment(SENDER_DEPLOYMENT, NAMESPACE).spec.replicas or 0)
        if not self.replicas or self.replicas[-1][1] != wanted:
            self.replicas.append((self.clock.now(), wanted))
        running = self.running()
        for sender in running[wanted:]:  # scale down: the newest go first
            self._terminate(sender)
        for _ in range(wanted - len(running)):
            index = len(self.senders)
            port = free_port()
            process = spawn_sender(self.env, self.folder / f"sender-{index}", port)
            self.senders.append(Sender(index, process, port, self.clock.now()))
            self.profiler.attach(f"sender-{index}", process.pid)
        for sender in self.running():
            if sender.process.poll() is not None:
                raise RuntimeError(f"sender {sender.index} exited with {sender.process.returncode}: see "
                                   f"{self.folder / f'sender-{sender.index}' / 'sender.log'}")  # fmt: skip
        available = sum(sender.ready() for sender in self.running())
        if available != self._reported:
            report_available(self.apps, NAMESPACE, available)
            self._reported = available

    def _terminate(self, sender: Sender) -> None:
        sender.terminating = True
        sender.process.send_signal(signal.SIGTERM)

        def reap() -> None:
            usage = reap_with_usage(sender.process)
            if not sender.measured:  # scaled down before Completed: its whole life counts
                sender.stopped = self.clock.now()
                sender.cpu, sender.rss_mb = usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024

        thread = threading.Thread(target=reap, name=f"reap sender {sender.index}", daemon=True)
        thread.start()
        self._reapers.append(thread)

    def snapshot(self) -> None:
        """Note the CPU and peak RSS of every sender still running (at Completed)."""
        for sender in self.running():
            with contextlib.suppress(OSError):
                sender.cpu, sender.rss_mb = tree_cpu_seconds(sender.process.pid), peak_rss_mb(sender.process.pid)
                sender.measured = True

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        for sender in self.running():
            self._terminate(sender)
        for thread in self._reapers:
            thread.join(45)
        self.api.close()


@dataclass
class Clock:
    applied: float = 0.0  # time.monotonic() of the apply; 0 until then

    def now(self) -> float:
        return time.monotonic() - self.applied if self.applied else 0.0


@dataclass
class Sample:
    at: float  # seconds after apply
    finished: int  # the credential's finished count (senders INCRBY per acked batch)
    queued: int  # records the fan-out queued so far
    senders: int


class Sampler:
    """Every second: progress and sender count; every five: PostgreSQL's PSS (for its peak)."""

    def __init__(
        self, redis_url: str, postgres: PostgresServer, kubelet: Kubelet, clock: Clock, database_url: str | None = None
    ) -> None:
        self.client = redis.Redis.from_url(redis_url)
        # With a database URL: what PostgreSQL's busy backends wait on, sampled each second (--pg-waits).
        self.waits: dict[str, int] = {}
        self._database = None
        if database_url:
            self._database = psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True)
        self.postgres, self.kubelet, self.clock = postgres, kubelet, clock
        self.samples: list[Sample] = []
        self.postgres_pss_peak = 0.0
        self.keys = StreamKeys(f"{NAMESPACE}/{CREDENTIAL}")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        tick = 0
        while not self._stop.wait(1.0):
            finished = int(self.client.get(self.keys.finished) or 0)
            queued = int(self.client.hget(campaign_counters(f"{NAMESPACE}/{CAMPAIGN}"), "queued") or 0)
            self.samples.append(Sample(self.clock.now(), finished, queued, len(self.kubelet.running())))
            if self._database is not None:
                self._sample_waits(self._database)
            if tick % 5 == 0:
                with contextlib.suppress(OSError, ValueError):
                    self.postgres_pss_peak = max(self.postgres_pss_peak, pss_mb(self.postgres._processes()))
            tick += 1

    def _sample_waits(self, connection: psycopg.Connection[Any]) -> None:
        rows = connection.execute(
            "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU'), left(query, 24) FROM pg_stat_activity"
            " WHERE state = 'active' AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        ).fetchall()
        for wait, query in rows:
            key = f"{wait:<28} {' '.join(query.split())}"
            self.waits[key] = self.waits.get(key, 0) + 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.close()
        if self._database is not None:
            self._database.close()
            self._database = None


# --- the store ---------------------------------------------------------------------------------


def seed_devices(database_url: str, app: str, count: int) -> float:
    """COPY ``count`` active devices of ``app`` into the store; returns the seconds it took."""
    started = time.perf_counter()
    now = datetime.now(UTC).isoformat()
    columns = "app, device_token, platform, tags, is_active, registered_at, created_at, updated_at"
    with psycopg.connect(database_url.replace("+psycopg", "")) as connection:
        with connection.cursor() as cursor, cursor.copy(f"COPY devices ({columns}) FROM STDIN") as copy:
            for start in range(0, count, COPY_ROWS):
                lines = "".join(f"{app}\t{n:064x}\tios\t[]\tt\t{now}\t{now}\t{now}\n"
                                for n in range(start, min(count, start + COPY_ROWS)))  # fmt: skip
                copy.write(lines.encode())
        connection.execute("ANALYZE devices")
    return time.perf_counter() - started


def store_figures(engine: Engine, campaign: str) -> dict[str, Any]:
    """The campaign's records by status and the notifications table's size (every partition, indexes, TOAST)."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(Notification.status, func.count()).where(Notification.campaign == campaign)
            .group_by(Notification.status)
        ).all()  # fmt: skip
        size = connection.execute(
            text("SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('notifications')")
        ).scalar_one()
        devices = connection.execute(text("SELECT pg_total_relation_size('devices')")).scalar_one()
    return {"statuses": {str(s): int(n) for s, n in rows}, "table_bytes": int(size or 0), "devices_bytes": int(devices)}


# --- the run -----------------------------------------------------------------------------------


@dataclass
class Figures:
    devices: int
    seed_seconds: float = 0.0
    fan_out_seconds: float | None = None
    completed_seconds: float | None = None
    phase: str = ""
    status: dict[str, Any] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    table_bytes: int = 0
    devices_bytes: int = 0
    redis_peak_bytes: int = 0
    processes: dict[str, dict[str, float]] = field(default_factory=dict)  # name → cpu_seconds, peak_rss_mb
    timeline: list[dict[str, float]] = field(default_factory=list)
    replicas: list[tuple[float, int]] = field(default_factory=list)
    pg_waits: dict[str, int] = field(default_factory=dict)  # "wait event  query" → samples (--pg-waits)


def campaign_status(api: k8s.ApiClient) -> dict[str, Any]:
    found = k8s.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, "notificationcampaigns", CAMPAIGN
    )
    return dict(cast(dict[str, Any], found).get("status") or {})


def run(args: argparse.Namespace, workdir: Path) -> Figures:
    figures = Figures(devices=args.devices)
    postgres, redis_server = PostgresServer(durable=True), RedisServer()
    cluster = KubeCluster(workdir / "k8s")
    simulator: SimulatorProcess | None = None
    operator: OperatorProcess | None = None
    kubelet: Kubelet | None = None
    sampler: Sampler | None = None
    with contextlib.ExitStack() as stack:
        stack.callback(postgres.cleanup)
        stack.callback(redis_server.cleanup)
        stack.callback(cluster.cleanup)
        postgres.init()
        postgres.start()
        redis_server.start()
        cluster.start()
        (workdir / "apns").mkdir()
        simulator = start_simulator(workdir / "apns", workers=args.simulator_workers)
        stack.callback(stop_simulator, simulator)
        database_url = postgres.create_database("noti")
        engine = make_engine(database_url, pool_size=1)
        stack.callback(engine.dispose)
        migrate.upgrade(engine)
        figures.seed_seconds = seed_devices(database_url, simulator.bundle_id, args.devices)
        print(f"seeded {args.devices:,} devices by COPY in {figures.seed_seconds:.1f}s", flush=True)

        apply_crds(cluster)
        api = cluster.api_client()
        stack.callback(api.close)
        k8s.CoreV1Api(api).create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=NAMESPACE)))
        secrets(cluster, NAMESPACE, simulator, database_url, redis_server.url)
        senders = {"maxReplicas": args.max_senders} if args.max_senders else {}
        apply_credential(cluster, NAMESPACE, simulator, **{"minReplicas": 1, "maxReplicas": 20, **senders})
        operator = start_operator(
            cluster, NAMESPACE, database_url, redis_server.url, workdir / "operator",
            **{**CHART_OPERATOR_ENV, "NOTI_OPERATOR_INTERVAL_SECONDS": str(args.interval),
               **({"NOTI_OPERATOR_DRAIN_SECONDS": str(args.drain_seconds)} if args.drain_seconds else {})},
        )  # fmt: skip
        stack.callback(stop_operator, operator)
        wait_until(operator.healthy, timeout=90, what="the operator's /healthz")
        apps = k8s.AppsV1Api(api)
        wait_until(lambda: _exists(apps), timeout=60, what="the sender Deployment")

        clock = Clock()
        profiler = Profiler(args.py_spy)
        profiler.attach("operator", operator.process.pid)
        kubelet = Kubelet(cluster, simulator, workdir, clock, profiler)
        kubelet.start()
        stack.callback(kubelet.stop)
        # The pool's minimum runs before the campaign, as it would in a cluster: its start-up is not the campaign's.
        wait_until(lambda: any(s.ready() for s in kubelet.running()), timeout=90, what="the first sender")
        sampler = Sampler(redis_server.url, postgres, kubelet, clock, database_url if args.pg_waits else None)

        watched = {"operator": operator.process.pid, "simulator": simulator.process.pid,
                   "postgresql": postgres._processes()[0], "redis": _pid(redis_server),
                   **{p.name: p.popen.pid for p in cluster._processes}}  # fmt: skip
        at_apply = {name: tree_cpu_seconds(pid) for name, pid in watched.items()}
        for sender in kubelet.running():
            sender.cpu_at_apply = tree_cpu_seconds(sender.process.pid)
        client = redis.Redis.from_url(redis_server.url)
        stack.callback(client.close)
        cursor = campaign_fanout_cursor(f"{NAMESPACE}/{CAMPAIGN}")
        print(f"{len(kubelet.running())} sender(s) ready; kubectl apply of an allDevices campaign "
              f"(ratePerSecond {args.rate})", flush=True)  # fmt: skip

        clock.applied = time.monotonic()
        sampler.start()
        stack.callback(sampler.stop)
        apply_campaign(cluster, NAMESPACE, CAMPAIGN, ratePerSecond=args.rate)
        status: dict[str, Any] = {}
        while clock.now() < args.timeout:
            if kubelet.error is not None:
                raise kubelet.error
            assert operator.process.poll() is None, f"the operator exited:\n{operator.tail()}"
            if figures.fan_out_seconds is None and client.hget(cursor, "done") == b"1":
                figures.fan_out_seconds = clock.now()
                print(f"fan-out done after {figures.fan_out_seconds:.1f}s", flush=True)
            status = campaign_status(api)
            if status.get("phase") in ("Completed", "Failed"):
                figures.completed_seconds = clock.now()
                break
            time.sleep(0.25)
        figures.phase, figures.status = str(status.get("phase")), status

        kubelet.snapshot()
        figures.processes = {
            name: {"cpu_seconds": tree_cpu_seconds(pid) - at_apply[name], "peak_rss_mb": peak_rss_mb(pid)}
            for name, pid in watched.items()
        }  # fmt: skip
        figures.processes["postgresql"]["peak_rss_mb"] = sampler.postgres_pss_peak  # PSS of all its processes
        sampler.stop()
        figures.redis_peak_bytes = int(client.info("memory")["used_memory_peak"])
        figures.__dict__.update(store_figures(engine, f"{NAMESPACE}/{CAMPAIGN}"))
        kubelet.stop()  # every sender's CPU and peak RSS to its end
        for sender in kubelet.senders:
            figures.processes[f"sender-{sender.index}"] = {
                "cpu_seconds": (sender.cpu or 0.0) - sender.cpu_at_apply, "peak_rss_mb": sender.rss_mb or 0.0,
                "started": sender.started, "stopped": sender.stopped if sender.stopped is not None else -1,
            }  # fmt: skip
        figures.timeline = _timeline(sampler.samples)
        figures.pg_waits = dict(sorted(sampler.waits.items(), key=lambda item: -item[1]))
        figures.replicas = kubelet.replicas
    profiler.wait()
    return figures


def _exists(apps: k8s.AppsV1Api) -> bool:
    try:
        apps.read_namespaced_deployment(SENDER_DEPLOYMENT, NAMESPACE)
    except k8s.ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def _pid(server: RedisServer) -> int:
    assert server.process is not None
    return server.process.pid


def _timeline(samples: list[Sample]) -> list[dict[str, float]]:
    """Sends/s and queued per WINDOW seconds after apply."""
    lines, previous = [], Sample(0.0, 0, 0, 0)
    for sample in samples:
        if sample.at - previous.at >= WINDOW or sample is samples[-1]:
            span = max(sample.at - previous.at, 1e-9)
            lines.append({"at": sample.at, "sends_per_second": (sample.finished - previous.finished) / span,
                          "finished": sample.finished, "queued": sample.queued, "senders": sample.senders})  # fmt: skip
            previous = sample
    return lines


# --- the report --------------------------------------------------------------------------------

NOTI = ("operator", "senders", "postgresql", "redis")
ELSEWHERE = ("simulator", "kube-apiserver", "etcd")  # Apple's part and the cluster's


def report(figures: Figures) -> None:
    n = figures.devices
    print(f"\n== {n:,} devices, allDevices campaign, {os.cpu_count()} cores shared with others ==")
    print(f"seed (COPY): {figures.seed_seconds:.1f}s")
    fan_out = f"{figures.fan_out_seconds:.1f}s" if figures.fan_out_seconds is not None else "not reached"
    print(f"apply → fan-out done: {fan_out}" + (f"  ({n / figures.fan_out_seconds:,.0f} records/s)"
                                               if figures.fan_out_seconds else ""))  # fmt: skip
    if figures.completed_seconds is not None:
        scaled = TARGET_SECONDS * n / 1_000_000
        verdict = "OK" if figures.completed_seconds <= scaled else "OVER TARGET"
        print(
            f"apply → {figures.phase}: {figures.completed_seconds:.1f}s  ({n / figures.completed_seconds:,.0f} "
            f"notifications/s; target ≤ {TARGET_SECONDS:.0f}s per 1,000,000, so ≤ {scaled:.1f}s here: {verdict})"
        )
    else:
        print(f"apply → Completed: not reached (phase {figures.phase})")
    status = figures.status
    print(
        f"status: total {status.get('total')}, sent {status.get('sent')}, failed {status.get('failed')}, "
        f"invalid {status.get('invalidTokens')}; records {figures.statuses}"
    )
    print("\nsends/s every ~10 s after apply:")
    print(f"  {'t (s)':>7} {'sends/s':>9} {'finished':>10} {'queued':>10} {'senders':>7}")
    for line in figures.timeline:
        print(f"  {line['at']:>7.0f} {line['sends_per_second']:>9,.0f} {line['finished']:>10,} {line['queued']:>10,}"
              f" {line['senders']:>7}")  # fmt: skip
    print("sender replicas the operator asked for (s after apply → replicas): "
          + ", ".join(f"{at:.0f}→{count}" for at, count in figures.replicas))  # fmt: skip

    rows = dict(figures.processes)
    senders = {name: row for name, row in rows.items() if name.startswith("sender-")}
    rows["senders"] = {"cpu_seconds": sum(r["cpu_seconds"] for r in senders.values()),
                       "peak_rss_mb": max((r["peak_rss_mb"] for r in senders.values()), default=0.0)}  # fmt: skip
    print("\nCPU from apply to Completed, and peak RSS (PostgreSQL: peak PSS of all its processes together):")
    print(f"  {'process':<16} {'CPU s':>8} {'µs/notif':>9} {'peak MB':>8}")
    for name in ("operator", *senders, "senders", "postgresql", "redis", *ELSEWHERE):
        row = rows[name]
        extra = ""
        if name in senders:
            stopped = row["stopped"]
            began = "before apply" if row["started"] <= 0 else f"{row['started']:.0f}s"
            extra = f"  (ran {began} → {'Completed' if stopped < 0 else f'{stopped:.0f}s'})"
        label = f"  {name if name not in senders else '  ' + name:<16}"
        print(f"{label} {row['cpu_seconds']:>8.1f} {row['cpu_seconds'] / n * 1e6:>9,.0f} {row['peak_rss_mb']:>8.0f}"
              f"{extra}")  # fmt: skip
    noti = sum(rows[name]["cpu_seconds"] for name in NOTI)
    machine = noti + sum(rows[name]["cpu_seconds"] for name in ELSEWHERE)
    print(f"  Noti (operator + senders + PostgreSQL + Redis): {noti:.1f} CPU s = {noti / n * 1e6:,.0f} µs/notification")
    print(f"  everything measured (with the simulator, apiserver, etcd): {machine:.1f} CPU s")
    cores = os.cpu_count() or 2
    budget = cores * TARGET_SECONDS / 1_000_000 * 1e6
    print(
        f"  the target's budget: {cores} cores x {TARGET_SECONDS:.0f} s per 1,000,000 = {budget:,.0f} µs of CPU per "
        f"notification for everything on the machine; Noti used {noti / n * 1e6 / budget:.0%} of it"
    )
    print(f"\nRedis used_memory_peak: {figures.redis_peak_bytes / 2**20:,.1f} MB")
    print(
        f"notifications table (all partitions, indexes, TOAST): {figures.table_bytes / 2**20:,.1f} MB "
        f"({figures.table_bytes / max(n, 1):,.0f} bytes/record); devices: {figures.devices_bytes / 2**20:,.1f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1_000_000, help="active devices in the audience")
    parser.add_argument("--max-senders", type=int, default=0, help="the credential's maxReplicas (0: the CRD's, 20)")
    parser.add_argument("--rate", type=int, default=0, help="the campaign's ratePerSecond (0: unlimited)")
    parser.add_argument("--interval", type=float, default=5.0, help="NOTI_OPERATOR_INTERVAL_SECONDS (the chart's: 5)")
    parser.add_argument("--drain-seconds", type=float, default=0, help="NOTI_OPERATOR_DRAIN_SECONDS (0: chart's 60)")
    parser.add_argument("--simulator-workers", type=int, default=1, help="APNs simulator processes")
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up this long after apply")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--py-spy", type=Path, help="profile the operator and each sender into this folder")
    parser.add_argument("--pg-waits", action="store_true", help="sample what PostgreSQL's backends wait on")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs) for a look")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="noti-bench-campaign-"))
    try:
        figures = run(args, workdir)
    finally:
        if args.keep:
            print(f"logs kept in {workdir}")
        else:
            subprocess.run(["rm", "-rf", str(workdir)], check=False)
    report(figures)
    if figures.pg_waits:
        print("\nPostgreSQL's active client backends, sampled each second (wait event, query):")
        for key, samples in list(figures.pg_waits.items())[:12]:
            print(f"  {samples:>6}  {key}")
    for path in sorted(args.py_spy.glob("*.txt")) if args.py_spy else []:
        print(f"\npy-spy {path.stem} (idle included), top frames:")
        for share, frames in top_frames(path):
            print(f"  {share:>5.1%}  {frames}")
    if args.json:
        args.json.write_text(json.dumps(asdict(figures), indent=2))
    sent = figures.statuses.get("sent", 0)
    if figures.phase != "Completed" or sent != figures.devices:
        sys.exit(f"not every notification sent: phase {figures.phase}, {sent:,} of {figures.devices:,} sent")


if __name__ == "__main__":
    main()
