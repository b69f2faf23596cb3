"""The ``noti`` command as a user runs it."""

from __future__ import annotations

import os
import pty
import select
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from harness.procs import free_port
from noti import __version__
from noti.store import migrate


def _noti(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "noti.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        cwd=cwd,
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


def _read_until(controller: int, output: bytes, marker: bytes | None, timeout: float = 60) -> bytes:
    """Read the terminal until ``marker`` shows (None: until it closes) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while (marker is None or marker not in output) and time.monotonic() < deadline:
        if select.select([controller], [], [], 0.5)[0]:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            output += chunk
    return output


def _on_a_terminal(args: list[str], answer: str) -> tuple[int, str]:
    """Run noti with a pseudo-terminal as stdin and stdout, typing ``answer`` at its prompt."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "noti.cli", *args], stdin=terminal, stdout=terminal, stderr=terminal, close_fds=True
    )
    os.close(terminal)
    try:
        output = _read_until(controller, b"", b"Go on?")
        assert b"Go on?" in output, output.decode()
        os.write(controller, answer.encode() + b"\n")
        output = _read_until(controller, output, None)
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
