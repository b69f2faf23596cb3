"""The README's first command, run as a newcomer runs it: a fresh copy of the repository, `scripts/dev.sh`.

It installs the runtime dependencies alone (no dev extras), so a dependency the runtime needs but only the
test environment brings fails here, not on a user's machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness.procs import free_port, wait_until
from harness.readme import README, ROOT, check_try_it, run_try_it

pytestmark = pytest.mark.slow


class FreshCopy:
    """The repository's files as a clone has them, in a folder of their own (no .venv, no .noti)."""

    def __init__(self, target: Path) -> None:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, check=True,
        ).stdout.decode().split("\0")  # fmt: skip
        for name in filter(None, listed):
            source = ROOT / name
            if source.is_file():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target / name)
        self.root = target

    def env(self) -> dict[str, str]:
        """A newcomer's shell: none of this session's venv, PYTHONPATH or NOTI_ settings."""
        ours = str(ROOT / ".venv" / "bin")
        path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != ours)
        drop = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
        return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("NOTI_")} | {"PATH": path}


class Started:
    def __init__(self, copy: FreshCopy, port: int, env: dict[str, str]) -> None:
        self.copy, self.url = copy, f"http://127.0.0.1:{port}"
        self.data = copy.root / ".noti"
        self.process = subprocess.Popen(
            ["scripts/dev.sh", "--port", str(port)], cwd=copy.root, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        wait_until(self._ready, timeout=600, what="scripts/dev.sh", interval=0.5)

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"scripts/dev.sh exited {self.process.returncode}: {self.output()}")
        return (self.data / "running.json").exists() and httpx.get(f"{self.url}/healthz").status_code == 200

    def output(self) -> str:
        return self.process.stdout.read() if self.process.stdout else ""

    def stop(self) -> str:
        os.killpg(self.process.pid, signal.SIGINT)
        output, _ = self.process.communicate(timeout=60)
        return output


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> FreshCopy:
    return FreshCopy(tmp_path_factory.mktemp("clone"))


@pytest.fixture(scope="module")
def started(copy: FreshCopy) -> Iterator[Started]:
    stack = Started(copy, free_port(), copy.env())
    yield stack
    if stack.process.poll() is None:
        os.killpg(stack.process.pid, signal.SIGKILL)
        stack.process.wait()


def test_readme_names_dev_sh_as_the_first_command() -> None:
    first = re.search(r"## On a fresh machine.*?```sh\n(.*?)\n```", README.read_text(), re.S)
    assert first and first.group(1).strip() == "scripts/dev.sh"


def test_first_command_installs_the_runtime_alone(started: Started) -> None:
    python = started.copy.root / ".venv" / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        capture_output=True, text=True, check=True, cwd="/",
    )  # fmt: skip
    names = {package["name"].lower() for package in json.loads(installed.stdout)}
    assert "noti" in names and "greenlet" in names
    assert not names & {"pytest", "hypothesis", "playwright", "schemathesis", "mypy"}, "dev extras in a runtime venv"


def test_readme_try_it_works_against_the_first_command(started: Started) -> None:
    api_key = (started.data / "dev-api-key").read_text().strip()
    control = json.loads((started.data / "running.json").read_text())["simulator_control_url"]
    check_try_it(run_try_it(started.url, started.copy.root), started.url, api_key, control)
    admin = httpx.get(f"{started.url}/admin/login")  # the admin UI needs what only the runtime install brings
    assert admin.status_code == 200


def test_noti_is_in_the_venv_the_readme_names(started: Started) -> None:
    result = subprocess.run(
        [str(started.copy.root / ".venv" / "bin" / "noti"), "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.startswith("noti")


def test_a_restart_with_a_complete_venv_installs_nothing_and_works_offline(started: Started) -> None:
    output = started.stop()
    assert started.process.returncode == 0, output
    offline = started.copy.env() | {"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_NO_INDEX": "1"}
    again = Started(started.copy, free_port(), offline)
    try:
        assert httpx.get(f"{again.url}/healthz").status_code == 200
    finally:
        output = again.stop()
    assert "installing" not in output and "Warning" not in output and "!!" not in output, output
