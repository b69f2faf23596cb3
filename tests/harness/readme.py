"""The README as a newcomer reads it: its set-up commands and its try-it examples, run as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx

from harness.procs import wait_until

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def _block(marker: str) -> str:
    found = re.search(rf"<!-- {marker} -->\s*```sh\n(.*?)```\s*<!-- /{marker} -->", README.read_text(), re.S)
    assert found, f"README lost its {marker} block"
    return found.group(1)


def try_it_examples() -> str:
    """The shell lines of the README's "Try it" section."""
    return _block("try-it")


def export_line() -> str:
    """The README's line that points a shell at the running dev stack."""
    found = re.search(r"^export NOTI_URL=\S+ NOTI_API_KEY=.*$", README.read_text(), re.M)
    assert found, "README lost its export line"
    return found.group(0)


def run_try_it(url: str, cwd: Path, marker: str = "try-it") -> list[dict[str, Any]]:
    """Run the export line (pointed at ``url``) and the README block ``marker`` in ``cwd``; their JSON answers."""
    export = re.sub(r"NOTI_URL=\S+", f"NOTI_URL={url}", export_line())
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTI_")}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", f"{export}\n{_block(marker)}"],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def check_try_it(answers: list[dict[str, Any]], url: str, api_key: str, simulator_control_url: str) -> None:
    """What a newcomer expects of the examples: each answered, both sends delivered, the simulator saw them."""
    assert len(answers) == 5 and not any("detail" in answer for answer in answers), answers
    device, single, bulk, history, stats = answers
    assert device["owner"] == "user-1"
    assert single["status"] == "queued" and bulk["count"] == 1
    assert "results" in history and "overall" in stats

    headers = {"Authorization": f"Bearer {api_key}"}
    token = device["device_token"]

    def delivered() -> bool:
        page = httpx.get(f"{url}/api/notifications/", params={"device_token": token}, headers=headers).json()
        return len(page["results"]) == 2 and {n["status"] for n in page["results"]} == {"sent"}

    wait_until(delivered, timeout=30, what="both notifications sent")
    counters = httpx.get(f"{simulator_control_url}/counters").json()
    assert counters["by_token"][token] == 2 and counters["by_outcome"]["Success"] >= 2
