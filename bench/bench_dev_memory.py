"""Memory `noti dev` gives back after a burst, and what it costs idle (issue 11).

Starts `noti dev` (SQLite, embedded Redis, APNs simulator, one process) in a throwaway data
directory, reads its RSS from /proc once it listens, registers the devices and sends
``--notifications`` through the REST API (bulk sends of up to 10,000 plus ``--singles`` single
sends), waits until every notification is final, idles ``--idle`` seconds and reads RSS again.
Then it counts the CPU ticks the idle stack spends over ``--cpu-seconds``.

Target: RSS after the burst and the idle settles within ~15-20 MB of the start baseline, idle CPU
well under 1 % of a core, and the burst no slower than before.

``--tracemalloc N`` traces allocations (N frames; slow) from the baseline on and prints what of them
is still alive after the idle; ``--malloc-stats`` prints pymalloc's and glibc's statistics at both, and
``--arenas`` also the emptiest pymalloc arenas, the objects in them and who holds those (bench/_arenas.py).
Usage: python bench/bench_dev_memory.py [--notifications 40000] [--singles 1000] [--idle 30]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from _services import ROOT  # noqa: F401  (puts tests/ on sys.path for harness)

from harness.procs import free_port, wait_until

BULK = 10_000
_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")

# The child under --tracemalloc or --malloc-stats. SIGUSR1 writes pymalloc's and glibc's statistics to
# NOTI_BENCH_SNAPSHOT (then a ".done" file); under --tracemalloc the first signal also starts tracing
# and the next writes a snapshot instead: what was allocated since the baseline and is still alive.
_INSPECTED_CHILD = """
import ctypes, gc, os, signal, sys, tracemalloc
def _describe(o):
    if type(o) is dict:
        return "dict" + repr(list(o)[:6])[:100]
    return type(o).__qualname__ + ("" if type(o) in (list, tuple, set) else repr(o)[:60])
def _chain(o, objects, depth=7):
    # who holds o: one referrer per level up (the first not of this inspection)
    chain, seen = [], {id(objects), id(sys._getframe())}
    for _ in range(depth):
        up = [r for r in gc.get_referrers(o) if id(r) not in seen and type(r).__name__ != "frame"]
        if not up:
            break
        seen.add(id(o))
        o = up[0]
        chain.append(_describe(o) + f" (+{len(up) - 1} more)")
    return chain
def _dump(*_):
    path = os.environ["NOTI_BENCH_SNAPSHOT"]
    gc.collect()
    if tracemalloc.is_tracing():
        tracemalloc.take_snapshot().dump(path)
    else:
        sys.stderr.flush()
        saved, out = os.dup(2), os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(out, 2)
        sys._debugmallocstats()
        ctypes.CDLL("libc.so.6").malloc_stats()
        os.dup2(saved, 2)
        os.close(out)
        from collections import Counter
        gc.unfreeze()  # the gateway freezes what it loaded at start: count that too
        objects = gc.get_objects()
        counts = Counter(type(o).__qualname__ for o in objects)
        def small(x):  # what pymalloc's 113-128 byte class holds: 64-79 character strings, 80-95 byte bytes
            return (type(x) is str and 64 <= len(x) < 80) or (type(x) is bytes and 80 <= len(x) < 96)
        holders = []
        for o in objects:
            items = o.keys() if type(o) is dict else o if type(o) in (list, set, tuple, frozenset) else ()
            held = sum(1 for x in items if small(x))
            if held > 100:
                sample = repr(next(x for x in items if small(x)))[:70]
                holders.append((held, type(o).__name__, sample, _chain(o, objects)))
        holders.sort(reverse=True)
        gc.freeze()
        with open(path, "a") as file:
            file.write("objects by type: " + repr(counts.most_common(40)) + "\\n")
            file.write("holders of small strings: " + repr(holders[:12]) + "\\n")
        if os.environ.get("NOTI_BENCH_ARENAS"):
            sys.path.insert(0, os.environ["NOTI_BENCH_ARENAS"])
            import _arenas
            with open(path, "a") as file:
                file.write(_arenas.report() + "\\n")
        if os.environ.get("NOTI_BENCH_TRACE"):
            tracemalloc.start(int(os.environ["NOTI_BENCH_TRACE"]))
    open(path + ".done", "w").close()
signal.signal(signal.SIGUSR1, _dump)
from noti.cli import main
sys.argv = ["noti", *sys.argv[1:]]
main()
"""


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE / 2**20


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def rollup(pid: int) -> dict[str, float]:
    """Anonymous vs file-backed resident memory, in MB (smaps_rollup)."""
    wanted = ("Rss", "Anonymous", "Shared_Clean", "Private_Clean", "Private_Dirty")
    figures = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        if name in wanted:
            figures[name] = int(rest.split()[0]) / 1024
    return figures


def cpu_ticks(pid: int) -> int:
    """utime + stime of every thread of ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


