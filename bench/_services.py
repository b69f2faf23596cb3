"""Benchmarks reuse the test harness's throwaway servers."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from harness.services import PostgresServer, RedisServer  # noqa: E402

__all__ = ["ROOT", "PostgresServer", "RedisServer"]
