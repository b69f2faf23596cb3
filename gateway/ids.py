"""Record ids: random ones (drawn in bulk) and ones derived from an ``Idempotency-Key``."""

from __future__ import annotations

import os
import uuid

_IDEMPOTENCY_NAMESPACE = uuid.UUID("0b7c3f52-2d1e-4f8a-9c6b-5e4d3a2b1c0f")


def idempotent_id(scope: str, key: str, item: str = "") -> uuid.UUID:
    """The record id for a request with an Idempotency-Key (``scope`` keeps API keys apart)."""
    return uuid.uuid5(_IDEMPOTENCY_NAMESPACE, f"{scope}\x00{key}\x00{item}")


def random_ids(count: int) -> list[uuid.UUID]:
    """``count`` random (version 4) UUIDs from one read of the system's randomness."""
    raw = os.urandom(16 * count)
    return [uuid.UUID(bytes=raw[i : i + 16], version=4) for i in range(0, 16 * count, 16)]


_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def random_id_strings(count: int) -> list[str]:
    """``count`` random version 4 UUIDs in their text form, built as text (a bulk send needs
    10,000, and a UUID object per id costs more than the rest of its record's formatting)."""
    raw = os.urandom(16 * count).hex()
    return [
        f"{raw[i : i + 8]}-{raw[i + 8 : i + 12]}-4{raw[i + 13 : i + 16]}-"
        f"{_VARIANT[raw[i + 16]]}{raw[i + 17 : i + 20]}-{raw[i + 20 : i + 32]}"
        for i in range(0, 32 * count, 32)
    ]


_spare_ids: list[uuid.UUID] = []


def new_id() -> uuid.UUID:
    """A random record id; drawn 256 at a time, since each read of os.urandom is a system call."""
    if not _spare_ids:
        _spare_ids.extend(random_ids(256))
    return _spare_ids.pop()
