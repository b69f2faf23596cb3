"""``noti dev``: the whole service on one machine, on its embedded defaults."""

from __future__ import annotations

import asyncio

import click

from noti.dev.datadir import DevError
from noti.dev.stack import DevOptions, DevStack
from noti.loops import install_uvloop
from noti.settings import get_settings


@click.command("dev")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the gateway listens on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="Gateway port.")
@click.option("--data-dir", envvar="NOTI_DATA_DIR", default=".noti", show_default=True, help="Where data is kept.")
@click.option("--app", default="com.example.noti", show_default=True, help="Bundle id of the dev credential.")
@click.option(
    "--sim-port", default=0, type=click.IntRange(0, 65535), help="APNs simulator port (default: any free port)."
)
def dev(host: str, port: int, data_dir: str, app: str, sim_port: int) -> None:
    """Run gateway, sender and APNs simulator in one process (SQLite and an embedded Redis by default).

    NOTI_DATABASE_URL and NOTI_REDIS_URL, when set, put it on real PostgreSQL and Redis instead.
    """
    install_uvloop()
    try:
        asyncio.run(DevStack(DevOptions(host, port, data_dir, app, sim_port), get_settings()).run())
    except DevError as exc:
        raise click.ClickException(str(exc)) from None
