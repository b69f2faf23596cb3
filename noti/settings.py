"""Configuration: read from environment variables (``NOTI_*``) in one place, handed to each component as its own.

:class:`Settings` is the only reader of the environment: every variable Noti knows is one of its
fields, ``NOTI_<FIELD>``, with its default, its check and its description. Components never read
it themselves: each takes a small frozen dataclass of its own (:class:`GatewaySettings`,
:class:`SenderSettings`, :class:`OperatorSettings`, :class:`StoreSettings`, :class:`DevSettings`),
built once from it at the edge (a command, ``noti dev``, a test), in the manner of kopf's
``OperatorSettings``. A component's fields have the names of the variables they come from.

To add a setting: a field on :class:`Settings` in its component's section (the variable), and the
same name on the component's dataclass (where the component finds it); ``test_settings`` checks
that each variable reaches a component.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from noti.queue import ENVIRONMENTS, Environment, StreamKeys, credential_problem

if TYPE_CHECKING:
    from noti.routes import Route

C = TypeVar("C")


class Settings(BaseSettings):
    """Every setting Noti reads; each field is the env var ``NOTI_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="NOTI_", extra="ignore", populate_by_name=True)

    database_url: str = Field(
        default="sqlite:///./.noti/noti.db",
        description="SQLAlchemy URL of the store: postgresql+psycopg://... or sqlite:///path.",
    )
    database_pool_size: int = Field(default=10, ge=1, description="Pooled connections per process.")
    database_connect_seconds: float = Field(
        default=3.0, ge=2, le=60, description="Longest wait for a new PostgreSQL connection (connect_timeout)."
    )
    database_statement_seconds: float = Field(
        default=5.0, gt=0, le=600, description="Longest a statement runs (statement_timeout); no wait for an answer "
        "from PostgreSQL lasts more than a second longer, even when the server hangs.",
    )  # fmt: skip
    database_lock_seconds: float = Field(
        default=2.0, gt=0, le=600, description="Longest a statement waits for a lock (lock_timeout)."
    )
    database_pool_seconds: float = Field(
        default=2.0, gt=0, le=600, description="Longest wait for a pooled connection when all are in use."
    )
    redis_url: str = Field(default="redis://localhost:6379/0", description="Redis holding the queues.")
    log_level: str = Field(default="INFO", description="Python logging level.")
    gateway_host: str = Field(default="0.0.0.0", description="Address the gateway listens on.")
    gateway_port: int = Field(default=8000, ge=1, le=65535, description="Port the gateway listens on.")
    data_dir: str = Field(default=".noti", description="Where `noti dev` keeps its SQLite file and keys.")
    apns_environment: str = Field(
        default="production",
        description="APNs environment, sandbox or production: a sender's credential's, and the one a send "
        "naming none goes to.",
    )

    # --- gateway (add gateway settings below this line) ---
    gateway_default_app: str | None = Field(
        default=None, description="Bundle id for device registrations that name no app (clients of the original API)."
    )
    gateway_rate_limit: float = Field(
        default=1000.0, ge=0, description="Requests per second allowed per API key (token bucket); 0 turns it off."
    )
    gateway_rate_burst: int = Field(default=2000, ge=1, description="Requests an API key may make at once.")
    gateway_max_body_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="Largest request body (a 10,000-device bulk fits in 4 MiB)."
    )
    gateway_body_seconds: float = Field(
        default=30.0, gt=0, description="Longest a request's body may take to arrive before a 408."
    )
    gateway_auth_failure_rate: float = Field(
        default=1.0, ge=0, description="Failed API key checks per second a client address may make; 0 turns it off."
    )
    gateway_auth_failure_burst: int = Field(
        default=20, ge=1, description="Failed API key checks a client address may make at once."
    )
    gateway_key_cache_seconds: float = Field(
        default=5.0, ge=0, description="How long a verified API key is trusted without a lookup (revocation delay)."
    )
    gateway_batching: bool = Field(
        default=True, description="Coalesce concurrent single sends into one insert and one Redis pipeline."
    )
    gateway_batch_max: int = Field(default=500, ge=1, description="Most single sends coalesced into one batch.")
    gateway_session_secret: str | None = Field(
        default=None, description="Signs admin UI sessions; the same on every replica keeps logins across restarts."
    )
    gateway_forwarded_allow_ips: str = Field(
        default="127.0.0.1,::1",
        description="Comma-separated addresses (or *) of reverse proxies whose X-Forwarded-Proto/-For are believed; "
        "behind such a proxy terminating https, admin session cookies are Secure.",
    )
    gateway_admin_hosts: str = Field(
        default="*",
        description="Comma-separated host names the admin UI answers to (e.g. noti.example.com,*.example.com); "
        "its links and redirects are built from the request's Host, so name them in production. * allows any.",
    )
    gateway_workers: int = Field(default=1, ge=1, description="uvicorn worker processes of `noti gateway`.")
    gateway_access_log: bool = Field(default=False, description="Log every request (uvicorn access log).")
    gateway_channel_seconds: float = Field(
        default=20.0, gt=0, description="How long a channel request or broadcast may wait for a sender and APNs."
    )

    # --- sender (add sender settings below this line): the operator sets NOTI_CREDENTIAL and NOTI_APNS_* ---
    credential: str = Field(
        default="default/dev",
        description="namespace/name of the APNsCredential served: the sender reads only that credential's queues.",
    )
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

    # --- retention (noti retention run, the chart's CronJob, noti dev) ---
    retention_records_days: float = Field(
        default=30.0, gt=0, description="Delivery records older than this many days are removed (at most a day later)."
    )
    retention_rollup_days: float = Field(
        default=400.0, gt=0, description="Hourly roll-up rows (stats) older than this many days are removed."
    )
    retention_partitions_ahead: int = Field(
        default=3,
        ge=1,
        description="Days of PostgreSQL record partitions created ahead of their records (each one is a little "
        "more work for every lookup by id, so not many).",
    )

    # --- tracing (gateway and senders; needs the tracing extra) ---
    tracing_enabled: bool = Field(
        default=False, description="Trace each send, gateway to APNs, with OpenTelemetry (pip install 'noti[tracing]')."
    )
    tracing_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP traces URL (e.g. http://otel-collector:4318/v1/traces); unset: "
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT, else http://localhost:4318.",
    )
    tracing_sample_ratio: float = Field(
        default=1.0, ge=0, le=1, description="Share of sends traced (the sender follows the gateway's decision)."
    )

    # --- operator ---
    operator_namespaces: str = Field(
        default="", description="Comma-separated namespaces the operator watches; empty: every namespace."
    )
    operator_sender_image: str = Field(default="noti:latest", description="Image of the sender Deployments.")
    operator_sender_image_pull_policy: str = Field(default="IfNotPresent", description="Their imagePullPolicy.")
    operator_sender_image_pull_secrets: str = Field(
        default="", description="Comma-separated imagePullSecrets of the sender pods (in each credential's namespace)."
    )
    operator_sender_env_secret: str | None = Field(
        default=None,
        description="Secret (in each credential's namespace) whose keys become the senders' environment: "
        "NOTI_DATABASE_URL and NOTI_REDIS_URL.",
    )
    operator_drain_seconds: float = Field(
        default=60.0, gt=0, description="Senders are added until a credential's backlog drains within this long."
    )
    operator_sender_rate: float = Field(
        default=1000.0, gt=0, description="Notifications per second one sender is assumed to send until measured."
    )
    operator_scale_down_seconds: float = Field(
        default=300.0, ge=0, description="Stabilization window: senders scale down only after this long lower."
    )
    operator_interval_seconds: float = Field(
        default=5.0, gt=0, description="How often statuses, backlogs and replica counts are refreshed."
    )
    operator_health_port: int = Field(default=8080, ge=0, le=65535, description="/healthz port (0: none).")
    operator_leader_election: bool = Field(
        default=True, description="Act only while holding a Lease, so that one of several replicas acts at a time."
    )
    operator_lease_name: str = Field(default="noti-operator", description="Name of the leader election Lease.")
    operator_lease_namespace: str = Field(
        default="", description="Namespace of the Lease; empty: the operator pod's own (else default)."
    )
    operator_lease_seconds: int = Field(
        default=15, ge=4, description="How long a leader's Lease lasts unrenewed: the longest failover wait."
    )

    @classmethod
    def defaults(cls, **values: Any) -> Settings:
        """The defaults with ``values`` set, the environment left unread (tests, embedded stacks)."""
        return cls.model_construct(**values)

    @property
    def store(self) -> StoreSettings:
        return _section(StoreSettings, self)

    @property
    def gateway(self) -> GatewaySettings:
        return _section(GatewaySettings, self)

    @property
    def sender(self) -> SenderSettings:
        return _section(SenderSettings, self)

    @property
    def operator(self) -> OperatorSettings:
        return _section(OperatorSettings, self)

    @property
    def dev(self) -> DevSettings:
        given = self.model_fields_set  # noti dev embeds a store and a Redis of its own unless told where they are
        return DevSettings(
            data_dir=self.data_dir,
            database_url=self.database_url if "database_url" in given else None,
            redis_url=self.redis_url if "redis_url" in given else None,
        )


