"""The labeling hot path's cost, counted rather than timed: SQL statements per API request.

Each statement is a round trip and, on PostgreSQL, a parse/plan/execute of its
own; the load bench (bench/labeling_load.py) measures the CPU they cost. These
counts include the token lookup and leave out transaction control (BEGIN, COMMIT,
savepoints). A change that adds a statement to next, submit or /me/ should show up here.
"""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from labeling import services
from tests.labeling.factories import make_pairs

pytestmark = pytest.mark.django_db

# Writes that PostgreSQL takes as one statement (data-modifying CTEs) and SQLite as three.
SUBMIT_WRITES = 1 if connection.vendor == "postgresql" else 3
# The annotator's row lock (SQLite has one writer at a time and takes none).
LOCK = 1 if connection.features.has_select_for_update else 0
TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE SAVEPOINT")


@pytest.fixture
def alice_api(alice) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {services.api_token_issue(user=alice).key}")
    return client


def counted(call) -> tuple[object, list[str]]:
    with CaptureQueriesContext(connection) as queries:
        response = call()
    statements = [q["sql"] for q in queries.captured_queries if not q["sql"].startswith(TRANSACTION_CONTROL)]
    return response, statements


def listed(statements: list[str]) -> str:
    return "\n".join(sql[:100] for sql in statements)


def next_pair(client: APIClient, campaign, **body):
    return client.post(f"/api/labeling/campaigns/{campaign.pk}/next/", body, format="json")


def test_next_claims_and_serves_a_pair_in_six_statements(campaign, alice_api):
    make_pairs(campaign, 3)
    response, statements = counted(lambda: next_pair(alice_api, campaign))
    assert response.status_code == 200 and response.json()["left"]["text"]
    # Token, campaign, the annotator's lock, their held lease, the claim (with the pair's texts), the lease.
    assert len(statements) == 5 + LOCK, listed(statements)


def test_next_serves_a_held_pair_with_its_texts_in_the_lookup(campaign, alice_api):
    make_pairs(campaign, 3)
    first = next_pair(alice_api, campaign).json()
    response, statements = counted(lambda: next_pair(alice_api, campaign))
    assert response.json() == first
    # Token, campaign, the annotator's lock, their held lease with its texts.
    assert len(statements) == 3 + LOCK, listed(statements)


def test_submit_stores_a_judgment_in_three_statements_on_postgresql(campaign, alice_api):
    make_pairs(campaign, 3)
    pair = next_pair(alice_api, campaign).json()
    response, statements = counted(
        lambda: alice_api.post(
            f"/api/labeling/assignments/{pair['assignment_id']}/submit/", {"choice": "left", "time_ms": 1200}, format="json"
        )
    )
    assert response.status_code == 201 and response.json()["created"] is True
    # Token, the locked assignment with its pair and campaign rules, the writes.
    assert len(statements) == 2 + SUBMIT_WRITES, listed(statements)


def test_my_stats_cost_the_same_few_statements_however_many_pairs_are_left(campaign, alice_api):
    make_pairs(campaign, 30)
    response, statements = counted(lambda: alice_api.get(f"/api/labeling/campaigns/{campaign.pk}/me/"))
    assert response.status_code == 200 and response.json()["campaign_needed"] == 30
    # Token, campaign, my judgments (all and today's), my held leases, the pairs left to me (counted up to
    # a cap), and whether an open pair still needs judgments (one row found).
    assert len(statements) == 6, listed(statements)
