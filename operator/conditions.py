"""Status conditions as Kubernetes has them (a type, a status, why, and when it last changed), and status patches."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from noti.routes import Claim, Claimed


@dataclass(frozen=True, slots=True)
class Condition:
    """One condition as a decision states it; ``conditions_with`` gives it its place and transition time."""

    type: str
    status: bool
    reason: str
    message: str = ""


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


def with_conditions(previous: Any, conditions: Iterable[Condition]) -> list[dict[str, Any]]:
    """The conditions list with each of ``conditions`` set (see ``conditions_with``)."""
    merged: list[dict[str, Any]] = [dict(c) for c in (previous or [])]
    for condition in conditions:
        merged = conditions_with(merged, condition.type, condition.status, condition.reason, condition.message)
    return merged


def changed(current: Any, wanted: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``wanted`` whose value ``current`` (a status) does not already have."""
    return {key: value for key, value in wanted.items() if (current or {}).get(key) != value}


def transitions(previous: Any, current: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conditions of ``current`` whose status or reason differs from ``previous``: each is worth an Event."""
    before = {c.get("type"): (c.get("status"), c.get("reason")) for c in (previous or [])}
    return [c for c in current if before.get(c["type"]) != (c["status"], c["reason"])]


def route_condition(claim: Claim, app: str, environment: str) -> Condition:
    """Whether a credential serves its app and environment, from its claim of the route."""
    holder = claim.holder.credential
    if claim.outcome in (Claimed.TAKEN, Claimed.HELD):
        return Condition("Routed", True, "RouteHeld", f"the gateway sends {app} in {environment} to this credential")
    if claim.outcome is Claimed.SHARED:
        return Condition("Routed", True, "RouteShared",
                         f"{holder} (same Apple identity) gets the gateway's sends of {app} in {environment}; "
                         "this credential serves its own campaigns")  # fmt: skip
    return Condition("Routed", False, "BundleConflict",
                     f"APNsCredential {holder} already serves {app} in {environment}: this credential gets no "
                     "traffic until that one is deleted or changed")  # fmt: skip


def credential_conditions(
    *, refusal: str | None, replicas: int, available: int, certificate: bool = False, routed: Condition | None = None
) -> list[Condition]:
    """An APNsCredential's conditions once its key (or certificate) is read: Ready only when senders can send
    and the credential holds (or shares) its route."""
    key = (
        Condition("KeyValid", True, "CertificateLoaded", "the Secret holds the .p12 certificate")
        if certificate
        else Condition("KeyValid", True, "KeyLoaded", "the Secret holds an ES256 (P-256) signing key")
    )
    if replicas == 0:
        senders = Condition("Available", True, "ScaledToZero", "no backlog: no sender needed")
    elif available > 0:
        senders = Condition("Available", True, "SendersAvailable", f"{available} of {replicas} sender(s) available")
    else:
        senders = Condition("Available", False, "SendersUnavailable", f"0 of {replicas} sender(s) available")
    accepted = (
        Condition("Accepted", False, refusal, f"APNs refused the credential: {refusal}")
        if refusal
        else Condition("Accepted", True, "NotRefused", "APNs has refused none of its requests")
    )
    route = [routed] if routed is not None else []
    blocking = next((c for c in (*route, accepted, senders) if not c.status), None)
    ready = (
        Condition("Ready", False, blocking.reason, blocking.message)
        if blocking
        else Condition("Ready", True, senders.reason, senders.message)
    )
    return [key, senders, accepted, *route, ready]
