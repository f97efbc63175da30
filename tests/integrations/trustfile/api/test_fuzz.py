"""The extractor API fuzzed from its own OpenAPI document (schemathesis): every operation, in-process on
the real app and a real PostgreSQL, with a fixed seed and a bounded number of cases per operation. Every
built-in check runs: no generated input may get a 5xx (the contract's 500 for a duplicate connection
aside), every answer must match the document (status, content type, headers, schema), valid input must
be accepted, invalid input and a missing or wrong token refused."""
from __future__ import annotations

import json
import time
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig

from integrations.trustfile.api import consent_state
from integrations.trustfile.api.app import create_app

TOKEN = "tf-to-extractor-test-token"
EXAMPLES_PER_OPERATION = 40

# Some rules a schema cannot say: the consent routes take a redirectUri TrustFile's contract leaves loose
# and a state sealed by us; a PUT's body connectionId must be the path's. A value the document allows may
# rightly be refused there: no positive_data_acceptance check for them. Unknown query parameters are
# ignored, as HTTP APIs do: no extra ones are generated. Seeded, so a run is the same every time.
CONFIG = SchemathesisConfig.from_str(f"""
seed = 20261201

[generation]
max-examples = {EXAMPLES_PER_OPERATION}
allow-extra-parameters = false
database = "none"

[auth.openapi."TrustFile token"]
bearer = "{TOKEN}"

[[operations]]
include-path = "{consent_state.CALLBACK_PATH}"
checks.positive_data_acceptance.enabled = false

[[operations]]
include-path = "/connections/{{connection_id}}/authentication"
checks.positive_data_acceptance.enabled = false

[[operations]]
include-path = "/connections/{{connection_id}}"
include-method = "PUT"
checks.positive_data_acceptance.enabled = false
""")

# Built at import, its database set per test below: schemathesis' fixture-based loader does not run under
# pytest 9, so the schema is loaded here, from the app, with the token.
APP = create_app(token=TOKEN, public_url="http://127.0.0.1/extractor")
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, config=CONFIG,
                                        headers={"Authorization": f"Bearer {TOKEN}"})
CASES: Counter[str] = Counter()


@pytest.fixture(scope="module", autouse=True)
def tally():
    """How many cases ran and for how long (`pytest -s` shows it)."""
    started = time.monotonic()
    yield
    print(f"\nschemathesis: {sum(CASES.values())} cases over {len(CASES)} operations in "
          f"{time.monotonic() - started:.1f} s")


@pytest.fixture(autouse=True)
def configured(db_url, clean_db, monkeypatch):
    """This module's clean database, and a QuickBooks OAuth client, so a consent for a fuzzed connection
    can start."""
    APP.state.database = db_url
    monkeypatch.setenv("AIRFLOW_CONN_QBO_DEFAULT", json.dumps({"conn_type": "qbo", "login": "client-id",
                                                               "password": "client-secret"}))


def no_server_error_but_the_contracts_duplicate(ctx, response, case):
    """not_a_server_error, except TrustFile's contract answer to creating a connection twice."""
    if (case.operation.label == "POST /connections" and response.status_code == 500
            and response.json() == {"message": "User already exists"}):
        return None
    return not_a_server_error(ctx, response, case)


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_requests_get_no_server_error_and_match_the_document(case):
    CASES[case.operation.label] += 1
    case.call_and_validate(excluded_checks=[not_a_server_error],
                           additional_checks=[no_server_error_but_the_contracts_duplicate])
