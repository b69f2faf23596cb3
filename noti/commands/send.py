"""``noti send``: one notification from the command line, through a gateway or straight to APNs."""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import httpx

from noti.apns.payload import InvalidNotification, NotificationContent, build_payload, validate_device_token
from noti.queue import ENVIRONMENTS

FINAL = {"sent", "failed", "invalid_token"}  # a record in one of these will not change again


def _content(
    title: str | None, body: str | None, data: str | None, push_type: str, badge: int | None
) -> dict[str, Any]:
    fields: dict[str, Any] = {"title": title, "body": body, "badge": badge, "push_type": push_type}
    if data:
        try:
            fields["data"] = json.loads(data)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"not JSON: {exc.msg}", param_hint="--data") from None
    return {key: value for key, value in fields.items() if value is not None}


@dataclass(frozen=True, slots=True)
class Direct:
    """How to reach APNs (or a simulator) with one credential."""

    key_file: Path
    key_id: str
    team_id: str
    app: str
    environment: str
    endpoint: str | None
    ca_file: Path | None


def _dev_credential(data_dir: str, app: str | None) -> Direct:
    """The running dev stack's credential and simulator, from its ``running.json``."""
    from noti.dev.datadir import DataDir, DevError

    try:
        stack = DataDir.at(data_dir).read_runtime()
    except DevError as exc:
        raise click.ClickException(str(exc)) from None
    if not (stack.key_file and stack.ca_file and stack.simulator_url):
        raise click.ClickException(
            f"the dev stack running from {data_dir} (pid {stack.pid}) predates `noti send --dev`: restart `noti dev`"
        )
    return Direct(
        Path(stack.key_file), stack.key_id, stack.team_id, app or stack.app, stack.environment,
        stack.simulator_url, Path(stack.ca_file),
    )  # fmt: skip


@click.command("send")
@click.option("--token", "device_token", required=True, help="The device token (hex).")
@click.option("--title")
@click.option("--body")
@click.option("--badge", type=int)
@click.option("--data", help="Custom data as a JSON object.")
@click.option("--push-type", default="alert", show_default=True)
@click.option("--app", help="Bundle id (gateway: for tokens not registered; APNs: the topic).")
@click.option(
    "--gateway", envvar="NOTI_URL", show_envvar=True, help="Send through this gateway (e.g. http://127.0.0.1:8000)."
)
@click.option("--api-key", envvar="NOTI_API_KEY", show_envvar=True, help="The gateway API key.")
@click.option("--wait", is_flag=True, help="Through a gateway: wait for the outcome and print sent or failed.")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds --wait waits for the outcome.")
@click.option("--dev", is_flag=True, help="Straight to the running `noti dev` stack's APNs simulator, as its sender.")
@click.option(
    "--data-dir", envvar="NOTI_DATA_DIR", show_envvar=True, default=".noti", show_default=True,
    help="The dev stack's data directory (for --dev).",
)  # fmt: skip
@click.option("--key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="APNs .p8 key.")
@click.option("--key-id", help="APNs key id.")
@click.option("--team-id", help="Apple team id.")
@click.option(
    "--environment", type=click.Choice(ENVIRONMENTS), default="production", show_default=True,
    envvar="NOTI_APNS_ENVIRONMENT", show_envvar=True, help="APNs environment of a direct send (--dev: the stack's).",
)  # fmt: skip
@click.option("--endpoint", help="APNs endpoint override (e.g. the simulator).")
@click.option(
    "--ca-file", envvar="NOTI_APNS_CA_FILE", show_envvar=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CA that signed the endpoint's certificate (e.g. the simulator's).",
)  # fmt: skip
def send(
    device_token: str, title: str | None, body: str | None, badge: int | None, data: str | None, push_type: str,
    app: str | None, gateway: str | None, api_key: str | None, wait: bool, timeout: float, dev: bool, data_dir: str,
    key_file: Path | None, key_id: str | None, team_id: str | None, environment: str, endpoint: str | None,
    ca_file: Path | None,
) -> None:  # fmt: skip
    """Send one notification through a gateway (--gateway, --api-key) or to APNs.

    Straight to APNs needs --key-file, --key-id, --team-id and --app; --dev takes them from
    the running dev stack, for its APNs simulator.
    """
    fields = _content(title, body, data, push_type, badge)
    try:
        token = validate_device_token(device_token)
        content = NotificationContent.from_dict(fields)
        build_payload(content)
    except InvalidNotification as exc:
        raise click.UsageError(str(exc)) from None
    direct: Direct | None = None
    if dev:
        direct = _dev_credential(data_dir, app)
    elif key_file is not None:
        missing = [name for name, value in (("--key-id", key_id), ("--team-id", team_id), ("--app", app)) if not value]
        if missing:
            raise click.UsageError(f"sending straight to APNs needs {', '.join(missing)} too")
        assert key_id and team_id and app
        direct = Direct(key_file, key_id, team_id, app, environment, endpoint, ca_file)
    if direct is not None:
        asyncio.run(_direct(token, content, direct))
        return
    if not gateway or not api_key:
        raise click.UsageError(
            "give --gateway and --api-key (or NOTI_URL and NOTI_API_KEY), an APNs --key-file, or --dev"
        )
    request: dict[str, Any] = {"device_token": token, **fields}
    if app:
        request["app"] = app
    with httpx.Client(base_url=gateway.rstrip("/"), headers={"Authorization": f"Bearer {api_key}"}) as client:
        answer = _call(client, "POST", "/api/notifications/", json=request)
        notification_id = answer["id"]
        click.echo(f"queued {notification_id}")
        if wait:
            _wait(client, notification_id, timeout)


