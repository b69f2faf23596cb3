"""Helpers shared by the gateway tests (the fixtures are in ``gateway_fixtures``)."""

from __future__ import annotations

from dataclasses import dataclass

from noti.settings import Settings

APP = "com.example.app"


@dataclass(frozen=True)
class Keys:
    sender: str  # send + read
    reader: str  # read only
    admin: str


def gateway_settings(database_url: str, redis_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "apns_environment": "sandbox",
        "gateway_rate_limit": 0,
        "gateway_session_secret": "test-session-secret",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]
