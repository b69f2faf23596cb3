"""bench/bench_peers.py in its smallest mode: every peer builds, runs and delivers everything.

The figures are the benchmark's business (it prints them); this only proves the benchmark works:
each peer — Noti's client and sender, stock httpx, aioapns, Pushy, sideshow/apns2 and gorush —
delivered every notification to Noti's simulator, and the report has a row per peer. The peers
come from scripts/build-peers.sh's cache ($NOTI_PEERS_DIR when scripts/test.sh exported it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PEERS = ("noti", "httpx", "aioapns", "pushy", "apns2", "noti-sender", "gorush")


def test_every_peer_delivers_every_notification_and_gets_a_report_row(tmp_path: Path) -> None:
    results, report = tmp_path / "results.json", tmp_path / "REPORT.md"
    env = dict(os.environ)
    if "NOTI_PEERS_DIR" not in env:  # a cold build compiles gorush: minutes, once per pinned version
        built = subprocess.run(
            [str(REPO / "scripts" / "build-peers.sh")], capture_output=True, text=True, check=True, timeout=1800
        )
        env["NOTI_PEERS_DIR"] = built.stdout.splitlines()[-1]
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_peers.py"), "--count", "200", "--rounds", "1",
         "--servers", "simulator", "--concurrency", "100", "--relay-all",
         "--json", str(results), "--report", str(report)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr

    summary = json.loads(results.read_text())
    delivered = {(run["peer"], run["ok"], run["sent"]) for run in summary["runs"]}
    assert delivered == {(peer, 200, 200) for peer in PEERS}
    assert {row["peer"] for row in summary["rows"]} == set(PEERS)
    assert all(row["wire_bytes"] for row in summary["rows"])  # the relay counted every peer's bytes
    table = report.read_text().split("## Against ", 1)[1].split("\n\n")[1].splitlines()
    assert len(table) == 2 + len(PEERS)  # header, rule, a row per peer
    assert (tmp_path / "peers_throughput.png").stat().st_size > 0
    assert (tmp_path / "peers_cpu.png").stat().st_size > 0
