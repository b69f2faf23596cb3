"""The ``noti`` command as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from harness.procs import free_port
from noti import __version__
from noti.store import migrate


def _noti(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "noti.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


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
