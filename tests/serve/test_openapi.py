"""Schemathesis over the server's own OpenAPI schema, against the real server: whatever it is sent, it answers
without a server error (5xx), and it is still serving afterwards."""
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.serve.conftest import start_server


@pytest.fixture(scope="module")
def live(served_run):
    proc, url = start_server(served_run, "--threads", "1", "--max-batch-size", "8")
    yield url
    proc.kill()
    proc.wait()


def test_no_request_makes_a_server_error(live):
    schema = schemathesis.openapi.from_url(f"{live}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def no_server_error(case):
            case.call_and_validate(base_url=live, checks=[not_a_server_error], timeout=30)

        no_server_error()


def test_the_schema_covers_every_endpoint(live):
    paths = httpx.get(f"{live}/openapi.json").json()["paths"]
    assert {"/v1/predict", "/v1/explain", "/v1/model", "/healthz", "/readyz", "/metrics", "/", "/v1/models",
            "/v1/models/{spec}", "/v1/models/{spec}/predict", "/v1/models/{spec}/explain",
            "/v1/models/{name}/load"} <= set(paths)
    assert httpx.get(f"{live}/healthz").status_code == 200
