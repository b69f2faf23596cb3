"""bench/bench_campaign.py at a tiny scale: kubectl apply of an allDevices campaign reaches Completed.

The figures are the benchmark's business (it prints them); this only proves the benchmark works end
to end (kube-apiserver and etcd, the operator, the senders its Deployment asks for, the simulator,
PostgreSQL and Redis) and that every device got its notification.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEVICES = 200


def test_a_tiny_campaign_benchmark_completes_with_every_notification_sent(tmp_path: Path) -> None:
    figures = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_campaign.py"), "--devices", str(DEVICES), "--interval", "1",
         "--json", str(figures)],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    result = json.loads(figures.read_text())
    assert result["phase"] == "Completed" and result["statuses"] == {"sent": DEVICES}
    assert (result["status"]["total"], result["status"]["sent"], result["status"]["failed"]) == (DEVICES, DEVICES, 0)
    assert result["fan_out_seconds"] is not None and result["completed_seconds"] >= result["fan_out_seconds"]
    assert result["processes"]["sender-0"]["cpu_seconds"] > 0 and result["redis_peak_bytes"] > 0
    assert "apply → Completed" in done.stdout and "sends/s" in done.stdout
