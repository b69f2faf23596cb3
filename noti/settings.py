"""Configuration from environment variables (``NOTI_*``)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting Noti reads; each field is the env var ``NOTI_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="NOTI_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///./.noti/noti.db",
        description="SQLAlchemy URL of the store: postgresql+psycopg://... or sqlite:///path.",
    )
    database_pool_size: int = Field(default=10, ge=1, description="Pooled connections per process.")
    redis_url: str = Field(default="redis://localhost:6379/0", description="Redis holding the queues.")
    log_level: str = Field(default="INFO", description="Python logging level.")
    gateway_host: str = Field(default="0.0.0.0", description="Address the gateway listens on.")
    gateway_port: int = Field(default=8000, ge=1, le=65535, description="Port the gateway listens on.")
    data_dir: str = Field(default=".noti", description="Where `noti dev` keeps its SQLite file and keys.")
    apns_environment: str = Field(
        default="production", description="APNs environment (sandbox or production) of streams the gateway feeds."
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

    # --- sender (add sender settings below this line) ---

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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
