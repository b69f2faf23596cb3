"""Noti's APNs client against two servers: Pushy's MockApnsServer (independent) and Noti's simulator.

Each case runs against both and asserts two things: the client reports exactly what the server
decided (status, reason, apns-id, 410 timestamp; per request from Pushy's decision log, as counts
from the simulator's counters), and the server decided what Apple documents ("Handling notification
responses from APNs", "Establishing a token-based connection to APNs"). Both run with a device
registry (only known tokens exist, each for the app's topics); where Pushy 0.15 differs from Apple
the case says so and expects Pushy's answer.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

from harness.apns import SimulatorProcess
from harness.pushy import Decision, PushyServer
from harness.tokens import FixedTokens, StaleFirstTokens, der_signed_token
from noti.apns.client import APNsClient, APNsResult, client_ssl_context
from noti.apns.payload import MAX_PAYLOAD, MAX_VOIP_PAYLOAD, PUSH_TYPES, NotificationContent, topic_for
from noti.apns.reasons import Outcome
from noti.apns.tokens import ProviderTokens, load_signing_key

PUSHY, SIMULATOR = "pushy", "simulator"


BOTH = [PUSHY, SIMULATOR]


@dataclass
class Server:
    """One APNs server under test, with what it knows: the key, registered and expired device tokens."""

    name: str
    url: str
    ca_path: Path
    team_id: str
    key_id: str
    bundle_id: str
    key_path: Path
    known_tokens: tuple[str, ...]
    expired_tokens: dict[str, int]  # token → ms since epoch (Pushy's configured time; the simulator answers "now")
    pushy: PushyServer | None = None
    simulator: SimulatorProcess | None = None
    clients: list[APNsClient] = field(default_factory=list)

    @property
    def signing_key(self) -> EllipticCurvePrivateKey:
        return load_signing_key(self.key_path.read_bytes())

    def tokens(self) -> ProviderTokens:
        return ProviderTokens(self.signing_key, self.key_id, self.team_id)

    def client(
        self,
        tokens: ProviderTokens | None = None,
        *,
        bundle_id: str | None = None,
        anonymous: bool = False,
        connections: int = 2,
    ) -> APNsClient:
        """A client of its own (its own connections: Pushy binds a connection to its first team).

        ``tokens`` default to the server's key; ``anonymous`` sends no provider token at all.
        """
        client = APNsClient(
            bundle_id or self.bundle_id,
            endpoint=self.url,
            tokens=None if anonymous else tokens or self.tokens(),
            ssl_context=client_ssl_context(ca_file=self.ca_path),
            connections=connections,
        )
        self.clients.append(client)
        return client

    def outcomes(self, expect: int) -> Counter[str]:
        """How many of each answer (reason, or "Success") the server gave since the test began."""
        if self.pushy is not None:
            return Counter(decision.outcome for decision in self.pushy.decisions(expect=expect))
        assert self.simulator is not None
        return Counter(self.simulator.counters()["by_outcome"])

    def decisions(self, expect: int) -> list[Decision]:
        assert self.pushy is not None
        return self.pushy.decisions(expect=expect)


@pytest.fixture(params=BOTH)
async def server(request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    if request.param == PUSHY:
        pushy: PushyServer = request.getfixturevalue("pushy")
        subject = Server(
            PUSHY, pushy.url, pushy.ca_path, pushy.team_id, pushy.key_id, pushy.bundle_id, pushy.key_path,
            pushy.known_tokens, dict(pushy.expired_tokens), pushy=pushy,
        )  # fmt: skip
    else:
        simulator: SimulatorProcess = request.getfixturevalue("apns_simulator")
        expired = {secrets.token_hex(32): 0 for _ in range(3)}
        simulator.set_faults(unregistered=list(expired))
        known = tuple(secrets.token_hex(32) for _ in range(600))
        # Its device registry on, as Pushy's: only these tokens exist, each for the app's topics.
        topics = sorted({topic_for(simulator.bundle_id, push_type) for push_type in PUSH_TYPES})
        simulator.register_devices({token: topics for token in (*known, *expired)})
        subject = Server(
            SIMULATOR, simulator.url, simulator.ca_path, simulator.team_id, simulator.key_id, simulator.bundle_id,
            simulator.key_path, known, expired, simulator=simulator,
        )  # fmt: skip
    try:
        yield subject
    finally:
        await asyncio.gather(*(client.aclose() for client in subject.clients))


ALERT = NotificationContent(title="Hello", body="from the conformance suite")


async def send(
    client: APNsClient, token: str, content: NotificationContent = ALERT, *, payload: bytes | None = None
) -> APNsResult:
    """Send with an apns-id of our own, so the server's decision can be found by it."""
    apns_id = str(uuid.uuid4())
    result = await client.send(token, content, apns_id=apns_id, payload=payload)
    assert result.apns_id in (apns_id, None), "the answer carries the request's apns-id"
    return result


