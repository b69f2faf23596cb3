"""``noti campaign run``: a NotificationCampaign manifest run locally, with progress."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import click
import redis.asyncio as aioredis
import yaml

from noti.campaigns import CampaignError, CampaignSpec, fan_out
from noti.campaigns import progress as campaign_progress
from noti.devstack import DataDir, DevError
from noti.queue import Credential
from noti.settings import get_settings
from noti.store.db import make_engine


@click.group("campaign")
def campaign() -> None:
    """Run NotificationCampaign manifests without a cluster."""


@campaign.command("run")
@click.argument("manifest", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data-dir", envvar="NOTI_DATA_DIR", default=".noti", show_default=True, help="The dev stack's data.")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait for the campaign to finish.")
def run(manifest: Path, data_dir: str, timeout: float) -> None:
    """Fan MANIFEST out to the running dev stack's sender and wait for every notification to finish."""
    try:
        spec = CampaignSpec.from_manifest(_load(manifest))
        stack = DataDir.prepare(data_dir).read_runtime()
    except (CampaignError, DevError) as exc:
        raise click.ClickException(str(exc)) from None
    if spec.credential != stack.credential:
        raise click.ClickException(
            f"spec.credentialRef.name is {spec.credential!r}, but the dev stack's credential is {stack.credential!r}"
        )
    credential = Credential(stack.app, stack.environment)  # type: ignore[arg-type]
    counts = asyncio.run(_run(spec, credential, stack.database_url, stack.redis_url, timeout))
    click.echo(
        f"{spec.name}: total {counts['total']}, sent {counts['sent']}, failed {counts['failed']}, "
        f"invalid tokens {counts['invalid_token']}"
    )


def _load(manifest: Path) -> dict[str, object]:
    try:
        loaded = yaml.safe_load(manifest.read_text())
    except FileNotFoundError:
        raise CampaignError(f"{manifest} does not exist") from None
    except yaml.YAMLError as exc:
        raise CampaignError(f"{manifest} is not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise CampaignError(f"{manifest} must hold one NotificationCampaign mapping")
    return loaded


async def _run(
    spec: CampaignSpec, credential: Credential, database_url: str, redis_url: str, wait_seconds: float
) -> dict[str, int]:
    engine = make_engine(database_url, pool_size=get_settings().database_pool_size)
    redis = aioredis.Redis.from_url(redis_url)
    try:
        result = await fan_out(engine, redis, credential, spec)
        click.echo(f"{spec.name}: {result.total} notifications queued ({result.written} new)")
        deadline = time.monotonic() + wait_seconds
        with click.progressbar(length=result.total, label="sending", show_pos=True) as bar:
            done = 0
            while True:
                progress = await campaign_progress(engine, redis, spec.name)
                finished = progress.finished
                bar.update(finished - done)
                done = finished
                if finished >= result.total:
                    return {**progress.by_status, "total": result.total}
                if time.monotonic() > deadline:
                    raise click.ClickException(
                        f"{finished} of {result.total} finished after {wait_seconds:.0f}s: is `noti dev` still running?"
                    )
                await asyncio.sleep(0.2)
    finally:
        await redis.aclose()
        engine.dispose()
