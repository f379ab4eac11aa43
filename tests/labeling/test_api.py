"""The REST API as the simulated annotators use it: token login, next, submit, skip, stats."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from labeling import selectors, services
from labeling.models import Assignment, Choice, Judgment
from tests.labeling.factories import make_pairs

pytestmark = pytest.mark.django_db


def token_client(username: str, password: str) -> APIClient:
    client = APIClient()
    response = client.post("/api/auth/token/", {"username": username, "password": password}, format="json")
    assert response.status_code == 200, response.content
    client.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
    return client


@pytest.fixture
def alice_api(alice) -> APIClient:
    return token_client("alice", "alice-password-1")


@pytest.fixture
def bob_api(bob) -> APIClient:
    return token_client("bob", "bob-password-1")


def next_pair(client, campaign, **body):
    return client.post(f"/api/labeling/campaigns/{campaign.pk}/next/", body, format="json")


def submit(client, assignment_id, **body):
    return client.post(f"/api/labeling/assignments/{assignment_id}/submit/", body, format="json")


def test_next_returns_the_pair_as_shown_with_the_allowed_choices(campaign, alice_api):
    campaign.allow_both_bad = False
    campaign.save()
    make_pairs(campaign, texts=("Tides come from the **moon**.", "Ask your teacher."), prompt_text="Why tides?")
    response = next_pair(alice_api, campaign)
    assert response.status_code == 200
    pair = response.json()
    assignment = Assignment.objects.get(pk=pair["assignment_id"])
    a, b = "Tides come from the **moon**.", "Ask your teacher."
    assert (pair["left"]["text"], pair["right"]["text"]) == ((a, b) if assignment.left_is_a else (b, a))
    assert "<strong>moon</strong>" in (pair["left"] if assignment.left_is_a else pair["right"])["html"]
    assert pair["prompt"] == {"text": "Why tides?", "html": "<p>Why tides?</p>", "messages": None}
    assert pair["choices"] == ["left", "right", "tie"]
    assert pair["strength_scale"] == "three" and pair["rationale_required"] is False


def test_chat_prompts_come_as_turns(campaign, alice_api):
    turns = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi *there*"}]
    make_pairs(campaign, messages=turns)
    messages = next_pair(alice_api, campaign).json()["prompt"]["messages"]
    assert [(m["role"], m["text"]) for m in messages] == [("system", "Be brief."), ("user", "Hi *there*")]
    assert messages[1]["html"] == "<p>Hi <em>there</em></p>"


def test_gold_pairs_look_exactly_like_regular_ones(campaign, alice_api, bob_api):
    campaign.gold_rate = 1.0
    campaign.save()
    make_pairs(campaign)
    make_pairs(campaign, gold_choice="a")
    gold = next_pair(alice_api, campaign).json()
    campaign.gold_rate = 0.0
    campaign.save()
    regular = next_pair(bob_api, campaign).json()
    is_gold = lambda pair: Assignment.objects.get(pk=pair["assignment_id"]).comparison.is_gold  # noqa: E731
    assert is_gold(gold) and not is_gold(regular)
    shape = lambda pair: {k: sorted(v) if isinstance(v, dict) else type(v) for k, v in pair.items()}  # noqa: E731
    assert shape(gold) == shape(regular) and "gold" not in str(gold)


def _shape(value):
    """The value's structure: dict keys and value types, recursively (a list by its first item)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(value[0])] if value else []
    return type(value).__name__


def _moved(before, after):
    """How a /me/ field changed: a difference for numbers, (before, after) for a state."""
    return after - before if isinstance(before, (int, float)) else (before, after)


