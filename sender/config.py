"""A sender's configuration: the credential it serves (from its Deployment's env) and its tuning.

It is :class:`noti.settings.SenderSettings`, read from the environment with the rest of Noti's settings.
"""

from __future__ import annotations

from noti.settings import SenderSettings

SenderConfig = SenderSettings

__all__ = ["SenderConfig", "SenderSettings"]