def _section(component: type[C], settings: Settings) -> C:
    """``component``'s dataclass, each field the setting of its name."""
    return component(**{f.name: getattr(settings, f.name) for f in fields(component)})  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """Where the store is (``noti migrate``, ``noti campaign run``, the components that write to it)."""

    database_url: str
    database_pool_size: int
    database_connect_seconds: float
    database_statement_seconds: float
    database_lock_seconds: float
    database_pool_seconds: float
    retention_records_days: float
    retention_rollup_days: float
    retention_partitions_ahead: int


@dataclass(frozen=True, slots=True)
class GatewaySettings:
    """What ``noti gateway`` needs: its store and Redis, the environment it feeds, and its own ``NOTI_GATEWAY_*``."""

    database_url: str
    database_pool_size: int
    database_connect_seconds: float
    database_statement_seconds: float
    database_lock_seconds: float
    database_pool_seconds: float
    tracing_enabled: bool
    tracing_endpoint: str | None
    tracing_sample_ratio: float
    redis_url: str
    log_level: str
    apns_environment: str
    gateway_host: str
    gateway_port: int
    gateway_default_app: str | None
    gateway_rate_limit: float
    gateway_rate_burst: int
    gateway_max_body_bytes: int
    gateway_body_seconds: float
    gateway_auth_failure_rate: float
    gateway_auth_failure_burst: int
    gateway_channel_seconds: float
    gateway_key_cache_seconds: float
    gateway_batching: bool
    gateway_batch_max: int
    gateway_session_secret: str | None
    gateway_forwarded_allow_ips: str
    gateway_admin_hosts: str
    gateway_workers: int
    gateway_access_log: bool

    @property
    def environment(self) -> Environment:
        """The APNs environment of a send that names none."""
        return "sandbox" if self.apns_environment == "sandbox" else "production"


