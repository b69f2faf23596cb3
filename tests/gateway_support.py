"""Helpers shared by the gateway tests (the fixtures are in ``gateway_fixtures``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
from hypothesis import strategies as st

from noti.settings import Settings

APP = "com.example.app"


@dataclass(frozen=True)
class Keys:
    sender: str  # send + read
    reader: str  # read only
    admin: str


def gateway_settings(database_url: str, redis_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "apns_environment": "sandbox",
        "gateway_rate_limit": 0,
        "gateway_session_secret": "test-session-secret",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


# --- bulk registration: batches of valid and invalid devices, and what the gateway must make of them ---

BULK_TOKENS = ["ab" * 31 + f"{n:02x}" for n in range(1, 6)]
_APP_SLOTS = ("first", "second")  # replaced by apps of the test's own, so examples never share devices

_valid_device = st.fixed_dictionaries(
    {
        "device_token": st.sampled_from([*BULK_TOKENS, BULK_TOKENS[0].upper()]),
        "app": st.sampled_from(_APP_SLOTS),
    },
    optional={
        "owner": st.sampled_from(["ann", "bob", "carol"]),
        "tags": st.lists(st.sampled_from(["vip", "beta", "trial"]), max_size=3),
        "is_active": st.booleans(),
        "platform": st.just("ios"),
    },
)
_invalid_device: st.SearchStrategy[Any] = st.one_of(
    _valid_device.map(lambda d: {**d, "device_token": "ab" * 10}),  # too short for APNs
    _valid_device.map(lambda d: {**d, "device_token": "zz" * 32}),  # not hex
    _valid_device.map(lambda d: {**d, "colour": "red"}),  # not a device field
    _valid_device.map(lambda d: {**d, "tags": "vip"}),  # not a list
    _valid_device.map(lambda d: {**d, "owner": ""}),
    _valid_device.map(lambda d: {**d, "app": "-not a bundle id"}),
    _valid_device.map(lambda d: {k: v for k, v in d.items() if k != "device_token"}),
    st.sampled_from([7, "device", None, []]),  # not an object at all
)
bulk_batches = st.lists(
    st.one_of(_valid_device.map(lambda d: (True, d)), _invalid_device.map(lambda d: (False, d))),
    min_size=1,
    max_size=25,
)


async def check_bulk_registration(
    http: httpx.AsyncClient, batch: list[tuple[bool, Any]], apps: tuple[str, str]
) -> None:
    """POST the batch to /api/devices/bulk/ and check the answer and the stored devices against it."""
    names = dict(zip(_APP_SLOTS, apps, strict=True))
    items = [{**d, "app": names.get(d["app"], d["app"])} if isinstance(d, dict) and "app" in d else d for _, d in batch]
    response = await http.post("/api/devices/bulk/", json={"devices": items})
    assert response.status_code == 200, response.text
    answer = response.json()
    valid = [i for i, (ok, _) in enumerate(batch) if ok]
    assert [r["index"] for r in answer["results"]] == valid
    assert [e["index"] for e in answer["errors"]] == [i for i, (ok, _) in enumerate(batch) if not ok]
    for error in answer["errors"]:
        assert error["detail"] and error["errors"]
        assert all(item["field"].startswith(f"body.devices.{error['index']}") for item in error["errors"])

    expected: dict[tuple[str, str], dict[str, Any]] = {}
    ids: dict[tuple[str, str], int] = {}
    for result, index in zip(answer["results"], valid, strict=True):
        key = (items[index]["app"], items[index]["device_token"].lower())
        assert (result["app"], result["device_token"]) == key
        assert result["created"] == (key not in expected)  # the first mention creates, later ones update
        assert ids.setdefault(key, result["id"]) == result["id"]
        expected[key] = items[index]
    assert (answer["created"], answer["updated"], answer["failed"]) == (
        len(expected), len(valid) - len(expected), len(batch) - len(valid),
    )  # fmt: skip

    stored = {}
    for app in apps:
        listing = await http.get("/api/devices/", params={"app": app, "limit": 1000})
        for d in listing.json()["results"]:
            stored[(d["app"], d["device_token"])] = (d["owner"], d["tags"], d["is_active"], d["id"])
    assert stored == {
        key: (item.get("owner"), item.get("tags", []), item.get("is_active", True), ids[key])
        for key, item in expected.items()
    }
