"""The sender: queue consumer → APNs → delivery records."""

import sys

# redis-py imports OpenTelemetry's metrics SDK whenever it is installed (as it is here, for tracing),
# to offer metrics a sender never turns on: ~1.4 MB of its RSS (issue #17). A None entry makes that
# import fail, and redis-py then runs without them; only when nothing imported redis before.
if "redis" not in sys.modules:
    sys.modules.setdefault("opentelemetry.sdk.metrics", None)  # type: ignore[arg-type]
