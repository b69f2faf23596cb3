"""The Dockerfile, checked without a container engine: what it installs and runs, and as whom."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from harness.k8s import k8s_binary
from noti.operator.deployment import SenderImage, sender_deployment

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "noti"


def _instructions() -> list[dict[str, Any]]:
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    return [step for step in parser.structure if step["instruction"] != "COMMENT"]


def _final_stage(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    starts = [i for i, step in enumerate(steps) if step["instruction"] == "FROM"]
    return steps[starts[-1] :]


def _pip_runs(steps: list[dict[str, Any]]) -> list[list[str]]:
    """Each ``pip install``/``pip wheel`` of a RUN, as words."""
    found = []
    for step in steps:
        if step["instruction"] != "RUN":
            continue
        for command in re.split(r"&&|;|\|\|", step["value"]):
            words = shlex.split(command)
            if len(words) >= 2 and Path(words[0]).name.startswith("pip") and words[1] in ("install", "wheel"):
                found.append(words)
    return found


def _chart_commands() -> set[str]:
    """The ``noti`` subcommand of every container the chart renders (hooks included)."""
    rendered = subprocess.run(
        [k8s_binary("helm"), "template", "noti", str(CHART), "--set", "existingSecret=noti-env"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    commands = set()
    for doc in yaml.safe_load_all(rendered):
        pod = ((doc or {}).get("spec", {}).get("template") or {}).get("spec") or {}
        for container in pod.get("containers", []):
            commands.add(container["args"][0])
    return commands


def _operator_commands() -> set[str]:
    """The subcommand of the sender pods the operator creates."""
    credential = {
        "metadata": {"name": "app", "namespace": "team"},
        "spec": {"teamId": "ABCDE12345", "keyId": "KEY1234567", "bundleId": "com.example.app",
                 "environment": "production", "privateKeySecretRef": {"name": "apns-key"}},
    }  # fmt: skip
    manifest = sender_deployment(credential, "SHA256:x", SenderImage("noti:test"))
    return {container["args"][0] for container in manifest["spec"]["template"]["spec"]["containers"]}


def test_dockerfile_parses_into_a_build_stage_and_a_runtime_stage() -> None:
    steps = _instructions()
    assert [step["value"].split()[0] for step in steps if step["instruction"] == "FROM"] == [
        "python:3.11-slim", "python:3.11-slim"
    ]  # fmt: skip
    final = _final_stage(steps)
    assert json.loads(next(s["value"] for s in final if s["instruction"] == "ENTRYPOINT")) == ["noti"]
    # The runtime stage gets only the built wheels, no source tree.
    copies = [step["value"] for step in final if step["instruction"] in ("COPY", "ADD")]
    assert copies == ["--from=build /wheels /wheels"]


def test_image_runs_as_the_numeric_non_root_user_the_chart_expects() -> None:
    final = _final_stage(_instructions())
    users = [i for i, step in enumerate(final) if step["instruction"] == "USER"]
    assert users, "the runtime stage sets no USER: it would run as root"
    user = final[users[-1]]["value"].strip()
    # Numeric, so the kubelet can check runAsNonRoot without an /etc/passwd lookup.
    assert re.fullmatch(r"\d+(:\d+)?", user), f"USER {user} is not numeric"
    uid, _, gid = user.partition(":")
    assert int(uid) != 0 and (not gid or int(gid) != 0)
    assert not [s for s in final[users[-1] :] if s["instruction"] == "RUN"], "RUN after USER runs as that user"

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == int(uid)
    assert values["securityContext"]["runAsUser"] == int(uid)
    if gid:
        assert values["podSecurityContext"]["runAsGroup"] == int(gid)


def test_image_installs_only_what_constraints_txt_pins() -> None:
    steps = _instructions()
    copied = " ".join(step["value"] for step in steps if step["instruction"] == "COPY")
    assert "constraints.txt" in copied.split()
    runs = _pip_runs(steps)
    assert runs, "no pip install or pip wheel in the Dockerfile"
    for words in runs:
        from_index = "--no-index" not in words
        constrained = any(w in ("-c", "--constraint") or w.startswith("--constraint=") for w in words)
        if from_index:
            assert constrained, f"{' '.join(words)} reaches the index without -c constraints.txt"
            flag = next(i for i, w in enumerate(words) if w in ("-c", "--constraint"))
            assert words[flag + 1] == "constraints.txt"
    # The runtime stage installs the wheels the build stage made under those pins, offline.
    final_runs = _pip_runs(_final_stage(steps))
    assert final_runs and all("--no-index" in words for words in final_runs)


@pytest.fixture(scope="module")
def installed_noti(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``noti`` console script of the wheel, installed into a fresh venv (dependencies from this one)."""
    root = tmp_path_factory.mktemp("image")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(root / "dist"), str(ROOT)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = (root / "dist").glob("noti-*.whl")
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "--quiet",
         str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    (Path(purelib) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env_dir / "bin" / "noti"


def test_every_command_the_chart_and_the_operator_run_exists_in_the_wheel(installed_noti: Path) -> None:
    commands = _chart_commands() | _operator_commands()
    assert commands >= {"gateway", "operator", "migrate", "sender"}
    for command in sorted(commands):
        result = subprocess.run([str(installed_noti), command, "--help"], capture_output=True, text=True,
                                cwd=installed_noti.parent, timeout=60)  # fmt: skip
        assert result.returncode == 0, f"noti {command} --help: {result.stderr}"
        assert f"Usage: noti {command}" in result.stdout
    unknown = subprocess.run([str(installed_noti), "no-such-command", "--help"], capture_output=True, text=True)
    assert unknown.returncode != 0
