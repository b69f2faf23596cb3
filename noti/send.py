"""``noti send``: one notification from the command line, through a gateway or straight to APNs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click
import httpx

from noti.apns.payload import InvalidNotification, NotificationContent, build_payload, validate_device_token


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


@click.command("send")
@click.option("--token", "device_token", required=True, help="The device token (hex).")
@click.option("--title")
@click.option("--body")
@click.option("--badge", type=int)
@click.option("--data", help="Custom data as a JSON object.")
@click.option("--push-type", default="alert", show_default=True)
@click.option("--app", help="Bundle id (gateway: for tokens not registered; APNs: the topic).")
@click.option("--gateway", envvar="NOTI_URL", help="Send through this gateway (e.g. http://127.0.0.1:8000).")
@click.option("--api-key", envvar="NOTI_API_KEY", help="The gateway API key [env NOTI_API_KEY].")
@click.option("--key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="APNs .p8 key.")
@click.option("--key-id", help="APNs key id.")
@click.option("--team-id", help="Apple team id.")
@click.option("--environment", type=click.Choice(["sandbox", "production"]), default="sandbox", show_default=True)
@click.option("--endpoint", help="APNs endpoint override (e.g. the simulator).")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="CA for --endpoint.")
def send(
    device_token: str, title: str | None, body: str | None, badge: int | None, data: str | None, push_type: str,
    app: str | None, gateway: str | None, api_key: str | None, key_file: Path | None, key_id: str | None,
    team_id: str | None, environment: str, endpoint: str | None, ca_file: Path | None,
) -> None:  # fmt: skip
    """Send one notification through a gateway (--gateway, --api-key) or to APNs.

    Straight to APNs needs --key-file, --key-id, --team-id and --app.
    """
    fields = _content(title, body, data, push_type, badge)
    try:
        token = validate_device_token(device_token)
        content = NotificationContent.from_dict(fields)
        build_payload(content)
    except InvalidNotification as exc:
        raise click.UsageError(str(exc)) from None
    if key_file is not None:
        missing = [name for name, value in (("--key-id", key_id), ("--team-id", team_id), ("--app", app)) if not value]
        if missing:
            raise click.UsageError(f"sending straight to APNs needs {', '.join(missing)} too")
        assert key_id and team_id and app
        key_pem = key_file.read_bytes()
        asyncio.run(_direct(token, content, key_pem, key_id, team_id, app, environment, endpoint, ca_file))
        return
    if not gateway or not api_key:
        raise click.UsageError("give --gateway and --api-key (or NOTI_URL and NOTI_API_KEY), or an APNs --key-file")
    request: dict[str, Any] = {"device_token": token, **fields}
    if app:
        request["app"] = app
    try:
        response = httpx.post(
            f"{gateway.rstrip('/')}/api/notifications/",
            json=request,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=30,
        )
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach the gateway at {gateway}: {exc}") from None
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        raise click.ClickException(f"the gateway refused it ({response.status_code}): {detail}")
    click.echo(f"queued {response.json()['id']}")


async def _direct(
    token: str, content: NotificationContent, key_pem: bytes, key_id: str, team_id: str, app: str, environment: str,
    endpoint: str | None, ca_file: Path | None,
) -> None:  # fmt: skip
    from noti.apns.client import APNsClient, client_ssl_context
    from noti.apns.tokens import CredentialKeyError, ProviderTokens, load_signing_key

    try:
        key = load_signing_key(key_pem)
    except CredentialKeyError as exc:
        raise click.ClickException(str(exc)) from None
    client = APNsClient(
        app, environment=environment, endpoint=endpoint, tokens=ProviderTokens(key, key_id, team_id),
        ssl_context=client_ssl_context(ca_file=ca_file), connections=1,
    )  # fmt: skip
    try:
        result = await client.send(token, content)
    finally:
        await client.aclose()
    if not result.ok:
        raise click.ClickException(
            f"APNs answered {result.status_code or 'nothing'}: {result.reason} ({result.outcome})"
        )
    click.echo(f"sent: apns-id {result.apns_id}")
