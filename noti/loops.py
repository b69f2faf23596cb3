"""The event loop every Noti process runs on: uvloop where it is installed, asyncio's otherwise."""

from __future__ import annotations

import contextlib


def install_uvloop() -> None:
    """Make uvloop the loop of the next ``asyncio.run`` (it is an optional speed-up, not a requirement)."""
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
