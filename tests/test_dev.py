"""`noti dev` as a new user meets it: start, the README's curl examples, restart, wrong input."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.procs import free_port, read_terminal, wait_until
from harness.readme import check_try_it, run_try_it

ROOT = Path(__file__).resolve().parents[1]


class Dev:
    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir, self.port = data_dir, port
        self.url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if k not in ("NOTI_DATABASE_URL", "NOTI_REDIS_URL")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "noti.cli", "dev", "--port", str(port), "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )  # fmt: skip
        wait_until(self._ready, timeout=60, what="noti dev")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"noti dev exited: {self.process.stdout.read() if self.process.stdout else ''}")
        if not (self.data_dir / "running.json").exists() or self.runtime["pid"] != self.process.pid:
            return False  # not written yet, or left behind by a stack that was killed
        return httpx.get(f"{self.url}/healthz").status_code == 200

    @property
    def api_key(self) -> str:
        return (self.data_dir / "dev-api-key").read_text().strip()

    @property
    def runtime(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads((self.data_dir / "running.json").read_text())
        return result

    def banner(self) -> str:
        """What ``noti dev`` printed, up to its banner's last line."""
        assert self.process.stdout is not None
        lines: list[str] = []
        for line in self.process.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C stops it"):
                break
        return "".join(lines)

    def stop(self) -> str:
        self.process.send_signal(signal.SIGINT)
        output, _ = self.process.communicate(timeout=60)
        return output


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Dev]:
    stack = Dev(tmp_path / ".noti", free_port())  # the README's default data directory, under its cwd
    yield stack
    if stack.process.poll() is None:
        stack.process.kill()
        stack.process.wait()


def test_readme_examples_work_and_reach_the_simulator(dev: Dev) -> None:
    answers = run_try_it(dev.url, dev.data_dir.parent)
    check_try_it(answers, dev.url, dev.api_key, dev.runtime["simulator_control_url"])
    output = dev.stop()
    assert dev.process.returncode == 0, output
    assert "stopped" in output


def test_readme_live_activity_walk_through_starts_updates_and_ends_one_on_the_simulator(dev: Dev) -> None:
    answers = run_try_it(dev.url, dev.data_dir.parent, "live-activity")
    *answers, refused = answers
    assert not any("detail" in answer for answer in answers), answers
    device, start_token, started, update_token, updated, ended = answers
    assert "A-17' has ended" in refused["detail"]  # the end retired the activity's update token
    assert device["owner"] == "user-2"
    assert (start_token["kind"], update_token["kind"]) == ("push_to_start", "update")
    assert [started["count"], updated["count"], ended["count"]] == [1, 1, 1]
    headers = {"Authorization": f"Bearer {dev.api_key}"}

    def delivered() -> list[str]:
        statuses = []
        for token in (start_token["token"], update_token["token"]):
            page = httpx.get(f"{dev.url}/api/notifications/", params={"device_token": token}, headers=headers).json()
            statuses += [n["status"] for n in page["results"]]
        return statuses

    wait_until(lambda: delivered() == ["sent"] * 3, timeout=30, what="start, update and end sent")
    counters = httpx.get(f"{dev.runtime['simulator_control_url']}/counters").json()
    assert counters["live_activities"] == {"start/10": 1, "update/5": 1, "end/5": 1}
    assert counters["by_token"][start_token["token"]] == 1 and counters["by_token"][update_token["token"]] == 2


def test_readme_channel_walkthrough_works_against_noti_dev(dev: Dev) -> None:
    created, broadcast, listed, read, deleted = run_try_it(dev.url, dev.data_dir.parent, "channels")
    channel_id = created["channel_id"]
    assert (created["message_storage_policy"], created["name"]) == (1, "match-42")
    assert broadcast["status"] == "sent" and broadcast["channel_id"] == channel_id
    assert [c["channel_id"] for c in listed["results"]] == [channel_id] and read["message_storage_policy"] == 1
    assert deleted == {"deleted": 204}
    headers = {"Authorization": f"Bearer {dev.api_key}"}
    record = httpx.get(f"{dev.url}/api/notifications/{broadcast['id']}/", headers=headers).json()
    assert (record["status"], record["push_type"]) == ("sent", "liveactivity")
    counters = httpx.get(f"{dev.runtime['simulator_control_url']}/counters").json()["channels"]
    assert (counters["created"], counters["broadcasts"], counters["deleted"]) == (1, 1, 1)


