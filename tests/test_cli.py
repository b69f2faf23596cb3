"""The ``noti`` command as a user runs it."""

from __future__ import annotations

import os
import pty
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import orjson
import pytest

from harness.gateway import APP, Keys
from harness.procs import free_port, read_terminal
from noti import __version__
from noti.commands.devices import COLUMNS, Progress, Totals, file_format
from noti.gateway.schemas import DeviceIn
from noti.store import migrate

TOKENS = [f"{n:02x}" * 32 for n in (0xA1, 0xB2, 0xC3, 0xD4)]


def _noti(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "noti.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        cwd=cwd,
        input=input,
    )


def _one_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single line a failed command printed (log lines aside), after checking it failed cleanly."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and " INFO " not in line]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as connection:
        return {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_version_prints_package_version() -> None:
    result = _noti("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"noti, version {__version__}"


def test_migrate_applies_schema_to_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/data/noti.db"
    result = _noti("migrate", env={"NOTI_DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    assert f"is at revision {migrate.head_revision()}" in result.stdout
    assert (tmp_path / "data" / "noti.db").exists()


def test_migrate_against_unreachable_database_is_one_clear_line_without_password() -> None:
    url = f"postgresql://noti:hunter2@127.0.0.1:{free_port()}/noti"
    result = _noti("migrate", "--database-url", url)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and " INFO " not in line]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: cannot reach the database postgresql+psycopg://noti:***@127.0.0.1")
    assert "hunter2" not in result.stderr


def test_migrate_against_postgres_reports_head(database_url: str) -> None:
    result = _noti("migrate", "--database-url", database_url)
    assert result.returncode == 0, result.stderr
    assert f"is at revision {migrate.head_revision()}" in result.stdout


def test_send_help_names_the_environment_variables_its_options_read() -> None:
    result = _noti("send", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for option, variable in [
        ("--gateway", "NOTI_URL"),
        ("--api-key", "NOTI_API_KEY"),
        ("--ca-file", "NOTI_APNS_CA_FILE"),
    ]:
        described = text.split(f"{option} ", 1)[1].split(" --", 1)[0]
        assert f"env var: {variable}" in described, described


def test_apikey_list_without_a_database_says_to_migrate_and_creates_nothing(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NOTI_DATABASE_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "noti.cli", "apikey", "list"], capture_output=True, text=True, env=env, cwd=tmp_path,
        timeout=60,
    )  # fmt: skip
    line = _one_error(result)
    assert f"no Noti database at {tmp_path}/.noti/noti.db" in line and "noti migrate" in line
    assert list(tmp_path.iterdir()) == []


def test_apikey_list_on_a_database_never_migrated_says_to_migrate(tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "empty.db").close()
    line = _one_error(_noti("apikey", "list", env={"NOTI_DATABASE_URL": f"sqlite:///{tmp_path}/empty.db"}))
    assert "has no Noti schema: run `noti migrate` first" in line
    assert _tables(tmp_path / "empty.db") == set()


def test_migrate_with_a_mysql_url_names_the_stores_noti_supports_without_the_password() -> None:
    line = _one_error(_noti("migrate", "--database-url", "mysql://noti:hunter2@127.0.0.1/noti"))
    assert "PostgreSQL or SQLite, not mysql" in line and "postgresql://" in line and "sqlite:///" in line
    assert "hunter2" not in line
    assert "not a URL" in _one_error(_noti("migrate", "--database-url", "hunter2"))


def test_migrate_to_an_unknown_revision_lists_the_known_ones_and_creates_nothing(tmp_path: Path) -> None:
    line = _one_error(_noti("migrate", "--database-url", f"sqlite:///{tmp_path}/noti.db", "--revision", "nope"))
    assert "no migration revision 'nope'" in line and "0001" in line and "head" in line
    assert list(tmp_path.iterdir()) == []


def test_migrate_down_without_a_terminal_needs_yes_and_keeps_the_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/noti.db"
    assert _noti("migrate", "--database-url", url).returncode == 0
    line = _one_error(_noti("migrate", "--database-url", url, "--down"))
    assert "drops every Noti table" in line and "--yes" in line
    assert "api_keys" in _tables(tmp_path / "noti.db")
    dropped = _noti("migrate", "--database-url", url, "--down", "--yes")
    assert dropped.returncode == 0, dropped.stderr
    assert "is at revision base" in dropped.stdout
    assert "api_keys" not in _tables(tmp_path / "noti.db")


def _on_a_terminal(args: list[str], answer: str) -> tuple[int, str]:
    """Run noti with a pseudo-terminal as stdin and stdout, typing ``answer`` at its prompt."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "noti.cli", *args], stdin=terminal, stdout=terminal, stderr=terminal, close_fds=True
    )
    os.close(terminal)
    try:
        output = read_terminal(controller, marker=b"Go on?")
        assert b"Go on?" in output, output.decode()
        os.write(controller, answer.encode() + b"\n")
        output = read_terminal(controller, output)
        return process.wait(timeout=60), output.decode()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(controller)


def test_migrate_down_on_a_terminal_asks_before_dropping(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/noti.db"
    assert _noti("migrate", "--database-url", url).returncode == 0
    returncode, output = _on_a_terminal(["migrate", "--database-url", url, "--down"], "n")
    assert returncode != 0 and "Aborted" in output
    assert "api_keys" in _tables(tmp_path / "noti.db")
    returncode, output = _on_a_terminal(["migrate", "--database-url", url, "--down"], "y")
    assert returncode == 0, output
    assert "api_keys" not in _tables(tmp_path / "noti.db")


# --- noti devices import ---


def _devices(live_gateway: str, key: str, **params: object) -> dict[str, dict[str, object]]:
    listing = httpx.get(
        f"{live_gateway}/api/devices/", params={"limit": 1000, **params}, headers={"Authorization": f"Bearer {key}"}
    )
    return {d["device_token"]: d for d in listing.json()["results"]}


def test_devices_import_csv_stores_valid_lines_reports_each_invalid_one_by_line_and_exits_1(
    tmp_path: Path, live_gateway: str, keys: Keys
) -> None:
    rows = [
        "device_token,app,owner,tags,is_active",
        f'{TOKENS[0].upper()},{APP},ann,"vip,beta",',
        f"abc,{APP},ann,,",  # line 3: too short
        f"{TOKENS[1]},{APP},bob",  # line 4: a cell short
        f'{TOKENS[2]},{APP},"bob',  # lines 5-6: a quoted cell over two lines, an owner with a newline is fine
        'smith",["trial"],false',
        f"{TOKENS[3]},-bad-app,,,",  # line 7
    ]
    (tmp_path / "audience.csv").write_text("\ufeff" + "\n".join(rows) + "\n")  # with a BOM, as Excel writes
    env = {"NOTI_URL": live_gateway, "NOTI_API_KEY": keys.sender}
    result = _noti("devices", "import", str(tmp_path / "audience.csv"), env=env)
    assert result.returncode == 1, result.stderr
    errors = result.stderr.splitlines()
    assert [line.split(":")[0] for line in errors] == ["line 3", "line 4", "line 7"], result.stderr
    assert "at least 64 hex digits" in errors[0] and "3 cells where the header has 5 columns" in errors[1]
    assert errors[2].startswith("line 7: app: ")
    assert "imported 2 devices (2 new, 0 updated)" in result.stdout and "3 lines failed" in result.stdout
    assert "\r" not in result.stdout  # not a terminal: plain lines
    stored = _devices(live_gateway, keys.sender)
    assert set(stored) == {TOKENS[0], TOKENS[2]}
    assert (stored[TOKENS[0]]["owner"], stored[TOKENS[0]]["tags"], stored[TOKENS[0]]["is_active"]) == (
        "ann", ["vip", "beta"], True,
    )  # fmt: skip
    assert (stored[TOKENS[2]]["owner"], stored[TOKENS[2]]["tags"], stored[TOKENS[2]]["is_active"]) == (
        "bob\nsmith", ["trial"], False,
    )  # fmt: skip


def test_devices_import_streams_json_lines_from_stdin_in_batches_and_updates_on_a_second_run(
    live_gateway: str, keys: Keys
) -> None:
    lines = [orjson.dumps({"device_token": f"{n:064x}", "owner": f"user-{n % 100}"}).decode() for n in range(12_000)]
    lines[4_999] = "{not json"  # line 5000, in the first batch
    lines[10_500] = '["a", "list"]'  # line 10501, in the third
    lines.insert(7_000, "")  # blank lines are skipped, and still counted
    stdin = "\n".join(lines) + "\n"
    args = ("devices", "import", "-", "--app", APP, "--batch-size", "2000", "--concurrency", "3")
    env = {"NOTI_URL": live_gateway, "NOTI_API_KEY": keys.sender}
    first = _noti(*args, env=env, input=stdin)
    assert first.returncode == 1
    assert (
        first.stderr.splitlines()
        == [
            "line 5000: not JSON: unexpected character",
            "line 10502: not a JSON object (one device per line)",
        ]
        or first.stderr.splitlines()[1] == "line 10502: not a JSON object (one device per line)"
    ), first.stderr
    assert "imported 11,998 devices (11,998 new, 0 updated)" in first.stdout
    without_errors = "\n".join(line for line in lines if line.startswith('{"')) + "\n"
    second = _noti(*args, env=env, input=without_errors)
    assert second.returncode == 0, second.stderr
    assert "imported 11,998 devices (0 new, 11,998 updated)" in second.stdout
    assert len(_devices(live_gateway, keys.sender, owner="user-7")) == 120


def test_devices_import_reports_errors_in_line_order_across_batches_in_flight(live_gateway: str, keys: Keys) -> None:
    lines = [
        orjson.dumps({"device_token": "ab" * 10, "app": APP}).decode(),  # refused by the gateway
        orjson.dumps({"device_token": TOKENS[0], "app": APP}).decode(),
        "not json",  # the last batch holds nothing but this line
    ]
    env = {"NOTI_URL": live_gateway, "NOTI_API_KEY": keys.sender}
    result = _noti("devices", "import", "-", "--batch-size", "2", env=env, input="\n".join(lines) + "\n")
    assert result.returncode == 1
    assert [line.split(":")[0] for line in result.stderr.splitlines()] == ["line 1", "line 3"]
    assert "imported 1 device (1 new, 0 updated)" in result.stdout and "; 2 lines failed" in result.stdout


def test_devices_import_refuses_a_csv_column_that_is_not_a_device_field_and_imports_nothing(
    tmp_path: Path, live_gateway: str, keys: Keys
) -> None:
    (tmp_path / "audience.csv").write_text(f"device_token,app,email\n{TOKENS[0]},{APP},a@example.com\n")
    env = {"NOTI_URL": live_gateway, "NOTI_API_KEY": keys.sender}
    result = _noti("devices", "import", str(tmp_path / "audience.csv"), env=env)
    assert result.returncode == 2
    assert "'email' is not a device field; the columns are device_token, app, platform, owner, tags, is_active" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr and _devices(live_gateway, keys.sender) == {}


def test_devices_import_with_a_read_only_key_stops_at_the_first_batch_with_the_gateway_message(
    tmp_path: Path, live_gateway: str, keys: Keys
) -> None:
    (tmp_path / "audience.jsonl").write_text(orjson.dumps({"device_token": TOKENS[0], "app": APP}).decode())
    env = {"NOTI_URL": live_gateway, "NOTI_API_KEY": keys.reader}
    result = _noti("devices", "import", str(tmp_path / "audience.jsonl"), env=env)
    assert result.returncode == 1
    assert (
        result.stderr.startswith("Error: the gateway refused the import (403): ") and "Traceback" not in result.stderr
    )


def test_devices_import_of_a_json_array_says_to_give_one_object_per_line(tmp_path: Path) -> None:
    (tmp_path / "audience.json").write_text(f'[\n  {{"device_token": "{TOKENS[0]}"}}\n]\n')
    result = _noti(
        "devices", "import", str(tmp_path / "audience.json"), "--gateway", "http://127.0.0.1:1", "--api-key", "k"
    )
    assert result.returncode == 2
    assert "is one JSON array: give a device object per line" in result.stderr


def test_devices_import_help_names_the_environment_variables() -> None:
    result = _noti("devices", "import", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "[env var: NOTI_URL]" in text and "[env var: NOTI_API_KEY]" in text


def test_devices_import_reads_the_format_from_the_option_else_the_extension_else_the_first_byte() -> None:
    assert file_format("audience.csv", "jsonl", b"device_token") == "jsonl"
    assert file_format("audience.CSV", None, b"{") == "csv"
    assert file_format("audience.ndjson", None, b"") == "jsonl"
    assert file_format("-", None, b'  {"device_token": "ab"}') == "jsonl"
    assert file_format("-", None, b"device_token,app") == "csv"


def test_devices_import_columns_are_the_fields_the_api_takes() -> None:
    assert tuple(DeviceIn.model_fields) == COLUMNS


def test_import_progress_redraws_one_line_on_a_terminal_and_prints_plain_lines_otherwise(
    capsys: pytest.CaptureFixture[str],
) -> None:
    Progress(1000, tty=True).update(500, Totals(created=400, updated=50, failed=2))
    drawn = capsys.readouterr().out
    assert drawn.startswith("\r\x1b[K[" + "#" * 15 + " " * 15 + "]  50%  450 imported, 2 failed, ")
    assert "/s  ETA " in drawn and "\n" not in drawn

    plain = Progress(None, tty=False)
    plain.update(0, Totals(created=3))  # the first line waits a few seconds
    plain.shown -= Progress.PLAIN_EVERY
    plain.update(0, Totals(created=3, failed=1))
    assert re.fullmatch(r"3 imported, 1 failed, [\d,]+/s\n", capsys.readouterr().out)
