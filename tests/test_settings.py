"""Settings: read from the environment in one place, each component handed its own frozen part."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from noti.settings import DevSettings, GatewaySettings, OperatorSettings, SenderSettings, Settings, StoreSettings

COMPONENTS = (StoreSettings, GatewaySettings, SenderSettings, OperatorSettings, DevSettings)


def test_every_variable_reaches_a_component_and_every_component_setting_is_a_variable() -> None:
    variables = set(Settings.model_fields)
    used = {field.name for component in COMPONENTS for field in dataclasses.fields(component)}
    assert sorted(variables - used) == []  # a new NOTI_* variable: add it to its component's dataclass too
    assert sorted(used - variables) == []


def test_each_component_gets_its_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTI_GATEWAY_PORT", "9000")
    monkeypatch.setenv("NOTI_SENDER_CONCURRENCY", "7")
    monkeypatch.setenv("NOTI_APNS_KEY_FILE", "/keys/AuthKey.p8")
    monkeypatch.setenv("NOTI_OPERATOR_LEASE_SECONDS", "30")
    monkeypatch.setenv("NOTI_DATABASE_URL", "postgresql+psycopg://noti@db/noti")
    settings = Settings()
    assert settings.gateway.gateway_port == 9000
    assert settings.sender.sender_concurrency == 7 and settings.sender.apns_key_file == Path("/keys/AuthKey.p8")
    assert settings.operator.operator_lease_seconds == 30
    assert settings.store.database_url == settings.gateway.database_url == "postgresql+psycopg://noti@db/noti"
    assert settings.dev.database_url == "postgresql+psycopg://noti@db/noti" and settings.dev.redis_url is None


def test_defaults_leave_the_environment_unread_and_components_cannot_be_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTI_GATEWAY_PORT", "9000")
    gateway = Settings.defaults(gateway_rate_limit=0).gateway
    assert (gateway.gateway_port, gateway.gateway_rate_limit) == (8000, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        gateway.gateway_port = 1  # type: ignore[misc]


def test_a_send_naming_no_environment_goes_to_the_configured_one() -> None:
    assert Settings.defaults().gateway.environment == "production"
    assert Settings.defaults(apns_environment="sandbox").gateway.environment == "sandbox"
