"""One bundle id rule: the API, the routes in Redis and the APNsCredential CRD agree on it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from noti.bundle_id import BUNDLE_ID_PATTERN, bundle_id_problem
from noti.gateway.schemas import NotificationIn
from noti.routes import route_field

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("bundle_id", ["com.example.app", "A1", "com.example-app.widget", "9lives", "x" * 255])
def test_bundle_ids_apple_allows_pass(bundle_id: str) -> None:
    assert bundle_id_problem(bundle_id) is None
    route_field(bundle_id, "sandbox")


@pytest.mark.parametrize(
    "bundle_id",
    [
        "",
        "com.example probe",
        "a\r\nX-Injected: 1",
        "x}:tx{",
        "a<script>alert(1)</script>",
        "a/../../etc/passwd",
        "com.example.app\n",
        ".com.example",
        "com_example",
        "x" * 256,
    ],
)
def test_anything_else_is_refused_everywhere(bundle_id: str) -> None:
    assert bundle_id_problem(bundle_id) is not None
    with pytest.raises(ValueError):
        route_field(bundle_id, "sandbox")
    with pytest.raises(ValueError):
        NotificationIn(device_token="ab" * 32, app=bundle_id)


def test_the_crd_pattern_is_the_code_s_and_the_chart_carries_the_crds_byte_for_byte() -> None:
    crd = yaml.safe_load((ROOT / "crds/apnscredentials.noti.dev.yaml").read_text())
    [version] = crd["spec"]["versions"]
    bundle_id = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["bundleId"]
    assert bundle_id["pattern"] == BUNDLE_ID_PATTERN
    for source in sorted((ROOT / "crds").glob("*.yaml")):
        assert (ROOT / "charts/noti/crds" / source.name).read_bytes() == source.read_bytes(), source.name
