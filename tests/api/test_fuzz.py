"""Schemathesis drives every operation of the OpenAPI schema with generated input, valid and
not: no answer may be a 5xx. The API runs as its own uvicorn process against the test
database and the dev server, as in production."""

import os
import subprocess
from collections.abc import Iterator

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from schemathesis.checks import not_a_server_error
from schemathesis.generation.case import Case
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)
from temporalio.testing import WorkflowEnvironment

from core.db import Database
from core.settings import PROJECT_ROOT, Settings
from devstack.embedded import api_server_command, free_port, wait_for_port
from tests.support import auth_headers, new_queues, target_of

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api_url(settings: Settings, dev_env: WorkflowEnvironment) -> Iterator[str]:
    port = free_port()
    queues = new_queues()
    env = {
        **os.environ,
        "ENVIRONMENT": "test",
        "DATABASE_URL": str(settings.database_url),
        "TEMPORAL_ADDRESS": target_of(dev_env.client),
        # No worker runs: a delete or control applies itself after this long.
        "CONTROL_TIMEOUT_SECONDS": "1",
        "AUTH_SIGNING_KEY_FILE": str(settings.auth_signing_key_file),
        "TEMPORAL_TASK_QUEUE": queues.main,
        "TEMPORAL_SEND_TASK_QUEUE": queues.send,
        "LOG_LEVEL": "WARNING",
    }
    server = subprocess.Popen(
        api_server_command(host="127.0.0.1", port=port),
        cwd=PROJECT_ROOT,
        env=env,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=60, process=server)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_no_input_gets_a_server_error(api_url: str, db: Database, settings: Settings) -> None:
    """Authenticated with every permission, generated input never gets a 5xx nor an answer the
    schema does not describe. `db` empties the tables afterwards: the generated clients must
    not meet later tests."""
    headers = auth_headers(settings)
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:

        @given(case=operation.as_strategy())
        @hypothesis.settings(
            max_examples=int(os.environ.get("FUZZ_EXAMPLES", "40")),
            # The same examples on every run keep CI repeatable; FUZZ_RANDOM=1 and FUZZ_EXAMPLES
            # explore further.
            derandomize="FUZZ_RANDOM" not in os.environ,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def exercise(case: Case) -> None:
            case.call_and_validate(
                base_url=api_url,
                headers=headers,
                checks=[not_a_server_error, response_schema_conformance, status_code_conformance],
            )

        exercise()
