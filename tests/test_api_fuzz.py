"""Generated requests against a real `alloc serve`, on SQLite and PostgreSQL: whatever the
parameters, no 5xx, every response as the OpenAPI document describes it, and no body
that shows a stack trace or the database URL."""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

# Per operation and mode (both for the ranked list): a few hundred requests per operation,
# under a minute per database.
CASES = 150
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


@pytest.fixture
def operations(served):
    schema = schemathesis.openapi.from_url(served.base + "/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_requests_are_answered_as_documented(operations, db_url, mode):
    assert len(operations) == 10
    if mode is GenerationMode.NEGATIVE:  # a path id may be any text: only query values can be invalid
        operations = [op for op in operations if len(op.query)]
    for operation in operations:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=CASES, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def answered_as_documented(case):
            response = case.call()
            case.validate_response(response, checks=CHECKS)
            assert "Traceback" not in response.text
            assert db_url not in response.text

        answered_as_documented()
