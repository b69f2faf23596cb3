"""Helpers for the throwaway services tests start: free ports, binaries, waiting."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

SETUP_HINT = "run the README's test command (scripts/test.sh), which installs it"
S = TypeVar("S")


@contextlib.contextmanager
def started_in_temporary_directory(prefix: str, start: Callable[[Path], S], stop: Callable[[S], None]) -> Iterator[S]:
    """A server ``start`` runs in a new temporary directory, stopped (and the directory removed) on exit."""
    with tempfile.TemporaryDirectory(prefix=prefix) as directory:
        server = start(Path(directory))
        try:
            yield server
        finally:
            stop(server)


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_binary(name: str, *extra_dirs: str | Path) -> str:
    """The path of ``name`` on PATH or in ``extra_dirs``; a missing binary fails loudly, never skips."""
    for directory in extra_dirs:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} is not installed: {SETUP_HINT}")
    return found


def wait_until(check: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``check`` until it is true, or fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def reap(process: subprocess.Popen[Any], timeout: float = 10) -> None:
    """Wait for a process that was asked to stop; kill it if it does not within ``timeout`` seconds."""
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


def answers_ok(url: str) -> bool:
    """Whether ``url`` answers 200 now (False while nothing answers there)."""
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def cache_dir() -> Path:
    """Where scripts/build-*.sh keep what they build: ``$NOTI_CACHE_DIR``, else ~/.cache/noti."""
    return Path(os.environ.get("NOTI_CACHE_DIR") or Path.home() / ".cache" / "noti")


def read_terminal(controller: int, output: bytes = b"", marker: bytes | None = None, timeout: float = 60) -> bytes:
    """``output`` and what a pseudo-terminal shows next, until ``marker`` shows (None: until it closes)
    or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while (marker is None or marker not in output) and time.monotonic() < deadline:
        if select.select([controller], [], [], 0.5)[0]:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            output += chunk
    return output
