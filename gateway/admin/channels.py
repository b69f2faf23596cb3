"""The admin's page of broadcast channels: what APNs holds for each app and environment, read-only.

Channels are made and deleted through APNs (``/api/channels/`` or a LiveActivityChannel), never
by editing rows here: a row removed here would leave the channel at Apple.
"""

from __future__ import annotations

from typing import Any, ClassVar

from markupsafe import Markup
from sqladmin import ModelView
from sqladmin.filters import AllUniqueStringValuesFilter

from noti.gateway.admin.views import utc_time
from noti.store.models import BroadcastChannel

STORAGE_POLICIES = {0: "no storage", 1: "most recent message"}


def _labels(model: Any, _attribute: Any) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted((model.labels or {}).items()))


class ChannelAdmin(ModelView, model=BroadcastChannel):
    name = "Channel"
    name_plural = "Channels"
    icon = "fa-solid fa-tower-broadcast"
    can_create = False
    can_edit = False
    can_delete = False
    # created_at is on the detail page: the list fits 1400 px.
    column_list: ClassVar[Any] = [
        BroadcastChannel.name,
        BroadcastChannel.app,
        BroadcastChannel.environment,
        BroadcastChannel.channel_id,
        BroadcastChannel.storage_policy,
        BroadcastChannel.labels,
        BroadcastChannel.source,
    ]  # fmt: skip
    column_labels: ClassVar[Any] = {
        BroadcastChannel.channel_id: "channel id", BroadcastChannel.storage_policy: "storage",
        BroadcastChannel.source: "managed by", BroadcastChannel.created_at: "created (UTC)",
    }  # fmt: skip
    column_searchable_list: ClassVar[Any] = [BroadcastChannel.name, BroadcastChannel.channel_id]
    column_filters: ClassVar[Any] = [
        AllUniqueStringValuesFilter(BroadcastChannel.app),
        AllUniqueStringValuesFilter(BroadcastChannel.environment),
    ]
    column_default_sort: ClassVar[Any] = [(BroadcastChannel.created_at, True)]
    column_formatters: ClassVar[Any] = {
        BroadcastChannel.channel_id: lambda m, _a: Markup('<code class="noti-channel">{}</code>').format(m.channel_id),
        BroadcastChannel.storage_policy: lambda m, _a: STORAGE_POLICIES.get(m.storage_policy, str(m.storage_policy)),
        BroadcastChannel.labels: _labels,
    }
    column_formatters_detail: ClassVar[Any] = {BroadcastChannel.created_at: lambda m, _a: utc_time(m.created_at)}
    page_size = 50
