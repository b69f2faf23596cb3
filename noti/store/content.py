"""A notification's content as its delivery record keeps it, and back: the one mapping between the two.

The fields the history API filters and shows (title, body, push type …) have columns of their
own; every other content field (localization keys, interruption level, Live Activity state …)
goes in one JSON column, ``extra_content``, which stays NULL for the common notification that
sets none. So a record holds all of what was queued, and what is queued again from a record
(``noti dev`` after a restart, a resend from the admin) says exactly what the first send said.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from noti.apns.payload import NotificationContent, default_priority

# The content fields with a column of their own, in the order of the table.
COLUMNS = (
    "title",
    "subtitle",
    "body",
    "badge",
    "sound",
    "category",
    "thread_id",
    "data",
    "push_type",
    "priority",
    "expiration",
    "collapse_id",
)
EXTRA = "extra_content"  # the JSON column holding every other content field that is set
# Every column a record's content is written to and read from.
RECORD_COLUMNS = (*COLUMNS, EXTRA)
FIELDS = tuple(f.name for f in fields(NotificationContent))
EXTRA_FIELDS = tuple(name for name in FIELDS if name not in COLUMNS)
_DEFAULTS = {"push_type": "alert"}


def record_columns(content: Mapping[str, Any]) -> dict[str, Any]:
    """The record columns of a content (``NotificationContent.to_dict()``): every one of them, so the
    records of different contents insert together; None where the content sets nothing.

    ``priority`` is the one APNs is sent (``apns-priority``), given or by default.
    """
    columns = {name: content.get(name) for name in COLUMNS}
    push_type = columns["push_type"] = content.get("push_type") or _DEFAULTS["push_type"]
    if columns["priority"] is None:
        columns["priority"] = default_priority(push_type, content)
    extra = {name: value for name in EXTRA_FIELDS if (value := content.get(name)) is not None}
    columns[EXTRA] = extra or None
    return columns


def record_content(record: Any) -> dict[str, Any]:
    """The content a record was queued with (``NotificationContent.to_dict()``), from a stored
    ``Notification`` or a row with its :data:`RECORD_COLUMNS`.

    A priority that is the push type's default is left out, as the send that gave none left it.
    """
    content = {name: value for name in COLUMNS if (value := getattr(record, name)) is not None}
    content.update(getattr(record, EXTRA) or {})
    content["push_type"] = content.get("push_type") or _DEFAULTS["push_type"]
    if content.get("priority") == default_priority(content["push_type"], content):
        del content["priority"]
    return content