def test_nothing_an_annotator_gets_back_tells_a_gold_pair_from_a_regular_one(campaign, alice_api):
    campaign.gold_rate = 1.0  # gold first while regular work is left: alice gets the gold pair, then a regular one
    campaign.save()
    for gold_choice in ("", "", "a"):
        make_pairs(campaign, gold_choice=gold_choice)
    me = lambda: alice_api.get(f"/api/labeling/campaigns/{campaign.pk}/me/")  # noqa: E731
    seen = {}
    for kind in ("gold", "regular"):
        before = me().json()
        leased = next_pair(alice_api, campaign)
        after_lease = me().json()
        submitted = submit(alice_api, leased.json()["assignment_id"], choice="left", strength=2, time_ms=900)
        after_submit = me().json()
        seen[kind] = {
            "next": (leased.status_code, leased.json()),
            "submit": (submitted.status_code, submitted.json()),
            "lease moves me by": {k: _moved(before[k], after_lease[k]) for k in before},
            "submit moves me by": {k: _moved(after_lease[k], after_submit[k]) for k in before},
        }
    gold, regular = seen["gold"], seen["regular"]
    assert Assignment.objects.get(pk=gold["next"][1]["assignment_id"]).comparison.is_gold
    assert not Assignment.objects.get(pk=regular["next"][1]["assignment_id"]).comparison.is_gold
    for response in ("next", "submit"):
        (gold_status, gold_body), (regular_status, regular_body) = gold[response], regular[response]
        assert gold_status == regular_status and _shape(gold_body) == _shape(regular_body)
        # Every field but the ids, the lease's end and the side a was shown on (random per lease) is the same.
        varying = {"assignment_id", "judgment_id", "expires_at", "stored_choice", "left", "right"}
        assert {k: v for k, v in gold_body.items() if k not in varying} == {
            k: v for k, v in regular_body.items() if k not in varying
        }
        assert "gold" not in str(gold_body)
    assert sorted((gold["next"][1]["left"]["text"], gold["next"][1]["right"]["text"])) == sorted(
        (regular["next"][1]["left"]["text"], regular["next"][1]["right"]["text"])
    )
    # The stats move the same way after a gold pair as after a regular one: on lease and on submit.
    assert gold["lease moves me by"] == regular["lease moves me by"]
    assert gold["submit moves me by"] == regular["submit moves me by"]
    assert gold["submit moves me by"]["campaign_done"] == 1


def test_next_answers_204_when_nothing_is_left(campaign, alice_api):
    assert next_pair(alice_api, campaign).status_code == 204


def test_submit_maps_the_shown_side_to_a_or_b_and_a_repeat_returns_the_same_result(campaign, alice_api):
    make_pairs(campaign)
    pair = next_pair(alice_api, campaign).json()
    first = submit(alice_api, pair["assignment_id"], choice="left", strength=3, time_ms=1500)
    again = submit(alice_api, pair["assignment_id"], choice="left", strength=3, time_ms=1500)
    assert (first.status_code, again.status_code) == (201, 200)
    left_is_a = Assignment.objects.get(pk=pair["assignment_id"]).left_is_a
    expected = Choice.A if left_is_a else Choice.B
    body = first.json()
    assert body == {**again.json(), "created": True}
    assert (body["choice"], body["stored_choice"], body["strength"]) == ("left", expected, 3)
    judgment = Judgment.objects.get()
    assert (judgment.choice, judgment.strength, judgment.time_ms) == (expected, 3, 1500)


def test_submit_on_an_expired_lease_gets_a_clear_409_and_the_next_pair(campaign, alice_api):
    make_pairs(campaign, 2)
    pair = next_pair(alice_api, campaign).json()
    Assignment.objects.filter(pk=pair["assignment_id"]).update(leased_until=timezone.now() - timedelta(seconds=1))
    response = submit(alice_api, pair["assignment_id"], choice="right")
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "lease_expired" and "not stored" in body["detail"]
    assert body["next"]["assignment_id"] not in (None, pair["assignment_id"])
    assert not Judgment.objects.exists()


def test_invalid_choices_are_400(campaign, alice_api):
    campaign.allow_tie = False
    campaign.save()
    make_pairs(campaign)
    pair = next_pair(alice_api, campaign).json()
    assert submit(alice_api, pair["assignment_id"], choice="a").status_code == 400
    response = submit(alice_api, pair["assignment_id"], choice="tie")
    assert response.status_code == 400 and response.json()["code"] == "invalid_judgment"
    assert submit(alice_api, pair["assignment_id"], choice="left", strength=7).status_code == 400
    assert not Judgment.objects.exists()


def test_annotators_reach_only_their_own_assignments(campaign, alice_api, bob_api):
    make_pairs(campaign, 2)
    pair = next_pair(alice_api, campaign).json()
    assert submit(bob_api, pair["assignment_id"], choice="left").status_code == 404
    assert bob_api.post(f"/api/labeling/assignments/{pair['assignment_id']}/skip/").status_code == 404
    assert Assignment.objects.get(pk=pair["assignment_id"]).state == "leased"