def _call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    try:
        response = client.request(method, path, timeout=30, **kwargs)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach the gateway at {client.base_url}: {exc}") from None
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise click.ClickException(f"the gateway refused it ({response.status_code}): {detail}")
    answer: dict[str, Any] = response.json()
    return answer


def _wait(client: httpx.Client, notification_id: str, timeout: float) -> None:
    """Poll the record until it is final; print the outcome, exit 1 unless it was sent."""
    deadline = time.monotonic() + timeout
    while True:
        record = _call(client, "GET", f"/api/notifications/{notification_id}/")
        if record["status"] in FINAL:
            break
        if time.monotonic() >= deadline:
            raise click.ClickException(
                f"{notification_id} is still {record['status']} after {timeout:g}s: is a sender running for its app? "
                "(--timeout waits longer)"
            )
        time.sleep(0.1)
    if record["status"] == "sent":
        click.echo(f"sent {notification_id} (apns-id {record['apns_id']})")
        return
    said = f"APNs answered {record['status_code']}: " if record.get("status_code") else ""
    click.echo(f"{record['status']} {notification_id}: {said}{record.get('apns_reason') or 'no reason given'}")
    sys.exit(1)


async def _direct(token: str, content: NotificationContent, direct: Direct) -> None:
    from noti.apns.client import ENDPOINTS, APNsClient, client_ssl_context
    from noti.apns.tokens import CredentialKeyError, ProviderTokens, load_signing_key

    try:
        key = load_signing_key(direct.key_file.read_bytes())
    except CredentialKeyError as exc:
        raise click.ClickException(str(exc)) from None
    context = client_ssl_context(ca_file=direct.ca_file)
    endpoint = direct.endpoint or ENDPOINTS[direct.environment]
    client = APNsClient(
        direct.app, environment=direct.environment, endpoint=endpoint,
        tokens=ProviderTokens(key, direct.key_id, direct.team_id), ssl_context=context, connections=1,
    )  # fmt: skip
    try:
        result = await client.send(token, content)
    finally:
        await client.aclose()
    if not result.ok:
        if result.status_code == 0:
            untrusted = await _untrusted_certificate(endpoint, context)
            if untrusted:
                raise click.ClickException(
                    f"the TLS certificate of {endpoint} was not trusted ({untrusted}): give the CA that signed it "
                    "with --ca-file (or NOTI_APNS_CA_FILE); for the dev stack's APNs simulator use --dev"
                )
            raise click.ClickException(f"APNs at {endpoint} answered nothing: {result.reason} ({result.outcome})")
        raise click.ClickException(f"APNs answered {result.status_code}: {result.reason} ({result.outcome})")
    click.echo(f"sent: apns-id {result.apns_id}")


async def _untrusted_certificate(endpoint: str, context: ssl.SSLContext) -> str | None:
    """Why the endpoint's certificate failed verification, if that is why the connection failed."""
    url = httpx.URL(endpoint)
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(url.host, url.port or 443, ssl=context, server_hostname=url.host), timeout=10
        )
    except ssl.SSLCertVerificationError as exc:
        return str(exc.verify_message or exc.reason)
    except (OSError, TimeoutError):
        return None
    writer.close()
    return None
