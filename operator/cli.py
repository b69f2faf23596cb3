"""``noti operator``: the kopf operator for APNsCredential and NotificationCampaign."""

from __future__ import annotations

from dataclasses import replace

import click

from noti.settings import get_settings


@click.command()
@click.option("--namespace", "namespaces", multiple=True, help="Watch only this namespace (repeatable) "
              "[default: NOTI_OPERATOR_NAMESPACES, else every namespace]")  # fmt: skip
def operator(namespaces: tuple[str, ...]) -> None:
    """Reconcile APNsCredentials into sender Deployments and run NotificationCampaigns."""
    from noti.operator.handlers import run

    settings = get_settings().operator
    if namespaces:
        settings = replace(settings, operator_namespaces=",".join(namespaces))
    run(settings)
