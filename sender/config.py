"""A sender's configuration: the credential it serves (from its Deployment's env) and its tuning."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from noti.queue import StreamKeys


class SenderConfig(BaseSettings):
    """Read from ``NOTI_*`` environment variables; the operator sets the ``NOTI_APNS_*`` ones."""

    model_config = SettingsConfigDict(env_prefix="NOTI_", extra="ignore", populate_by_name=True)

    credential: str = Field(default="default/dev", description="namespace/name of the APNsCredential served.")
    apns_team_id: str = Field(default="", description="Apple team id (token auth).")
    apns_key_id: str = Field(default="", description="Key id of the .p8 signing key (token auth).")
    apns_key_file: Path | None = Field(default=None, description="The .p8 signing key (a mounted Secret).")
    apns_cert_file: Path | None = Field(default=None, description="Certificate auth instead: .pem or .p12 file.")
    apns_cert_password: str | None = Field(default=None, description="Password of a .p12 certificate.")
    # NOTI_APNS_TOPIC was this setting's name: it holds the bundle id, not the topic (which gets ".voip" and
    # the like appended per push type). Still read, for one release.
    apns_bundle_id: str = Field(
        default="", validation_alias=AliasChoices("NOTI_APNS_BUNDLE_ID", "NOTI_APNS_TOPIC"),
        description="The app's bundle id; each push type's apns-topic is made from it.",
    )  # fmt: skip
    apns_environment: str = Field(default="production", description="sandbox or production.")
    apns_endpoint: str | None = Field(default=None, description="Overrides Apple's endpoint (e.g. a simulator).")
    apns_channels_endpoint: str | None = Field(
        default=None, description="Overrides Apple's channel management endpoint (api-manage-broadcast:2195/2196)."
    )
    apns_proxy: str | None = Field(
        default=None, description="HTTP CONNECT proxy to reach APNs through: http://[user:password@]host:port."
    )
    apns_ca_file: Path | None = Field(default=None, description="Extra CA to trust (the simulator's certificate).")
    sender_connections: int = Field(default=2, ge=1, description="HTTP/2 connections to APNs per sender.")
    sender_concurrency: int = Field(default=1000, ge=1, description="Notifications in flight at once per sender.")
    sender_batch_size: int = Field(default=500, ge=1, description="Outcomes written per database batch.")
    sender_batch_interval: float = Field(default=0.05, gt=0, description="Seconds an outcome may wait for its batch.")
    sender_max_attempts: int = Field(default=8, ge=1, description="Delivery attempts before a record is failed.")
    sender_backoff_base: float = Field(default=1.0, gt=0, description="First retry delay in seconds (doubles).")
    sender_backoff_max: float = Field(default=300.0, gt=0, description="Longest retry delay in seconds.")
    sender_rate_per_second: float = Field(default=0, ge=0, description="Credential-wide send rate; 0 = unlimited.")
    sender_claim_idle_seconds: float = Field(
        default=60.0, gt=0, description="Pending this long, a message of a dead sender is claimed by another."
    )
    sender_probe_base: float = Field(
        default=5.0, gt=0, description="Seconds before a refused credential is tried again (doubles each time)."
    )
    sender_probe_max: float = Field(
        default=300.0, gt=0, description="Longest wait between tries of a refused credential."
    )
    sender_topic_guard_answers: int = Field(
        default=20,
        ge=1,
        description="DeviceTokenNotForTopic answers in a row (no success between) that stop the credential.",
    )
    sender_topic_guard_tokens: int = Field(
        default=10, ge=1, description="...across at least this many distinct device tokens."
    )
    sender_grace_period: float = Field(default=25.0, gt=0, description="Seconds SIGTERM may take to drain.")
    sender_health_port: int = Field(
        default=8081, ge=0, le=65535, description="/healthz, /readyz and /metrics port (0: off)."
    )
    sender_consumer: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}", description="Consumer name in the group."
    )

    @property
    def queue(self) -> StreamKeys:
        return StreamKeys(self.apns_bundle_id, self.apns_environment)  # type: ignore[arg-type]

    def problems(self) -> list[str]:
        """What is missing or contradictory, as sentences for the user."""
        found = []
        if not self.apns_bundle_id:
            found.append("NOTI_APNS_BUNDLE_ID (the app's bundle id) is not set")
        if self.apns_environment not in ("sandbox", "production"):
            found.append("NOTI_APNS_ENVIRONMENT must be sandbox or production")
        if self.apns_proxy:
            from noti.apns.transport import parse_proxy

            try:
                parse_proxy(self.apns_proxy)
            except ValueError as exc:
                found.append(f"NOTI_APNS_PROXY: {exc}")
        if self.apns_cert_file is None:
            for name, value in (
                ("TEAM_ID", self.apns_team_id),
                ("KEY_ID", self.apns_key_id),
                ("KEY_FILE", self.apns_key_file),
            ):
                if not value:
                    found.append(f"NOTI_APNS_{name} is not set (token auth needs team id, key id and key file)")
        return found
