"""The README's configuration table names every setting the components read."""

from __future__ import annotations

from harness.readme import README
from noti.settings import Settings


def test_every_setting_is_in_the_configuration_table() -> None:
    text = README.read_text()
    settings = [f"NOTI_{name.upper()}" for name in Settings.model_fields]
    assert [name for name in settings if f"`{name}`" not in text] == []