class Stack:
    def __init__(self, data_dir: Path, tracemalloc_frames: int, inspect: bool, arenas: bool = False) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k not in ("NOTI_DATABASE_URL", "NOTI_REDIS_URL")}
        argv = ["dev", "--port", str(self.port), "--data-dir", str(data_dir)]
        if inspect:
            env["NOTI_BENCH_SNAPSHOT"] = str(data_dir.parent / "snapshot")
            if arenas:
                env["NOTI_BENCH_ARENAS"] = str(Path(__file__).parent)
            if tracemalloc_frames:
                env["NOTI_BENCH_TRACE"] = str(tracemalloc_frames)
            command = [sys.executable, "-c", _INSPECTED_CHILD, *argv]
        else:
            command = [sys.executable, "-m", "noti.cli", *argv]
        # cwd outside the repository: its operator/ folder would shadow the standard library's module
        self.process = subprocess.Popen(
            command, cwd=data_dir.parent, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.pid = self.process.pid
        wait_until(self._ready, timeout=120, what="noti dev")
        self.headers = {"Authorization": f"Bearer {(data_dir / 'dev-api-key').read_text().strip()}"}

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"noti dev exited: {self.process.stderr.read() if self.process.stderr else ''}")
        runtime = self.data_dir / "running.json"
        if not runtime.exists() or json.loads(runtime.read_text())["pid"] != self.pid:
            return False
        return httpx.get(f"{self.url}/healthz").status_code == 200

    def snapshot(self, name: str) -> Path:
        path = self.data_dir.parent / "snapshot"
        done = Path(f"{path}.done")
        done.unlink(missing_ok=True)
        os.kill(self.pid, signal.SIGUSR1)
        wait_until(done.exists, timeout=300, what="tracemalloc snapshot", interval=0.5)
        return path.rename(path.with_name(name))

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def tokens(count: int) -> list[str]:
    return [f"{i + 1:064x}" for i in range(count)]


def post(client: httpx.Client, url: str, body: object, headers: dict[str, str]) -> httpx.Response:
    """POST, again after a 503 (a stack slowed down by --tracemalloc may time out on its Redis)."""
    for _ in range(5):
        answer = client.post(url, json=body, headers=headers)
        if answer.status_code != 503:
            break
        print(f"503 from {url}: {answer.text}; again in 2 s", file=sys.stderr)
        time.sleep(2)
    answer.raise_for_status()
    return answer


def register(client: httpx.Client, stack: Stack, devices: list[str]) -> None:
    for start in range(0, len(devices), BULK):
        chunk = [{"device_token": token} for token in devices[start : start + BULK]]
        answer = post(client, f"{stack.url}/api/devices/bulk/", {"devices": chunk}, stack.headers)
        assert answer.json()["failed"] == 0, answer.text


def send(client: httpx.Client, stack: Stack, devices: list[str], singles: int) -> None:
    bulk, single = devices[singles:], devices[:singles]
    for start in range(0, len(bulk), BULK):
        body = {"device_tokens": bulk[start : start + BULK], "title": "Burst", "body": f"chunk {start // BULK}"}
        post(client, f"{stack.url}/api/notifications/bulk/", body, stack.headers)

    def one(token: str) -> None:
        post(client, f"{stack.url}/api/notifications/", {"device_token": token, "title": "One"}, stack.headers)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, single))