def test_skip_then_next_serves_another_pair(campaign, alice_api):
    make_pairs(campaign, 2)
    first = next_pair(alice_api, campaign).json()
    response = alice_api.post(f"/api/labeling/assignments/{first['assignment_id']}/skip/")
    assert response.json() == {"assignment_id": first["assignment_id"], "state": "skipped"}
    assert next_pair(alice_api, campaign).json()["assignment_id"] != first["assignment_id"]


def test_my_stats_count_today_and_the_campaign(campaign, alice_api):
    campaign.annotations_per_pair = 2
    campaign.save()
    make_pairs(campaign, 3)
    make_pairs(campaign, gold_choice="b")  # never served: the campaign mixes in no gold
    pair = next_pair(alice_api, campaign).json()
    submit(alice_api, pair["assignment_id"], choice="tie")
    stats = alice_api.get(f"/api/labeling/campaigns/{campaign.pk}/me/").json()
    assert (stats["mine_today"], stats["mine_total"]) == (1, 1)
    # Alice's share: her one judgment, and the two pairs she has not seen yet.
    assert (stats["campaign_done"], stats["campaign_needed"]) == (1, 3)
    assert stats["campaign_fraction"] == pytest.approx(1 / 3)


def test_my_stats_count_the_pairs_left_up_to_a_cap_and_say_there_are_more(campaign, alice_api, monkeypatch):
    monkeypatch.setattr(selectors, "PAIRS_LEFT_COUNTED", 2)
    make_pairs(campaign, 4)
    stats = lambda: alice_api.get(f"/api/labeling/campaigns/{campaign.pk}/me/").json()  # noqa: E731
    assert (stats()["campaign_needed"], stats()["campaign_more"]) == (2, True)
    for _ in range(2):
        submit(alice_api, next_pair(alice_api, campaign).json()["assignment_id"], choice="left")
    # Two judged, two left: exactly the cap is counted exactly.
    assert (stats()["campaign_done"], stats()["campaign_needed"], stats()["campaign_more"]) == (2, 4, False)


def test_campaign_progress_is_for_staff_only(campaign, alice_api, admin_user):
    make_pairs(campaign, 2)
    pair = next_pair(alice_api, campaign).json()
    submit(alice_api, pair["assignment_id"], choice="left")
    url = f"/api/labeling/campaigns/{campaign.pk}/progress/"
    assert alice_api.get(url).status_code == 403
    staff = APIClient()
    staff.force_authenticate(admin_user)
    body = staff.get(url).json()
    assert (body["judgments"], body["done"], body["needed"], body["complete"]) == (1, 1, 2, 1)
    assert [a["username"] for a in body["annotators"]] == ["alice"]


@pytest.mark.parametrize("authorization", [None, "Token " + "0" * 40, "Token", "Bearer abc"])
def test_a_missing_or_invalid_token_is_a_401_challenge(campaign, authorization):
    client = APIClient()
    if authorization:
        client.credentials(HTTP_AUTHORIZATION=authorization)
    response = next_pair(client, campaign)
    assert response.status_code == 401 and response["WWW-Authenticate"] == "Token"
    assert not Assignment.objects.exists()


def test_a_wrong_token_or_a_deactivated_annotator_is_refused(campaign, alice, alice_api):
    make_pairs(campaign)
    stranger = APIClient()
    stranger.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    response = next_pair(stranger, campaign)
    assert response.status_code == 401 and response.json()["detail"] == "Invalid token."
    alice.is_active = False
    alice.save()
    response = next_pair(alice_api, campaign)
    assert response.status_code == 401 and response.json()["detail"] == "User inactive or deleted."
    assert not Assignment.objects.exists()


def test_a_token_ends_when_the_password_changes_and_logging_in_again_gives_a_new_one(campaign, alice, alice_api):
    make_pairs(campaign)
    old_key = Token.objects.get(user=alice).key
    alice.set_password("alice-password-2")  # Django's own path (admin form, changepassword) does just this
    alice.save()
    response = next_pair(alice_api, campaign)
    assert response.status_code == 401 and "password changed" in response.json()["detail"]
    fresh = token_client("alice", "alice-password-2")
    assert Token.objects.get(user=alice).key != old_key
    assert next_pair(fresh, campaign).status_code == 200


