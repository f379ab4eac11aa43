"""Bodies no endpoint can take answer 400 naming the problem, on every API endpoint, and store nothing."""

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from generation.models import GenerationJob
from labeling import services as labeling_services
from labeling.models import Assignment, Judgment
from tests.labeling.factories import make_pairs
from training.models import PreferenceSnapshot, TrainingRound

pytestmark = pytest.mark.django_db

BAD_BODIES = {
    "an array": ("[1, 2]", "must be a JSON object, not an array"),
    "null": ("null", "must be a JSON object, not null"),
    "a string": ('"hello"', "must be a JSON object, not a string"),
    "a lone surrogate": ('{"choice": "left", "username": "\\ud800"}', "field 'username' contains U+D800"),
    "a lone surrogate deep down": ('{"config": {"lora_target_modules": ["\\udfff"]}}', "'config.lora_target_modules[0]'"),
    "a lone surrogate in a key": ('{"\\ud800": 1}', "the key"),
    "a NUL": ('{"rationale": "a\\u0000"}', "field 'rationale' contains a NUL"),
    "1e400": ('{"after": 1e400, "time_ms": 1}', "field 'after' is not a finite number"),
    "a 40-digit integer": ('{"seed": 1' + "0" * 40 + "}", "field 'seed' is an integer beyond 64 bits"),
    "NaN": ('{"beta": NaN}', "JSON parse error"),
    "nesting 100 deep": ('{"config": ' + "[" * 100 + "]" * 100 + "}", "nested more than 64 levels deep"),
    "nesting 100,000 deep": ('{"config": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
}


def _operations(client: APIClient) -> list[tuple[str, str, bool]]:
    """Every (path, method, reads a body) the schema lists: new endpoints are covered as they appear."""
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    return [
        (path, method.upper(), "requestBody" in operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in ("post", "put", "patch")
    ]


@pytest.fixture
def clients(alice, admin_user) -> dict[str, APIClient]:
    cache.clear()  # failed token logins are counted in the cache
    made = {}
    for user in (alice, admin_user):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {labeling_services.api_token_issue(user=user).key}")
        made[user.username] = client
    return made


@pytest.mark.parametrize("kind", BAD_BODIES)
def test_a_body_no_endpoint_can_take_is_a_400_naming_the_problem_everywhere(campaign, alice, clients, kind):
    body, message = BAD_BODIES[kind]
    make_pairs(campaign, 2)
    leased = clients["alice"].post(f"/api/labeling/campaigns/{campaign.pk}/next/", {}, format="json").json()
    ids = {"campaigns": campaign.pk, "assignments": leased["assignment_id"]}
    operations = _operations(clients["ada"])
    assert len([op for op in operations if op[2]]) >= 6  # token, next, submit, snapshots, rounds, jobs
    for path, method, reads_body in operations:
        url = path.replace("{id}", str(ids.get(path.split("/")[3], 1)))
        # Annotator endpoints as the annotator, staff endpoints as staff, the token endpoint as anyone.
        client = APIClient() if "/auth/" in path else clients["ada" if "/labeling/" not in path else "alice"]
        response = client.generic(method, url, body, content_type="application/json")
        if reads_body:
            assert response.status_code == 400, (url, response.content)
            assert message in response.json()["detail"], (url, response.json())
        else:
            assert response.status_code < 500, (url, response.content)
    assert not Judgment.objects.exists()
    assert Assignment.objects.count() == 1  # the lease made above (skip, which reads no body, may close it)
    assert not (TrainingRound.objects.exists() or GenerationJob.objects.exists() or PreferenceSnapshot.objects.exists())


def test_unknown_api_paths_answer_json_not_found(clients):
    for url in ("/api/nothing/", "/api/labeling/campaigns/1/nothing/", "/api/labeling/campaigns"):
        response = clients["alice"].get(url)
        assert response.status_code == 404 and response.json() == {"detail": "Not found."}, url


def test_numbers_past_a_columns_range_are_refused_by_the_serializer(campaign, clients):
    # Within 64 bits, so the parser lets them through; the job's columns are 32-bit.
    for field in ("limit", "max_tokens"):
        response = clients["ada"].post("/api/generation/jobs/", {"campaign": campaign.pk, field: 2**31}, format="json")
        assert response.status_code == 400 and field in response.json(), response.content
    assert not GenerationJob.objects.exists()
