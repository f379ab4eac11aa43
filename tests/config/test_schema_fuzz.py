"""Schemathesis against the running app: every answer is documented and matches its schema.

Requests generated from /api/schema/ (valid ones, and invalid ones for the refusals) go
over HTTP to pytest-django's live server on the real database, each sent once with an
annotator's token and once with staff's: no 5xx, every status code listed for its
operation, every body valid against the schema.

Schemathesis's own pytest integration (schema.parametrize) does not run under pytest 9
(it sets a node attribute pytest 9 removed), so each operation's strategy is driven with
Hypothesis directly, as schemathesis documents for use outside its plugin.
"""

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from labeling import services as labeling_services
from tests.labeling.factories import make_pairs

# Per operation: enough to reach its 2xx and its error answers; the whole run takes about two minutes on two cores.
MAX_EXAMPLES = 20
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]
# Left out: they start long real work (a generation job on a GPU worker, a DPO round) once their transaction
# commits. Their refusals are tested in tests/config/test_api_input.py and tests/training/test_rounds.py.
STARTS_WORK = {("POST", "/api/generation/jobs/"), ("POST", "/api/training/rounds/")}


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_every_answer_is_documented_and_matches_the_schema(live_server, campaign, alice, admin_user, settings, tmp_path):
    settings.ARTIFACTS_DIR = tmp_path  # snapshot exports write here
    make_pairs(campaign, 3)
    make_pairs(campaign, gold_choice="a")
    held = labeling_services.assignment_next(campaign=campaign, annotator=alice)
    tokens = [labeling_services.api_token_issue(user=user).key for user in (alice, admin_user)]
    # Ids that exist, so the fuzz reaches past "not found" too (generated ids mostly find nothing).
    real_ids = {"campaigns": campaign.pk, "assignments": held.pk}
    # The schema needs a login, like the API it describes. Its first generation imports every view: give it time.
    schema = schemathesis.openapi.from_url(
        f"{live_server.url}/api/schema/?format=json", headers={"Authorization": f"Token {tokens[1]}"}, timeout=120
    )
    failures, exercised = [], []
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in STARTS_WORK:
            continue
        strategies = [operation.as_strategy(mode) for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]
        if "{id}" in operation.path:
            known = real_ids.get(operation.path.split("/")[3])
            if known:
                strategies.append(operation.as_strategy(path_parameters={"id": known}))

        @given(case=st.one_of(strategies))
        @hypothesis_settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case) -> None:
            for token in tokens:
                case.call_and_validate(headers={"Authorization": f"Token {token}"}, checks=CHECKS, timeout=60)

        try:
            fuzz()
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis's FailureGroup; all are reported together
            failures.append(f"{operation.label}: {exc}")
        exercised.append(operation.label)
    assert len(exercised) >= 12
    assert not failures, "\n\n".join(failures)