@dataclass(frozen=True, slots=True)
class SenderSettings:
    """What one sender needs: its store and Redis, the credential it serves (set by the operator) and its tuning."""

    database_url: str
    database_pool_size: int
    database_connect_seconds: float
    database_statement_seconds: float
    database_lock_seconds: float
    database_pool_seconds: float
    tracing_enabled: bool
    tracing_endpoint: str | None
    tracing_sample_ratio: float
    redis_url: str
    credential: str
    apns_team_id: str
    apns_key_id: str
    apns_key_file: Path | None
    apns_cert_file: Path | None
    apns_cert_password: str | None
    apns_bundle_id: str
    apns_environment: str
    apns_endpoint: str | None
    apns_channels_endpoint: str | None
    apns_proxy: str | None
    apns_ca_file: Path | None
    sender_connections: int
    sender_concurrency: int
    sender_batch_size: int
    sender_batch_interval: float
    sender_max_attempts: int
    sender_backoff_base: float
    sender_backoff_max: float
    sender_rate_per_second: float
    sender_claim_idle_seconds: float
    sender_probe_base: float
    sender_probe_max: float
    sender_topic_guard_answers: int
    sender_topic_guard_tokens: int
    sender_grace_period: float
    sender_health_port: int
    sender_consumer: str

    @property
    def queue(self) -> StreamKeys:
        return StreamKeys(self.credential)

    def route(self) -> Route:
        """The route this sender's credential claims: its identity and the Apple identity it signs as."""
        from noti.routes import Route, apple_identity  # settings stay light: routes bring in redis

        if self.apns_cert_file is not None:
            from noti.operator.deployment import certificate_fingerprint  # the operator's rule, for the same answer

            return Route(
                self.credential, apple_identity("", "", certificate_fingerprint(self.apns_cert_file.read_bytes()))
            )
        return Route(self.credential, apple_identity(self.apns_team_id, self.apns_key_id))

    def problems(self) -> list[str]:
        """What is missing or contradictory, as sentences for the user."""
        found = []
        problem = credential_problem(self.credential)
        if problem is not None:
            found.append(f"NOTI_CREDENTIAL: {problem}")
        if not self.apns_bundle_id:
            found.append("NOTI_APNS_BUNDLE_ID (the app's bundle id) is not set")
        if self.apns_environment not in ENVIRONMENTS:
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


@dataclass(frozen=True, slots=True)
class OperatorSettings:
    """What ``noti operator`` needs: its store and Redis, and its own ``NOTI_OPERATOR_*``."""

    database_url: str
    database_pool_size: int
    database_connect_seconds: float
    database_statement_seconds: float
    database_lock_seconds: float
    database_pool_seconds: float
    redis_url: str
    log_level: str
    operator_namespaces: str
    operator_sender_image: str
    operator_sender_image_pull_policy: str
    operator_sender_image_pull_secrets: str
    operator_sender_env_secret: str | None
    operator_drain_seconds: float
    operator_sender_rate: float
    operator_scale_down_seconds: float
    operator_interval_seconds: float
    operator_health_port: int
    operator_leader_election: bool
    operator_lease_name: str
    operator_lease_namespace: str
    operator_lease_seconds: int


@dataclass(frozen=True, slots=True)
class DevSettings:
    """What ``noti dev`` needs: its data directory, and a store and Redis only when given (else its own)."""

    data_dir: str
    database_url: str | None
    redis_url: str | None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