def test_a_token_ends_after_its_lifetime_and_logging_in_replaces_it(campaign, alice, alice_api, settings):
    make_pairs(campaign)
    settings.API_TOKEN_LIFETIME_S = 3600
    Token.objects.filter(user=alice).update(created=timezone.now() - timedelta(seconds=3599))
    assert next_pair(alice_api, campaign).status_code == 200
    old_key = Token.objects.get(user=alice).key
    Token.objects.filter(user=alice).update(created=timezone.now() - timedelta(seconds=3601))
    response = next_pair(alice_api, campaign)
    assert response.status_code == 401 and "expired" in response.json()["detail"]
    # The client logs in again with its stale token still in its headers, as a script would.
    response = alice_api.post("/api/auth/token/", {"username": "alice", "password": "alice-password-1"})
    assert response.status_code == 200 and response.json()["token"] != old_key
    alice_api.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
    assert next_pair(alice_api, campaign).status_code == 200


def test_logging_in_again_returns_the_token_still_in_use(alice):
    right = {"username": "alice", "password": "alice-password-1"}
    first = APIClient().post("/api/auth/token/", right).json()["token"]
    assert APIClient().post("/api/auth/token/", right).json()["token"] == first


def test_a_token_issued_outside_the_token_endpoint_is_not_accepted(campaign, alice):
    Token.objects.create(user=alice, key="f" * 40)  # e.g. DRF's drf_create_token: not tied to the password
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token " + "f" * 40)
    assert next_pair(client, campaign).status_code == 401
    assert services.api_token_issue(user=alice).key != "f" * 40  # and logging in replaces it


def test_the_labeling_page_session_with_its_csrf_token_still_works(campaign, alice):
    make_pairs(campaign)
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    client.get("/")  # the page sets the CSRF cookie its JS sends back
    response = client.post(
        f"/api/labeling/campaigns/{campaign.pk}/next/", {}, format="json",
        HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value,
    )  # fmt: skip
    assert response.status_code == 200 and Assignment.objects.filter(annotator=alice).count() == 1


def test_a_closed_campaign_is_not_found(campaign, alice_api):
    make_pairs(campaign)
    campaign.is_active = False
    campaign.save()
    response = next_pair(alice_api, campaign)
    assert response.status_code == 404
    assert not Assignment.objects.exists()


def test_session_clients_need_the_csrf_token(campaign, alice):
    make_pairs(campaign)
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    assert next_pair(client, campaign).status_code == 403
    assert not Assignment.objects.exists()


def test_token_login_is_locked_after_repeated_failures_with_a_json_code(alice, settings):
    settings.AXES_FAILURE_LIMIT = 3
    client = APIClient()
    wrong = {"username": "alice", "password": "guess"}
    assert [client.post("/api/auth/token/", wrong).status_code for _ in range(3)] == [400, 400, 400]
    right = {"username": "alice", "password": "alice-password-1"}
    response = client.post("/api/auth/token/", right)
    assert response.status_code == 429 and response.json()["code"] == "locked_out"
    assert "Too many failed logins" in response.json()["detail"]
    assert not Token.objects.exists()


def test_the_schema_documents_the_labeling_api(client, alice):
    client.force_login(alice)
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    paths = schema["paths"]
    for path in ("/api/auth/token/", "/api/labeling/campaigns/{id}/next/", "/api/labeling/assignments/{id}/submit/"):
        assert path in paths
    submit_in = schema["components"]["schemas"]["SubmitIn"]["properties"]["choice"]
    assert "left" in str(submit_in) and "sides shown" in str(submit_in)


def test_the_pair_payload_matches_its_documented_serializer(campaign, alice_api):
    from labeling.api import PairSerializer

    make_pairs(campaign, messages=[{"role": "user", "content": "Hi"}])
    pair = next_pair(alice_api, campaign).json()
    documented = PairSerializer(data=pair)
    assert documented.is_valid(), documented.errors
    assert set(pair) == set(PairSerializer().fields)


def test_campaign_state_tells_no_pairs_from_open_from_done(campaign, alice_api):
    def state() -> tuple[str, float]:
        stats = alice_api.get(f"/api/labeling/campaigns/{campaign.pk}/me/").json()
        return stats["campaign_state"], stats["campaign_fraction"]

    assert state() == ("no_pairs", 0.0)  # before generation: not "all done", and an empty bar
    make_pairs(campaign)
    assert state() == ("open", 0.0)
    submit(alice_api, next_pair(alice_api, campaign).json()["assignment_id"], choice="tie")
    assert state() == ("done", 1.0)