def test_second_start_reuses_data_and_key(tmp_path: Path) -> None:
    first = Dev(tmp_path / "data", free_port())
    key = first.api_key
    headers = {"Authorization": f"Bearer {key}"}
    token = "b2" * 32
    assert httpx.post(f"{first.url}/api/devices/", json={"device_token": token}, headers=headers).status_code == 201
    first.stop()
    second = Dev(tmp_path / "data", free_port())
    try:
        assert second.api_key == key
        answer = httpx.get(f"{second.url}/api/devices/{token}/", headers=headers)
        assert answer.status_code == 200 and answer.json()["device_token"] == token
    finally:
        second.stop()


def test_wrong_inputs_say_what_to_fix(dev: Dev, tmp_path: Path) -> None:
    taken = subprocess.run(
        [sys.executable, "-m", "noti.cli", "dev", "--port", str(dev.port), "--data-dir", str(tmp_path / "other")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert taken.returncode != 0
    assert f"port {dev.port} for the gateway is in use" in taken.stderr and "--port" in taken.stderr

    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    unwritable = subprocess.run(
        [sys.executable, "-m", "noti.cli", "dev", "--port", str(free_port()), "--data-dir", str(blocked / "data")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert unwritable.returncode != 0
    assert "cannot write to the data directory" in unwritable.stderr and "--data-dir" in unwritable.stderr
    assert "Traceback" not in unwritable.stderr + taken.stderr

    headers = {"Authorization": f"Bearer {dev.api_key}"}
    bad_token = httpx.post(f"{dev.url}/api/notifications/", json={"device_token": "xyz", "title": "x"}, headers=headers)
    assert bad_token.status_code == 422 and "hex" in bad_token.text
    missing = httpx.post(f"{dev.url}/api/devices/", json={}, headers=headers)
    assert missing.status_code == 422 and "device_token" in missing.text
    wrong_key = httpx.get(f"{dev.url}/api/devices/", headers={"Authorization": "Bearer noti_nope_nope"})
    assert wrong_key.status_code == 401 and "API key" in wrong_key.json()["detail"]

    send = subprocess.run(
        [sys.executable, "-m", "noti.cli", "send", "--token", "zz", "--title", "x", "--gateway", dev.url,
         "--api-key", dev.api_key],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert send.returncode != 0 and "device_token" in send.stderr and "hex" in send.stderr


def test_noti_send_through_the_gateway(dev: Dev) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "noti.cli", "send", "--token", "c3" * 32, "--title", "Hi", "--app", "com.example.noti",
         "--gateway", dev.url, "--api-key", dev.api_key],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("queued ")


def test_campaign_run_against_the_dev_stack(dev: Dev) -> None:
    headers = {"Authorization": f"Bearer {dev.api_key}"}
    for i in range(5):
        httpx.post(f"{dev.url}/api/devices/", json={"device_token": f"{i + 1:064x}"}, headers=headers)
    result = subprocess.run(
        [sys.executable, "-m", "noti.cli", "campaign", "run", str(ROOT / "examples" / "campaign.yaml"),
         "--data-dir", str(dev.data_dir), "--timeout", "60"],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "default/winter-sale: total 5, sent 5, failed 0, invalid tokens 0" in result.stdout


def test_a_second_stack_on_the_same_data_directory_is_refused(dev: Dev) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "noti.cli", "dev", "--port", str(free_port()), "--data-dir", str(dev.data_dir)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert second.returncode != 0
    assert f"in use by the dev stack at {dev.url} (pid {dev.process.pid})" in second.stderr
    assert "--data-dir" in second.stderr and "Traceback" not in second.stderr
    # The first keeps running and stays findable: the refused one removed nothing of it.
    assert dev.runtime["gateway_url"] == dev.url
    assert httpx.get(f"{dev.url}/healthz").status_code == 200


def test_data_directory_is_private_to_its_owner(dev: Dev) -> None:
    assert dev.data_dir.stat().st_mode & 0o777 == 0o700
    for name in ("running.json", "noti.db", "dev-api-key", "dev-apns-key.p8", "lock"):
        mode = (dev.data_dir / name).stat().st_mode & 0o777
        assert mode == 0o600, f"{name} has mode {mode:o}"


def test_a_killed_stack_leaves_no_lock_behind(tmp_path: Path) -> None:
    first = Dev(tmp_path / ".noti", free_port())
    first.process.kill()
    first.process.wait()
    second = Dev(tmp_path / ".noti", free_port())
    try:
        assert second.runtime["pid"] == second.process.pid
    finally:
        second.stop()


def test_an_impossible_port_says_so(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "noti.cli", "dev", "--port", "99999", "--data-dir", str(tmp_path / "d")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "--port" in result.stderr and "99999" in result.stderr
    assert "Traceback" not in result.stderr


def _send(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("NOTI_URL", "NOTI_API_KEY", "NOTI_APNS_CA_FILE")}
    return subprocess.run(
        [sys.executable, "-m", "noti.cli", "send", *args], capture_output=True, text=True, timeout=90,
        env={**clean, **(env or {})},
    )  # fmt: skip


def test_the_banners_curl_line_works_and_ends_its_answer_with_a_newline(dev: Dev) -> None:
    lines = [line.strip() for line in dev.banner().splitlines()]
    export = next(line for line in lines if line.startswith("export NOTI_URL="))
    curl = next(line for line in lines if line.startswith("curl "))
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", f"{export}\n{curl}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("}\n")
    assert json.loads(result.stdout)["status"] == "queued"


def test_noti_send_dev_goes_straight_to_the_simulator_with_the_dev_credential(dev: Dev) -> None:
    token = "d4" * 32
    result = _send("--dev", "--data-dir", str(dev.data_dir), "--token", token, "--title", "Hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("sent: apns-id ")
    counters = httpx.get(f"{dev.runtime['simulator_control_url']}/counters").json()
    assert counters["by_token"][token] == 1


def test_noti_send_dev_without_a_running_stack_says_to_start_one_and_creates_nothing(tmp_path: Path) -> None:
    result = _send("--dev", "--data-dir", str(tmp_path / "none"), "--token", "d4" * 32, "--title", "Hi")
    assert result.returncode != 0
    assert "no dev stack is running" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "none").exists()


def test_an_untrusted_apns_certificate_is_named_with_the_option_that_trusts_it(dev: Dev) -> None:
    stack = dev.runtime
    direct = (
        "--token", "e5" * 32, "--title", "Hi", "--key-file", stack["key_file"], "--key-id", stack["key_id"],
        "--team-id", stack["team_id"], "--app", stack["app"], "--endpoint", stack["simulator_url"],
    )  # fmt: skip
    untrusted = _send(*direct)
    assert untrusted.returncode != 0
    assert "certificate" in untrusted.stderr and "not trusted" in untrusted.stderr, untrusted.stderr
    assert "--ca-file" in untrusted.stderr and "NOTI_APNS_CA_FILE" in untrusted.stderr
    assert "Traceback" not in untrusted.stderr
    trusted = _send(*direct, env={"NOTI_APNS_CA_FILE": stack["ca_file"]})
    assert trusted.returncode == 0, trusted.stderr
    assert trusted.stdout.startswith("sent: apns-id ")


def test_noti_send_wait_prints_the_outcome_with_apns_reason(dev: Dev) -> None:
    gone = "f6" * 32
    httpx.post(f"{dev.runtime['simulator_control_url']}/faults", json={"unregistered": [gone]}).raise_for_status()
    env = {"NOTI_URL": dev.url, "NOTI_API_KEY": dev.api_key}
    sent = _send("--token", "a7" * 32, "--title", "Hi", "--app", "com.example.noti", "--wait", env=env)
    assert sent.returncode == 0, sent.stderr
    queued, outcome = sent.stdout.splitlines()
    notification_id = queued.removeprefix("queued ")
    assert outcome.startswith(f"sent {notification_id} (apns-id ")

    failed = _send("--token", gone, "--title", "Hi", "--app", "com.example.noti", "--wait", env=env)
    assert failed.returncode == 1
    notification_id = failed.stdout.splitlines()[0].removeprefix("queued ")
    assert failed.stdout.splitlines()[1] == f"invalid_token {notification_id}: APNs answered 410: Unregistered"


def test_noti_send_wait_gives_up_after_its_timeout(dev: Dev) -> None:
    httpx.post(f"{dev.runtime['simulator_control_url']}/faults", json={"latency_ms": 5000}).raise_for_status()
    env = {"NOTI_URL": dev.url, "NOTI_API_KEY": dev.api_key}
    slow = _send(
        "--token", "b8" * 32, "--title", "Hi", "--app", "com.example.noti", "--wait", "--timeout", "1", env=env
    )
    assert slow.returncode != 0
    assert "after 1s" in slow.stderr and "--timeout" in slow.stderr and "Traceback" not in slow.stderr


def _campaign_manifest(path: Path, name: str, rate: int, rate_field: str = "ratePerSecond") -> Path:
    path.write_text(
        f"apiVersion: noti.dev/v1alpha1\nkind: NotificationCampaign\nmetadata: {{name: {name}}}\n"
        "spec:\n  credentialRef: {name: dev}\n  notification: {title: Slowly}\n  audience: {allDevices: true}\n"
        f"  {rate_field}: {rate}\n"
    )
    return path


def _campaign_run(dev: Dev, manifest: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "noti.cli", "campaign", "run", str(manifest), "--data-dir", str(dev.data_dir),
         "--timeout", "60"],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip


def _register(dev: Dev, count: int) -> None:
    headers = {"Authorization": f"Bearer {dev.api_key}"}
    for i in range(count):
        answer = httpx.post(f"{dev.url}/api/devices/", json={"device_token": f"{i + 1:064x}"}, headers=headers)
        assert answer.status_code in (200, 201), answer.text


def test_campaign_run_prints_progress_lines_off_a_terminal_and_a_rerun_says_it_is_done(
    dev: Dev, tmp_path: Path
) -> None:
    _register(dev, 30)
    manifest = _campaign_manifest(tmp_path / "slow.yaml", "slow", rate=10)  # about 3 s of sending
    first = _campaign_run(dev, manifest)
    assert first.returncode == 0, first.stderr
    progress = re.findall(r"^default/slow: (\d+)/30 finished \(sent \d+, failed 0\), queued \d+, \S+/s, ETA \S+$",
                          first.stdout, re.M)  # fmt: skip
    assert len(progress) >= 2, first.stdout
    assert int(progress[0]) < 30 and int(progress[-1]) == 30, first.stdout
    assert first.stdout.splitlines()[-1] == "default/slow: total 30, sent 30, failed 0, invalid tokens 0"
    counters = httpx.get(f"{dev.runtime['simulator_control_url']}/counters").json()

    again = _campaign_run(dev, manifest)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(
        "campaign default/slow already completed: 30 sent, 0 failed, 0 invalid tokens of 30"
    ), again.stdout
    assert "queued" not in again.stdout
    assert httpx.get(f"{dev.runtime['simulator_control_url']}/counters").json()["total"] == counters["total"]


def test_a_typo_in_a_campaign_manifest_is_refused_before_anything_is_queued(dev: Dev, tmp_path: Path) -> None:
    _register(dev, 3)
    typo = _campaign_run(dev, _campaign_manifest(tmp_path / "typo.yaml", "typo", rate=1, rate_field="ratePerSec"))
    assert typo.returncode != 0
    assert typo.stderr.strip() == f"Error: {tmp_path / 'typo.yaml'}: spec.ratePerSec: unknown field"
    headers = {"Authorization": f"Bearer {dev.api_key}"}
    page = httpx.get(f"{dev.url}/api/notifications/", params={"campaign": "default/typo"}, headers=headers).json()
    assert page["results"] == []


def test_campaign_run_on_a_terminal_draws_a_progress_bar(dev: Dev, tmp_path: Path) -> None:
    import pty

    _register(dev, 20)
    manifest = _campaign_manifest(tmp_path / "bar.yaml", "bar", rate=10)
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "noti.cli", "campaign", "run", str(manifest), "--data-dir", str(dev.data_dir),
         "--timeout", "60"],
        stdin=terminal, stdout=terminal, stderr=terminal, env={**os.environ, "COLUMNS": "160"},
    )  # fmt: skip
    os.close(terminal)
    output = b""
    try:
        output = read_terminal(controller)
        assert process.wait(timeout=60) == 0, output.decode(errors="replace")
    finally:
        if process.poll() is None:
            process.kill()
        os.close(controller)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode(errors="replace"))  # colours and cursor moves
    assert "━" in text  # the bar itself
    assert re.search(r"20/20 .*sent 20 .*failed 0 .*/s .*ETA", text), text
    assert "default/bar: total 20, sent 20, failed 0, invalid tokens 0" in text
