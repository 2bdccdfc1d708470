"""Property-based API test: schemathesis generates requests from the app's own OpenAPI schema, valid and
invalid (positive and negative modes), and sends them in-process over ASGI to the app serving the mini
fixture index.

Checked for every operation and input: no 5xx (schemathesis' ``not_a_server_error``), and every 4xx body is
JSON ``{"error": {"code": str, "message": str}}``. Bounded: 40 examples per operation
(``LSR_FUZZ_EXAMPLES`` to change).

The schema is read from an app built at import time (its OpenAPI document needs no index), because
``schemathesis.pytest.from_fixture`` does not work with pytest 9. The requests go to a second app that
serves the session fixture index: ``case.call(app=app)`` uses schemathesis' ASGI transport, which runs the
app's lifespan (that opens the ServiceState) before the first request of a test and shuts it down in the
test's teardown; ``test_lifespan_ran`` guards that.
"""

from __future__ import annotations

import os

import pytest

schemathesis = pytest.importorskip("schemathesis")
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from lsr.service import Settings, create_app  # noqa: E402

#: examples per operation; LSR_FUZZ_EXAMPLES=1000 for a deeper run
MAX_EXAMPLES = int(os.environ.get("LSR_FUZZ_EXAMPLES", "40"))


schema = schemathesis.openapi.from_dict(create_app(Settings(index_path="unused")).openapi())


@pytest.fixture(scope="module")
def app(mini_searcher):
    return create_app(Settings(index_path="unused"), searcher=mini_searcher)


def check_error_shape(response) -> None:
    """A 4xx answer is JSON {"error": {"code": str, "message": str}} (extra keys such as details allowed)."""
    if not 400 <= response.status_code < 500:
        return
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict), body
    assert isinstance(error.get("code"), str) and isinstance(error.get("message"), str), body


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_no_server_error_and_json_errors(case, app):
    response = case.call(app=app)
    case.validate_response(response, checks=[not_a_server_error])
    check_error_shape(response)


def test_lifespan_ran(app):
    """The fuzzed requests reach an app whose lifespan ran: /ready answers 200, not 503."""
    response = schema["/ready"]["GET"].Case().call(app=app)
    assert response.status_code == 200, response.text
    assert response.json()["documents"] == 30


@pytest.mark.parametrize("path, raw", [
    ("/search", rb'{"query": "bread \ud800"}'),
    ("/search/batch", rb'{"queries": ["bread", "\udfff yeast"]}'),
    ("/encode", rb'{"text": "\ud800"}'),
    ("/admin/reload", rb'{"index_path": "\ud800"}'),
])
def test_lone_surrogates_are_4xx(mini_searcher, path, raw):
    """JSON escapes can carry a lone surrogate, which schemathesis never generates (its strings are UTF-8):
    it is refused with 422 (it used to crash the tokenizer: 500) and echoed safely in error messages
    (rendering it used to fail: 500)."""
    app = create_app(Settings(index_path="unused", admin_token="secret"), searcher=mini_searcher)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post(path, content=raw, headers={"content-type": "application/json",
                                                    "authorization": "Bearer secret"})
    assert r.status_code in (409, 422), r.text
    check_error_shape(r)
