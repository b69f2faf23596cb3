"""Turn a request's content into what goes on the queue, refusing what APNs would refuse.

The checks and the payload builder are ``noti.apns.payload``'s, the same the senders use, so
the gateway refuses exactly what a sender could not send (an oversize payload included).
"""

from __future__ import annotations

from typing import Any

import orjson

from noti.apns.payload import InvalidNotification, NotificationContent, PayloadTooLarge, build_payload
from noti.gateway.errors import invalid
from noti.gateway.schemas import Content


def checked_content(body: Content) -> dict[str, Any]:
    """The queue message's content (``NotificationContent.to_dict()``); a 422 naming the field otherwise."""
    values = body.content_fields()
    _check_encodes(values)
    try:
        content = NotificationContent.from_dict(values)
        build_payload(content)
    except PayloadTooLarge as exc:
        raise invalid("body", exc.reason) from None
    except InvalidNotification as exc:
        raise invalid(f"body.{exc.field}", exc.reason) from None
    # The set fields, push_type included: what content.to_dict() gives, without its deep copy.
    return values


def _check_encodes(values: dict[str, Any]) -> None:
    """Refuse what the queue message could not hold (a lone surrogate in text, an integer beyond
    64 bits), naming the field: checked here, alone, so it cannot fail a batch of sends later."""
    try:
        orjson.dumps(values)
    except orjson.JSONEncodeError:
        for name, value in values.items():
            try:
                orjson.dumps(value)
            except orjson.JSONEncodeError as exc:
                raise invalid(f"body.{name}", f"cannot be encoded as JSON: {exc}") from None
        raise
