"""APNs: the HTTP/2 client, provider tokens, payloads, channels and the simulator."""

import sys

# httpx's __init__ imports its command line (click, rich, pygments: ~4 MB of a sender's RSS) whenever
# those are installed, as they are here. No Noti process runs httpx's CLI, so httpx is told it is
# absent (a None entry makes that import fail, and httpx falls back to a stub `main`), unless
# something imported httpx first.
if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
