"""The bundle id rule (Apple's: letters, digits, hyphens and periods), one for the API, the queue and the CRDs.

A bundle id becomes the apns-topic, part of Redis key names and a metrics label, so anything
else is refused wherever one enters. ``crds/apnscredentials.noti.dev.yaml`` carries the same
pattern (a test keeps them equal).
"""

from __future__ import annotations

import re

BUNDLE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9.\-]*$"
BUNDLE_ID_MAX_LENGTH = 255
_BUNDLE_ID = re.compile(BUNDLE_ID_PATTERN.removeprefix("^").removesuffix("$"))


def bundle_id_problem(value: object) -> str | None:
    """Why ``value`` is not a bundle id, or None when it is one."""
    if not isinstance(value, str) or not value:
        return "a bundle id is a non-empty string such as com.example.app"
    if len(value) > BUNDLE_ID_MAX_LENGTH:
        return f"a bundle id has at most {BUNDLE_ID_MAX_LENGTH} characters"
    if not _BUNDLE_ID.fullmatch(value):
        return "a bundle id has only letters, digits, hyphens and periods, and starts with a letter or digit"
    return None
