"""An APNs simulator: Apple's provider API over TLS HTTP/2, with fault injection and counters.

It checks what Apple checks (device token, headers, topic against the key's bundle ids,
the ES256 provider token's signature — raw R||S or DER — and age, payload JSON and size, and,
with a device registry, whether APNs issued the token and for which topic) and answers with
Apple's status codes and reasons. It frames HTTP/2 itself on a bare asyncio protocol (with
jh2's Rust HPACK), about 25 µs of CPU per notification, so it is not the bottleneck of what it
measures; ``workers`` processes may share one port with SO_REUSEPORT.

- ``rules``: Apple's rules, ``judge(request, directory, now) -> Answer`` (pure)
- ``channels``: Apple's rules for broadcast channels: ``manage`` and ``broadcast`` (pure)
- ``state``: faults, what one process knows and counts
- ``wire``: HTTP/2 server framing (settings, flow control, streams, GOAWAY)
- ``protocol``: one client connection: requests to judge, answers, faults, counters
- ``control``: the control commands and their HTTP JSON API
- ``server``: ``Simulator`` (listeners, workers, certificates), ``start``
- ``cli``: ``noti apns-sim``
"""

from noti.apns.simulator.cli import main
from noti.apns.simulator.protocol import APPLE_MAX_CONCURRENT_STREAMS, certificate_topics
from noti.apns.simulator.rules import TOKEN_MAX_AGE, Answer, Directory, Keyring, RegisteredKey, Request, judge
from noti.apns.simulator.server import Simulator, SimulatorConfig, generate_certificate, server_ssl_context, start
from noti.apns.simulator.state import Faults, State

__all__ = [
    "APPLE_MAX_CONCURRENT_STREAMS",
    "TOKEN_MAX_AGE",
    "Answer",
    "Directory",
    "Faults",
    "Keyring",
    "RegisteredKey",
    "Request",
    "Simulator",
    "SimulatorConfig",
    "State",
    "certificate_topics",
    "generate_certificate",
    "judge",
    "main",
    "server_ssl_context",
    "start",
]
