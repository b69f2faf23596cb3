"""The queue protocol: key names and the versioned message format."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pytest
import redis

from noti.queue import MessageError, QueuedNotification, StreamKeys, epoch_ms, from_epoch_ms


def _message() -> QueuedNotification:
    return QueuedNotification(
        id=uuid.uuid4(),
        device_token="ab" * 32,
        app="com.example.app",
        content={"title": "Hi", "data": {"k": "v"}},
        device_id=7,
        campaign="default/launch",
    )


def test_message_round_trips_through_a_real_stream(clean_redis: redis.Redis) -> None:
    credential = StreamKeys("team-a/app")
    message = _message()
    clean_redis.xadd(credential.transactional_stream, message.encode())  # type: ignore[arg-type]
    [(_, [(_, fields)])] = clean_redis.xread({credential.transactional_stream: 0})  # type: ignore[misc]
    assert QueuedNotification.decode(fields) == message
    assert QueuedNotification.decode(message.next_attempt().encode()).attempt == 1


def test_other_versions_and_garbage_are_rejected_with_a_reason() -> None:
    with pytest.raises(MessageError, match="unsupported message version '2'"):
        QueuedNotification.decode({b"v": b"2", b"n": b"{}"})
    with pytest.raises(MessageError, match="malformed notification message"):
        QueuedNotification.decode({b"v": b"1", b"n": b'{"id": "not-a-uuid"}'})


def test_all_keys_of_a_credential_share_one_cluster_hash_tag() -> None:
    credential = StreamKeys("team-a/com.example.app")
    keys = [
        credential.transactional_stream,
        credential.campaign_stream("default/launch"),
        credential.campaigns,
        credential.retries,
        credential.rate_limit,
        credential.status,
    ]
    assert {key.split("{")[1].split("}")[0] for key in keys} == {"team-a/com.example.app"}
    assert len(set(keys)) == len(keys)


def test_two_credentials_of_one_app_never_share_a_key() -> None:
    a, b = StreamKeys("team-a/app"), StreamKeys("team-b/app")
    for name in ("transactional_stream", "campaigns", "retries", "rate_limit", "status", "finished", "dead_letters"):
        assert getattr(a, name) != getattr(b, name)


@pytest.mark.parametrize("identity", ["com.example.app", "Team-A/app", "team-a/", "/app", "a/b/c", "team-a/ap{p}"])
def test_a_credential_is_a_kubernetes_namespace_and_name(identity: str) -> None:
    with pytest.raises(ValueError, match=r"namespace/name|Kubernetes"):
        StreamKeys(identity)


def test_messages_encoded_together_read_as_each_encoded_alone() -> None:
    content = {"title": "Sale", "data": {"n": 1, "nested": ["a", None]}, "sound": {"name": "x", "critical": 1}}
    ids, tokens, device_ids = [uuid.uuid4(), uuid.uuid4()], ["ab" * 32, "cd" * 32], [5, None]
    for campaign in (None, "default/launch"):
        together = QueuedNotification.encode_many(
            ids, tokens, device_ids, app="com.example.app", content=content, campaign=campaign
        )
        alone = [
            QueuedNotification(id, token, "com.example.app", content, device_id=device_id, campaign=campaign).encode()
            for id, token, device_id in zip(ids, tokens, device_ids, strict=True)
        ]
        assert together == alone
        assert [QueuedNotification.decode(fields).device_id for fields in together] == device_ids
    # string ids (as a bulk send makes them) encode like their UUIDs
    assert QueuedNotification.encode_many(
        [str(ids[0])], tokens[:1], [None], app="com.example.app", content=content
    ) == QueuedNotification.encode_many(ids[:1], tokens[:1], [None], app="com.example.app", content=content)


def test_a_retry_stays_dated_when_it_was_first_queued() -> None:
    first = QueuedNotification(uuid.uuid4(), "ab" * 32, "com.example.app", {"body": "hi"})
    # A first entry carries no date: Redis's entry id has it.
    assert "queued_at" not in orjson.loads(first.encode()["n"])
    retry = first.next_attempt(b"1764590400123-0")
    again = QueuedNotification.decode(retry.encode())
    assert (again.attempt, again.queued_at) == (1, 1764590400123)
    # Its next retry, queued again under a new entry id, keeps the first date.
    assert again.next_attempt(b"1764590999000-3").queued_at == 1764590400123
    assert again.queued_since(b"1764590999000-3") == 1764590400123
    assert first.queued_since(b"1764590400123-7") == 1764590400123


def test_a_message_of_an_older_gateway_without_a_date_still_reads() -> None:
    body = {"id": str(uuid.uuid4()), "token": "ab" * 32, "app": "com.example.app", "content": {}, "attempt": 0}
    message = QueuedNotification.decode({b"v": b"1", b"n": orjson.dumps(body)})
    assert message.queued_at is None


def test_a_message_carries_its_records_created_at_through_encoding_and_retries() -> None:
    created = datetime(2026, 12, 1, 9, 30, 15, 123_987, tzinfo=UTC)
    content = {"body": "hi"}
    message = QueuedNotification(uuid.uuid4(), "ab" * 32, "com.example.app", content, created_at=epoch_ms(created))
    read = QueuedNotification.decode(message.encode())
    assert read.created_at is not None and from_epoch_ms(read.created_at) == created.replace(microsecond=123_000)
    assert read.next_attempt(b"1764590400123-0").created_at == read.created_at  # a retry updates the same record
    together = QueuedNotification.encode_many(
        [message.id, uuid.uuid4()], ["ab" * 32, "cd" * 32], [None, None], app="com.example.app",
        content={"body": "hi"}, created_at=[epoch_ms(created), None],
    )  # fmt: skip
    assert together[0] == message.encode()
    assert QueuedNotification.decode(together[1]).created_at is None  # unknown: the message still reads
    # A naive time (as SQLite gives stored ones back) is UTC.
    assert epoch_ms(created.replace(tzinfo=None)) == epoch_ms(created)
