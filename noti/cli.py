"""The ``noti`` command. Subcommands load lazily so ``noti --version`` stays instant."""

from __future__ import annotations

import importlib
import logging

import click

from noti import __version__
from noti.logs import collapse_repeats

# name -> "module:attribute" of a click command; each component registers its own here.
COMMANDS: dict[str, str] = {
    "migrate": "noti.store.cli:migrate",
    "retention": "noti.store.cli:retention",
    "apns-sim": "noti.apns.simulator:main",
    "campaign": "noti.commands.campaign:campaign",
    "dev": "noti.dev.cli:dev",
    "send": "noti.commands.send:send",
    "devices": "noti.commands.devices:devices",
    "gateway": "noti.gateway.cli:gateway",
    "apikey": "noti.gateway.cli:apikey",
    "sender": "noti.sender.cli:sender",
    "operator": "noti.operator.cli:operator",
}


class LazyGroup(click.Group):
    """A group whose commands are imported only when they run (or ``--help`` lists them)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        module_name, _, attribute = COMMANDS[cmd_name].partition(":")
        command = getattr(importlib.import_module(module_name), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{COMMANDS[cmd_name]} is not a click command")
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="noti")
@click.option("--log-level", envvar="NOTI_LOG_LEVEL", default="INFO", show_default=True, help="Logging level.")
def cli(log_level: str) -> None:
    """Noti: iOS push notifications at scale (operator, gateway, senders, APNs simulator)."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    collapse_repeats()
    for chatty in ("httpx", "alembic"):  # a line per request, plugin or migration step is noise, not news
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))


def main() -> None:
    cli(prog_name="noti")


if __name__ == "__main__":
    main()
