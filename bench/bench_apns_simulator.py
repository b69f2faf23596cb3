"""CPU the APNs simulator spends per notification in accept mode (one worker), under our client's load.

Starts ``noti apns-sim`` with one worker, drives it with ``bench_apns_client.py``'s client
processes (warm-up excluded), and prints the simulator's CPU per notification read from
/proc, beside the clients' own. Issue 17's target is ≤ 40 µs per notification.

Usage: python bench/bench_apns_simulator.py [--count 20000] [--concurrency 1000] [--processes 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from _services import ROOT  # noqa: F401  (puts tests/ on sys.path for the harness)
from bench_apns_client import _run_clients, _simulator_cpu

from harness.apns import start_simulator, stop_simulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="notifications per client process")
    parser.add_argument("--concurrency", type=int, default=1000, help="notifications in flight per client")
    parser.add_argument("--processes", type=int, default=1, help="client processes at once")
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
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
