"""Property-based run of every API operation against ``/api/schema/`` (schemathesis), on real PostgreSQL and Redis.

Passes when no answer is a 5xx and every answer matches the schema: its status code, content
type and body are ones the schema declares.
"""

from __future__ import annotations

import itertools

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import Engine

from noti.gateway.auth import Scope, create_api_key

MAX_EXAMPLES = 30  # per operation and mode: the whole run stays well under two minutes
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def admin_key(clean_db: Engine) -> str:
    return create_api_key(clean_db, "schemathesis", [Scope.ADMIN])


# Each operation's cases are drawn with hypothesis directly: schemathesis' lazy pytest loader
# does not run under pytest 9, and the schema only exists once the live gateway is up.
def test_no_server_errors_and_every_answer_matches_the_schema(live_gateway: str, admin_key: str) -> None:
    schema = schemathesis.openapi.from_url(f"{live_gateway}/api/schema/")
    headers = {"Authorization": f"Bearer {admin_key}"}
    failures: dict[str, str] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10

    for operation, mode in itertools.product(operations, schemathesis.GenerationMode):

        @given(case=operation.as_strategy(mode))
        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        try:
            check()
        except Unsatisfiable:  # nothing to make invalid (an operation without input, in negative mode)
            continue
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis reports a FailureGroup
            failures[f"{operation.label} ({mode.value})"] = str(exc)[:2000]
    assert not failures, "\n\n".join(f"{label}:\n{message}" for label, message in failures.items())
