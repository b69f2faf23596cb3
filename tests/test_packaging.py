"""The wheel maps the component folders into ``noti.*`` and leaves the stdlib alone."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = [
    "noti", "noti.gateway.app", "noti.sender.service", "noti.operator.handlers", "noti.store.records",
    "noti.apns.client", "noti.apns.simulator.cli",
]  # fmt: skip


def _build_wheel(out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("noti-*.whl")
    return wheel


def test_wheel_installs_every_component_under_noti_and_keeps_stdlib_operator(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path / "dist")
    names = zipfile.ZipFile(wheel).namelist()
    assert "noti/operator/__init__.py" in names
    assert "noti/store/migrations/versions/0001_initial_schema.py" in names
    # The admin UI's pages and assets are package data: without them /admin/ is a 500.
    assert {"noti/gateway/admin/templates/noti/dashboard.html", "noti/gateway/admin/static/noti/admin.css"} <= set(
        names
    )
    assert not any(name.startswith(("operator/", "gateway/", "sender/")) for name in names)
    with zipfile.ZipFile(wheel) as archive:  # the CRDs themselves, not copies that could drift
        shipped = {name.removeprefix("noti/crds/"): archive.read(name) for name in names if name.endswith(".yaml")}
    assert shipped == {path.name: path.read_bytes() for path in (ROOT / "crds").glob("*.yaml")}

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    target = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    # Dependencies come from the test environment; the wheel's own files are the only noti on the path.
    (Path(target) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    probe = (
        "import importlib, operator, sys\n"
        f"for name in {COMPONENTS!r}:\n"
        "    module = importlib.import_module(name)\n"
        f"    assert module.__file__.startswith({target!r}), module.__file__\n"
        "assert operator.__file__.startswith(sys.base_prefix), operator.__file__\n"
        "assert callable(operator.itemgetter)\n"
        "for name in ('gateway', 'sender'):\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError:\n"
        "        continue\n"
        "    raise AssertionError(f'top-level {name} is importable')\n"
        "from noti.campaigns import CampaignError, CampaignSpec\n"
        "manifest = {'apiVersion': 'noti.dev/v1alpha1', 'kind': 'NotificationCampaign', 'metadata': {'name': 'x'},\n"
        "            'spec': {'credentialRef': {'name': 'a'}, 'notification': {}, 'audience': {'allDevices': True},\n"
        "                     'ratePerSec': 1}}\n"
        "try:\n"
        "    CampaignSpec.from_manifest(manifest)\n"
        "except CampaignError as exc:\n"
        "    assert str(exc) == 'spec.ratePerSec: unknown field', exc\n"
        "else:\n"
        "    raise AssertionError('an installed noti did not check the manifest against its CRD')\n"
        "print('ok')\n"
    )
    result = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
