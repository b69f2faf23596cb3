"""What a sender process loads: its RSS is mostly the modules it imports (issue #17: ≤ 100 MB)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _loaded_after(statement: str) -> set[str]:
    # A fresh interpreter away from the repository root (its operator/ folder shadows the stdlib's).
    # A None entry in sys.modules marks a module as absent: not loaded.
    script = f"{statement}\nimport sys\nprint(*[name for name, module in sys.modules.items() if module])"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
    )
    return set(out.stdout.split())


def test_a_sender_process_does_not_load_httpx_command_line_and_its_terminal_rendering() -> None:
    loaded = _loaded_after("import noti.sender.cli")
    assert "httpx" in loaded
    assert not {"rich", "pygments", "httpx._main"} & loaded


def test_a_sender_process_does_not_load_the_orm_or_the_gateway() -> None:
    # The record path runs on Core tables (noti.store.tables); the ORM alone is ~8 MB of a sender's RSS.
    loaded = _loaded_after("import noti.sender.cli")
    assert "sqlalchemy" in loaded
    heavy = {"sqlalchemy.orm", "noti.store.models", "fastapi", "starlette", "sqladmin", "noti.gateway", "alembic"}
    assert not heavy & loaded


def test_a_sender_process_loads_neither_the_campaign_fan_out_nor_redis_metrics() -> None:
    loaded = _loaded_after("import noti.sender.cli")
    assert "redis" in loaded
    assert not {"noti.campaigns", "opentelemetry.sdk.metrics"} & loaded


def test_tracing_still_exports_spans_in_a_sender_process() -> None:
    statement = (
        "import noti.sender.cli\n"
        "from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter\n"
        "from opentelemetry.sdk.trace import TracerProvider"
    )
    assert "opentelemetry.sdk.trace" in _loaded_after(statement)


def test_httpx_still_offers_its_main_when_imported_through_noti() -> None:
    loaded = _loaded_after("import noti.apns.client, httpx\nassert callable(httpx.main)")
    assert "httpx" in loaded