def wait_sent(client: httpx.Client, stack: Stack, total: int, timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        overall = client.get(f"{stack.url}/api/notifications/stats/", headers=stack.headers).json()["overall"]
        if overall["total"] >= total and overall["in_flight"] == 0:
            return dict(overall)
        time.sleep(0.5)
    raise TimeoutError(f"not all {total} notifications final after {timeout:.0f}s: {overall}")


def survivors(after: Path, count: int = 30) -> None:
    """What was allocated after the baseline and is still alive: it pins the burst's pymalloc arenas."""
    import tracemalloc

    snapshot = tracemalloc.Snapshot.load(str(after))
    stats = snapshot.statistics("traceback")
    print(f"\ntracemalloc: {sum(s.size for s in stats) / 2**20:.1f} MB in {sum(s.count for s in stats):,} blocks "
          "allocated since the baseline still alive; largest:")  # fmt: skip
    for stat in stats[:count]:
        print(f"{stat.size / 2**20:8.2f} MB {stat.count:8d} blocks")
        for line in stat.traceback.format()[-6:]:
            print(f"        {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notifications", type=int, default=40_000)
    parser.add_argument("--singles", type=int, default=1_000, help="of those, sent one by one")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after start before the baseline")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle after the burst")
    parser.add_argument("--cpu-seconds", type=float, default=20.0, help="idle CPU measured over this long")
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES", help="what of the burst stays (slow)")
    parser.add_argument("--malloc-stats", action="store_true", help="print pymalloc's and glibc's statistics")
    parser.add_argument("--arenas", action="store_true", help="also name what the emptiest pymalloc arenas hold")
    parser.add_argument("--again", action="store_true", help="then a second burst: is the memory reused?")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="noti-bench-dev-") as tmp:
        inspect = bool(args.tracemalloc or args.malloc_stats or args.arenas)
        stack = Stack(Path(tmp) / ".noti", args.tracemalloc, inspect, args.arenas)
        try:
            started = rss_mb(stack.pid)
            time.sleep(args.settle)
            baseline = rss_mb(stack.pid)
            before = stack.snapshot("before") if inspect else None
            devices = tokens(args.notifications)
            with httpx.Client(timeout=600, limits=httpx.Limits(max_connections=8)) as client:
                register(client, stack, devices)
                registered = rss_mb(stack.pid)
                ticks, clock = cpu_ticks(stack.pid), time.monotonic()
                send(client, stack, devices, args.singles)
                accepted = time.monotonic() - clock
                overall = wait_sent(client, stack, args.notifications, timeout=600)
                burst, burst_cpu = time.monotonic() - clock, (cpu_ticks(stack.pid) - ticks) / _TICK
                sent_rss, peak = rss_mb(stack.pid), peak_rss_mb(stack.pid)
            curve = []
            for _ in range(int(args.idle // 5)):
                time.sleep(5)
                curve.append(rss_mb(stack.pid))
            time.sleep(args.idle % 5)
            settled, parts, threads = rss_mb(stack.pid), rollup(stack.pid), len(os.listdir(f"/proc/{stack.pid}/task"))
            ticks = cpu_ticks(stack.pid)
            time.sleep(args.cpu_seconds)
            idle_ticks = cpu_ticks(stack.pid) - ticks
            again = None
            if args.again:
                with httpx.Client(timeout=600, limits=httpx.Limits(max_connections=8)) as client:
                    send(client, stack, devices, args.singles)
                    wait_sent(client, stack, 2 * args.notifications, timeout=600)
                    again_peak = rss_mb(stack.pid)
                time.sleep(args.idle)
                again = again_peak, rss_mb(stack.pid)
            after = stack.snapshot("after") if inspect else None
        finally:
            stack.stop()
        n = args.notifications
        print(f"noti dev, {n:,} notifications ({n - args.singles:,} in bulk sends of up to {BULK:,}, "
              f"{args.singles:,} single sends){', under tracemalloc' if args.tracemalloc else ''}")  # fmt: skip
        print(f"  RSS at start            {started:7.1f} MB")
        print(f"  RSS baseline (+{args.settle:.0f} s)    {baseline:7.1f} MB")
        print(f"  RSS, devices registered {registered:7.1f} MB")
        print(f"  RSS when all were final {sent_rss:7.1f} MB   (peak {peak:.1f} MB)")
        print(f"  RSS after {args.idle:.0f} s idle     {settled:7.1f} MB   ({settled - baseline:+.1f} MB vs baseline)")
        print(f"  RSS every 5 s of idle   {' '.join(f'{mb:.1f}' for mb in curve)}")
        print("  smaps_rollup after idle " + ", ".join(f"{name} {mb:.1f}" for name, mb in parts.items()) + " MB")
        print(f"  threads after idle      {threads}")
        print(f"  burst                   {burst:7.1f} s wall ({accepted:.1f} s to accept), {burst_cpu:.1f} s CPU, "
              f"{burst_cpu / n * 1e6:.0f} µs CPU/notification; {overall['sent']:,} sent, "
              f"{overall['failed'] + overall['invalid_token']:,} not")  # fmt: skip
        print(f"  idle CPU                {idle_ticks} ticks in {args.cpu_seconds:.0f} s "
              f"= {idle_ticks / _TICK / args.cpu_seconds * 100:.2f} % of a core")  # fmt: skip
        if again is not None:
            final, settled_again = again
            print(f"  a second burst          {final:7.1f} MB when final, {settled_again:.1f} MB after "
                  f"{args.idle:.0f} s idle ({settled_again - baseline:+.1f} MB vs baseline)")  # fmt: skip
        if before is not None and after is not None:
            print(f"\nat the baseline:\n{before.read_text()}")
            if args.tracemalloc:
                survivors(after)
            else:
                print(f"after the idle:\n{after.read_text()}")


if __name__ == "__main__":
    main()
