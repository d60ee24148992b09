"""Schemathesis against the app's own OpenAPI schema (/openapi.json): generated requests, valid
and not, to every documented operation -- and never a 5xx.

Bounded so that it costs well under a minute: a few examples per operation, no shrinking
deadline. The progress stream (server-sent events) is left out: a long-lived answer by design.
Random bytes are never a decodable image, so no request here reaches the painters.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error

from atelier.config import Settings
from atelier.service.context import Services
from atelier.web.app import create_app


@pytest.fixture
def api_schema(settings: Settings) -> Iterator[schemathesis.BaseSchema]:
    services = Services.open(settings, public_url="http://testserver")
    app = create_app(services=services, workers=0, mail=False)
    try:
        yield schemathesis.openapi.from_asgi("/openapi.json", app).exclude(path_regex=r"/events$")
    finally:
        services.close()


def test_no_request_makes_the_server_fail(api_schema: schemathesis.BaseSchema) -> None:
    # Each operation's strategy driven by hypothesis directly (schemathesis' pytest plugin does
    # not run on this pytest); failures are collected so that one run reports them all.
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 10  # the schema was read, not an empty one

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=12,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],  # no shrinking: report what was found
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def run(case: schemathesis.Case) -> None:
            response = case.call()
            case.validate_response(response, checks=[not_a_server_error])

        try:
            run()
        except Exception as exc:  # noqa: BLE001 - collected, reported below
            failures.append(f"{operation.label}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    assert failures == []