def assert_client_reports(
    server: Server, results: Iterable[APNsResult], *, server_said: Counter[str] | None = None
) -> None:
    """The client's results are exactly the server's decisions (and nothing was decided that nobody sent)."""
    results = list(results)
    client_said = Counter(result.reason or "Success" for result in results)
    expected = server_said if server_said is not None else client_said
    assert server.outcomes(sum(expected.values())) == expected
    if server.pushy is None:
        return
    final: dict[str | None, Decision] = {}
    for decision in server.decisions(sum(expected.values())):
        final[decision.apns_id] = decision  # the last answer to an apns-id is the one the client kept
    for result in results:
        assert result.apns_id is not None
        decision = final[result.apns_id]
        assert (result.status_code, result.reason, result.timestamp) == (
            decision.status,
            decision.reason,
            decision.timestamp,
        )


def raw_payload(size: int) -> bytes:
    """A valid alert payload of exactly ``size`` bytes."""
    frame = b'{"aps":{"alert":""}}'
    body = b'{"aps":{"alert":"' + b"x" * (size - len(frame)) + b'"}}'
    assert len(body) == size
    return body


# --- push types ------------------------------------------------------------------------------

CONTENT_BY_PUSH_TYPE: dict[str, NotificationContent] = {
    "alert": ALERT,
    "background": NotificationContent(push_type="background", content_available=True),
    "voip": NotificationContent(push_type="voip", data={"call": "42"}),
    "liveactivity": NotificationContent(
        push_type="liveactivity", event="update", content_state={"score": 1}, timestamp=int(time.time())
    ),
    "complication": NotificationContent(push_type="complication", data={"refresh": True}),
    "fileprovider": NotificationContent(push_type="fileprovider", data={"container": "root"}),
    "mdm": NotificationContent(push_type="mdm", data={"mdm": "check-in"}),
    "location": NotificationContent(push_type="location", data={"query": "where"}),
    "pushtotalk": NotificationContent(push_type="pushtotalk", data={"channel": "team"}),
    "widgets": NotificationContent(push_type="widgets", content_available=True),
    "controls": NotificationContent(push_type="controls", content_available=True),
}
# Pushy 0.15's PushType enum predates the widgets and controls push types (WidgetKit) and answers
# them InvalidPushType; Apple accepts them.
PUSHY_PUSH_TYPE_DEVIATIONS = {"widgets": "InvalidPushType", "controls": "InvalidPushType"}


def test_every_push_type_has_a_case() -> None:
    assert set(CONTENT_BY_PUSH_TYPE) == PUSH_TYPES


@pytest.mark.parametrize("push_type", sorted(PUSH_TYPES))
async def test_every_push_type_is_delivered_to_a_registered_token(server: Server, push_type: str) -> None:
    result = await send(server.client(), server.known_tokens[0], CONTENT_BY_PUSH_TYPE[push_type])

    assert_client_reports(server, [result])
    deviation = PUSHY_PUSH_TYPE_DEVIATIONS.get(push_type) if server.name == PUSHY else None
    if deviation is not None:
        assert (result.status_code, result.reason) == (400, deviation)
    else:
        assert (result.status_code, result.outcome) == (200, Outcome.SUCCESS)


# Pushy 0.15's DeliveryPriority knows 10 and 5 only; Apple documents 1 too (power above all else).
PUSHY_PRIORITY_DEVIATIONS = {1: "BadPriority"}


