"""A sender's configuration: the credential it serves (from its Deployment's env) and its tuning.

It is :class:`noti.settings.SenderSettings`, read from the environment with the rest of Noti's
settings (``Settings().sender``). ``SenderConfig(**values)`` builds one as it did when it was a
class of its own: for code written before, until it is moved to ``Settings``.
"""

from __future__ import annotations

from typing import Any

from noti.settings import SenderSettings, Settings


def SenderConfig(**values: Any) -> SenderSettings:  # named as the class it was
    """The sender's settings from the environment, ``values`` taking precedence."""
    return Settings(**values).sender


__all__ = ["SenderConfig", "SenderSettings"]
