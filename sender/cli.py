"""``noti sender``: serve one APNsCredential's queues until SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import replace

import click

from noti.loops import install_uvloop
from noti.sender.service import Sender, SenderError
from noti.settings import SenderSettings, get_settings
from noti.tracing import TracingUnavailable


@click.command("sender")
@click.option("--credential", envvar="NOTI_CREDENTIAL", required=True, help="namespace/name of the APNsCredential.")
def sender(credential: str) -> None:
    """Deliver a credential's queued notifications to APNs and record every outcome.

    The credential itself comes from NOTI_APNS_* variables (set by the operator on the Deployment).
    """
    install_uvloop()
    try:
        config = replace(get_settings().sender, credential=credential)
        asyncio.run(_serve(config))
    except (SenderError, TracingUnavailable) as exc:
        raise click.ClickException(str(exc)) from None


async def _serve(config: SenderSettings) -> None:
    service = Sender(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.stop)
    await service.run()
