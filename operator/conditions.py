"""Status conditions as Kubernetes has them (a type, a status, why, and when it last changed), and status patches."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def now_text() -> str:
    """Now, as Kubernetes writes times (RFC 3339, UTC, seconds)."""
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def conditions_with(previous: Any, type_: str, status: bool, reason: str, message: str = "") -> list[dict[str, Any]]:
    """The conditions list with ``type_`` set; its transition time moves only when its status does."""
    value = "True" if status else "False"
    kept = [dict(c) for c in (previous or []) if c.get("type") != type_]
    old = next((c for c in (previous or []) if c.get("type") == type_), None)
    moved = old is None or old.get("status") != value
    condition = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": old["lastTransitionTime"]
        if old and not moved and "lastTransitionTime" in old
        else now_text(),
    }
    return [*kept, condition]


def changed(current: Any, wanted: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``wanted`` whose value ``current`` (a status) does not already have."""
    return {key: value for key, value in wanted.items() if (current or {}).get(key) != value}