@pytest.mark.parametrize("priority", [10, 5, 1])
async def test_every_documented_priority_is_accepted(server: Server, priority: int) -> None:
    content = NotificationContent(title="Hello", priority=priority)
    result = await send(server.client(), server.known_tokens[0], content)

    assert_client_reports(server, [result])
    deviation = PUSHY_PRIORITY_DEVIATIONS.get(priority) if server.name == PUSHY else None
    if deviation is not None:
        assert (result.status_code, result.reason, result.outcome) == (400, deviation, Outcome.PERMANENT)
    else:
        assert (result.status_code, result.outcome) == (200, Outcome.SUCCESS)


# --- device tokens ---------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["abc", "zz" * 32, "ab" * 31], ids=["short", "not-hex", "62-digits"])
async def test_malformed_device_token_is_bad_device_token_and_deactivates(server: Server, token: str) -> None:
    result = await send(server.client(), token)

    assert_client_reports(server, [result])
    assert (result.status_code, result.reason, result.outcome) == (400, "BadDeviceToken", Outcome.INVALID_TOKEN)


async def test_unknown_well_formed_device_token_is_refused(server: Server) -> None:
    """Apple: BadDeviceToken for a token it never issued (or of the other environment)."""
    result = await send(server.client(), secrets.token_hex(32))

    assert_client_reports(server, [result])
    # Pushy's registry is per topic: a token it does not know for the topic is DeviceTokenNotForTopic.
    expected = "DeviceTokenNotForTopic" if server.name == PUSHY else "BadDeviceToken"
    assert (result.status_code, result.reason, result.outcome) == (400, expected, Outcome.INVALID_TOKEN)


async def test_expired_device_token_is_unregistered_with_the_time_it_went_invalid(server: Server) -> None:
    token, expired_at = next(iter(server.expired_tokens.items()))
    before = int(time.time() * 1000)
    result = await send(server.client(), token)

    assert_client_reports(server, [result])
    assert (result.status_code, result.reason, result.outcome) == (410, "Unregistered", Outcome.INVALID_TOKEN)
    assert result.timestamp is not None
    if server.name == PUSHY:
        assert result.timestamp == expired_at
    else:  # the simulator's tokens go invalid the moment it is asked
        assert before - 1000 <= result.timestamp <= int(time.time() * 1000) + 1000


@pytest.mark.parametrize(
    "server",
    [
        PUSHY,
        pytest.param(
            SIMULATOR,
            marks=pytest.mark.xfail(
                strict=True, reason="simulator: apns-unique-id on successes only; Pushy sends it on every answer"
            ),
        ),
    ],
    indirect=True,
)
async def test_sandbox_answers_carry_an_apns_unique_id_the_client_reports(server: Server) -> None:
    """Apple: apns-unique-id, a UUID of the delivery in the development (sandbox) environment only,
    the key the Push Notifications Console's delivery log looks it up by."""
    results = [await send(server.client(), server.known_tokens[0]), await send(server.client(), "ab" * 31)]

    assert_client_reports(server, results)
    unique_ids = [result.apns_unique_id for result in results]
    assert all(unique_id is not None and uuid.UUID(unique_id) for unique_id in unique_ids)
    assert len(set(unique_ids)) == 2


async def test_token_sent_with_another_apps_topic_is_device_token_not_for_topic(server: Server) -> None:
    """Apple: DeviceTokenNotForTopic, "the device token doesn't match the specified topic"."""
    result = await send(server.client(bundle_id="com.example.other"), server.known_tokens[0])

    assert_client_reports(server, [result])
    assert (result.status_code, result.reason) == (400, "DeviceTokenNotForTopic")


# --- provider tokens -------------------------------------------------------------------------


async def test_token_signed_by_another_key_is_invalid_provider_token(server: Server) -> None:
    impostor = ProviderTokens(ec.generate_private_key(ec.SECP256R1()), server.key_id, server.team_id)
    result = await send(server.client(impostor), server.known_tokens[0])

    assert_client_reports(server, [result])
    assert (result.status_code, result.reason, result.outcome) == (403, "InvalidProviderToken", Outcome.CREDENTIAL)


async def test_token_with_an_unknown_key_id_is_invalid_provider_token(server: Server) -> None:
    unknown = ProviderTokens(server.signing_key, "ZZZZZZZZZZ", server.team_id)
    result = await send(server.client(unknown), server.known_tokens[0])

    assert_client_reports(server, [result])
    assert (result.status_code, result.reason, result.outcome) == (403, "InvalidProviderToken", Outcome.CREDENTIAL)


async def test_token_naming_another_team_is_invalid_provider_token(server: Server) -> None:
    other_team = ProviderTokens(server.signing_key, server.key_id, "OTHERTEAM1")
    result = await send(server.client(other_team), server.known_tokens[0])

    assert_client_reports(server, [result])
    assert (result.status_code, result.reason, result.outcome) == (403, "InvalidProviderToken", Outcome.CREDENTIAL)


async def test_request_without_provider_token_is_missing_provider_token(server: Server) -> None:
    result = await send(server.client(anonymous=True), server.known_tokens[0])

    assert_client_reports(server, [result])
    assert (result.status_code, result.reason, result.outcome) == (403, "MissingProviderToken", Outcome.CREDENTIAL)


async def test_expired_provider_token_is_refreshed_once_and_the_notification_resent(server: Server) -> None:
    tokens = StaleFirstTokens(server.signing_key, server.key_id, server.team_id)
    result = await send(server.client(tokens), server.known_tokens[0])

    assert (result.status_code, result.outcome) == (200, Outcome.SUCCESS)
    assert tokens.minted == 2
    assert_client_reports(server, [result], server_said=Counter({"ExpiredProviderToken": 1, "Success": 1}))


async def test_provider_token_with_a_der_encoded_signature_is_accepted(server: Server) -> None:
    key = server.signing_key
    token = der_signed_token(key, server.key_id, server.team_id, int(time.time()))
    result = await send(server.client(FixedTokens(key, server.key_id, server.team_id, token)), server.known_tokens[0])

    assert_client_reports(server, [result])
    assert (result.status_code, result.outcome) == (200, Outcome.SUCCESS)


# --- payloads --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("push_type", "size", "apple_status"),
    [
        ("alert", MAX_PAYLOAD, 200),
        ("alert", MAX_PAYLOAD + 1, 413),
        ("voip", MAX_VOIP_PAYLOAD, 200),
        ("voip", MAX_VOIP_PAYLOAD + 1, 413),
    ],
)
async def test_payload_limits_are_4096_bytes_and_5120_for_voip(
    server: Server, push_type: str, size: int, apple_status: int
) -> None:
    content = CONTENT_BY_PUSH_TYPE[push_type]
    result = await send(server.client(), server.known_tokens[0], content, payload=raw_payload(size))

    assert_client_reports(server, [result])
    # Pushy 0.15 applies 4096 bytes to every push type; Apple allows VoIP 5120.
    expected = 413 if server.name == PUSHY and size > MAX_PAYLOAD else apple_status
    assert result.status_code == expected
    if expected == 413:
        assert (result.reason, result.outcome) == ("PayloadTooLarge", Outcome.PERMANENT)


async def test_empty_payload_is_payload_empty(server: Server) -> None:
    result = await send(server.client(), server.known_tokens[0], payload=b"")

    assert_client_reports(server, [result])
    assert (result.status_code, result.reason, result.outcome) == (400, "PayloadEmpty", Outcome.PERMANENT)


# --- many at once ----------------------------------------------------------------------------


async def test_many_concurrent_sends_each_get_their_own_answer(server: Server) -> None:
    """1500 at once on one connection that allows 1000 streams (as Apple's do): each result is the
    server's answer to that very request, and the client kept within the server's stream limit."""
    expired = list(server.expired_tokens)
    plan: list[tuple[str, Callable[[APNsResult], bool]]] = []
    for index in range(1500):
        if index % 10 == 3:
            plan.append((expired[index % len(expired)], lambda r: r.reason == "Unregistered"))
        elif index % 10 == 7:
            plan.append(("ab" * 20, lambda r: r.reason == "BadDeviceToken"))
        else:
            plan.append((server.known_tokens[index % len(server.known_tokens)], lambda r: r.status_code == 200))
    client = server.client(connections=1)

    results = await asyncio.gather(*(send(client, token) for token, _ in plan))

    assert_client_reports(server, results)
    assert all(expect(result) for (_, expect), result in zip(plan, results, strict=True))
    assert Counter(result.outcome for result in results) == {Outcome.SUCCESS: 1200, Outcome.INVALID_TOKEN: 300}
