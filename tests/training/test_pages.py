import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from training import services
from training.models import RoundMetric, RoundStatus, TrainingRound

pytestmark = pytest.mark.django_db

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def finished_rounds(campaign, tiny_policy) -> list[TrainingRound]:
    """Two rounds as a worker leaves them, with curves and evaluations, written directly."""
    rounds = []
    for number, (status, accuracy) in enumerate([(RoundStatus.PROMOTED, 0.75), (RoundStatus.GATED, 0.5)], start=1):
        training_round = TrainingRound.objects.create(
            campaign=campaign,
            number=number,
            start_version=tiny_policy,
            reference_version=tiny_policy,
            status=status,
            progress=1.0,
            eval_results={
                "pairs": 4,
                "accuracy": accuracy,
                "margin": 0.1,
                "mean_length": 12.0,
                "kl": 0.02,
                "samples": 4,
                "gate": {"passed": status == RoundStatus.PROMOTED, "reason": "because"},
            },
            log_tail="step 1: loss=0.69\n<script>alert('log')</script>",
        )
        for step in (1, 2, 3):
            RoundMetric.objects.create(
                round=training_round,
                step=step,
                epoch=step / 3,
                values={
                    "loss": 0.7 - 0.1 * step,
                    "rewards/chosen": 0.1 * step,
                    "rewards/rejected": -0.1 * step,
                    "rewards/margins": 0.2 * step,
                    "rewards/accuracies": 1.0,
                    "logps/chosen": -30.0,
                    "logps/rejected": -40.0,
                },
            )
        rounds.append(training_round)
    return rounds


def test_rounds_page_lists_rounds_with_the_cross_round_chart(client, admin_user, campaign, finished_rounds):
    client.force_login(admin_user)

    page = client.get(reverse("training:rounds"))
    chart = client.get(reverse("training:campaign-rounds", args=[campaign.pk]))

    assert page.status_code == 200
    assert reverse("training:round", args=[finished_rounds[0].pk]) in page.content.decode()
    assert reverse("training:campaign-rounds", args=[campaign.pk]) in page.content.decode()
    assert chart["Content-Type"] == "image/png" and chart.content.startswith(PNG)


def test_round_page_shows_curves_and_escapes_the_log(client, admin_user, finished_rounds):
    client.force_login(admin_user)
    training_round = finished_rounds[0]

    page = client.get(reverse("training:round", args=[training_round.pk]))
    curves = client.get(reverse("training:round-curves", args=[training_round.pk]))

    html = page.content.decode()
    assert "<script>alert('log')</script>" not in html
    assert "&lt;script&gt;alert(&#x27;log&#x27;)&lt;/script&gt;" in html
    assert "0.750" in html
    assert curves.content.startswith(PNG)


def test_round_status_json_feeds_the_progress_bar(client, admin_user, campaign, tiny_policy):
    training_round = services.round_start(campaign=campaign)
    TrainingRound.objects.filter(pk=training_round.pk).update(
        status=RoundStatus.RUNNING, progress=0.25, log_tail="step 1"
    )
    client.force_login(admin_user)

    data = client.get(reverse("training:round-status", args=[training_round.pk])).json()

    assert data == {
        "status": "running",
        "status_label": "Training",
        "active": True,
        "progress": 0.25,
        "log_tail": "step 1",
        "metrics": 0,
    }


def test_round_pages_are_for_staff_only(client, alice, finished_rounds):
    client.force_login(alice)

    for url in (reverse("training:rounds"), reverse("training:round", args=[finished_rounds[0].pk])):
        response = client.get(url)
        assert response.status_code == 403 and "This page is for staff" in response.content.decode()


def test_cancel_button_cancels_an_active_round(client, admin_user, campaign, tiny_policy):
    training_round = services.round_start(campaign=campaign)
    client.force_login(admin_user)

    response = client.post(reverse("training:round-cancel", args=[training_round.pk]))

    assert response.status_code == 302
    training_round.refresh_from_db()
    assert training_round.status == RoundStatus.CANCELLED


def test_round_api_starts_shows_and_cancels_rounds(admin_user, alice, campaign, tiny_policy):
    client = APIClient()
    client.force_authenticate(alice)
    assert client.post("/api/training/rounds/", {"campaign": campaign.pk}, format="json").status_code == 403
    client.force_authenticate(admin_user)

    started = client.post("/api/training/rounds/", {"campaign": campaign.pk, "config": {"beta": 0.2}}, format="json")
    again = client.post("/api/training/rounds/", {"campaign": campaign.pk}, format="json")
    detail = client.get(f"/api/training/rounds/{started.json()['id']}/")
    cancelled = client.post(f"/api/training/rounds/{started.json()['id']}/cancel/")
    cancelled_again = client.post(f"/api/training/rounds/{started.json()['id']}/cancel/")

    assert started.status_code == 201 and started.json()["config"]["beta"] == 0.2
    assert again.status_code == 409
    assert detail.json()["status"] == "queued" and detail.json()["metrics"] == []
    assert detail.json()["evidence"]["start"]["train"]["settled"] == 0  # what it stood on when started
    assert cancelled.json()["status"] == "cancelled"
    assert cancelled_again.status_code == 409


def test_round_api_rejects_a_bad_config(admin_user, campaign):
    client = APIClient()
    client.force_authenticate(admin_user)

    response = client.post("/api/training/rounds/", {"campaign": campaign.pk, "config": {"beta": -1}}, format="json")

    assert response.status_code == 400
    assert "beta must be positive" in response.json()["config"][0]


def test_admin_lists_rounds_and_cancels_from_the_changelist(client, admin_user, campaign, tiny_policy):
    training_round = services.round_start(campaign=campaign)
    client.force_login(admin_user)

    listing = client.get(reverse("admin:training_traininground_changelist"))
    client.post(
        reverse("admin:training_traininground_changelist"),
        {"action": "cancel", "_selected_action": [training_round.pk]},
    )

    assert listing.status_code == 200
    training_round.refresh_from_db()
    assert training_round.status == RoundStatus.CANCELLED


def test_start_form_says_what_a_round_would_stand_on_and_lands_on_the_round_page(
    client, admin_user, campaign, pairs, settings, django_capture_on_commit_callbacks
):
    settings.TRAINING_GATE_MIN_HELDOUT_PAIRS = 50
    campaign.annotations_per_pair = 2
    campaign.save()
    for i in range(16):
        pairs.pair(votes=["a", "a"], text=f"train {i}")
    pairs.pair(votes=["a"], text="waiting for its second vote")
    pairs.pair(votes=["tie", "tie"], text="a tie")
    pairs.pair(votes=["a", "b"], text="split")
    pairs.pair(votes=["b", "b"], sources=["simulated", "simulated"], text="judged by scripts", split="heldout")
    for i in range(2):
        pairs.pair(votes=["a", "a"], text=f"held out {i}", split="heldout")
    client.force_login(admin_user)
    changelist = reverse("admin:labeling_campaign_changelist")
    action = {"action": "start_dpo_round", "_selected_action": [campaign.pk]}

    response = client.post(changelist, action)

    page = response.content.decode()
    (shown, table, counts), = response.context["evidence"]
    can_decide = counts["gate_can_decide"]
    train, heldout = ({label: cells for label, cells in section["rows"]} for section in table["sections"])
    assert shown == campaign and table["columns"] == ["now"] and not can_decide
    assert train["settled preferences (the rows the round uses)"] == [16]
    assert train["dropped: unsettled (fewer votes than the campaign's N)"] == [1]
    assert train["dropped: judged a tie or both bad"] == [1]
    assert train["dropped: votes split evenly between a and b"] == [1]
    assert train["comparisons in all"] == [19]
    assert heldout["settled preferences (the rows the round uses)"] == [2]
    assert heldout["settled on simulated votes alone"] == [1] and heldout["dropped: no counted vote yet"] == [1]
    assert '<p class="errornote" data-gate-warning data-heldout="2">' in page  # shown: 2 of the 50 needed
    assert "<span data-gate-min>50</span> held-out pairs the gate needs (2 settled)" in page
    assert "will not be promoted" in page
    assert "A/B share" in page and "Queue a generation job with the new policy once promoted." in page

    form = client.post(changelist, action).context["form"]
    config = {name: field.initial for name, field in form.fields.items() if field.initial is not None}
    config["lora"] = "on"
    # Sent back with an error, the form's warning counts against the minimum the admin typed: 2 settled meet 2.
    resent = client.post(changelist, {**action, **config, "gate_min_heldout_pairs": 2, "beta": -1, "apply": "1"})
    (_, _, counts), = resent.context["evidence"]
    assert resent.context["form"].errors and counts["gate_can_decide"] and counts["min_heldout_pairs"] == 2
    assert '<p class="errornote" data-gate-warning data-heldout="2" hidden>' in resent.content.decode()
    with django_capture_on_commit_callbacks():  # queued, not run: the page is what this test is about
        response = client.post(changelist, {**action, **config, "apply": "1"})
    training_round = TrainingRound.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("training:round", args=[training_round.pk])
    assert training_round.config["gate_min_heldout_pairs"] == 50
    assert training_round.config["aggregation"]["sources"] == ["human"]


def test_start_form_can_take_imported_judgments_too(client, admin_user, campaign, pairs, django_capture_on_commit_callbacks):
    pairs.pair(votes=["a"], sources=["imported"], text="from a data set")
    client.force_login(admin_user)
    changelist = reverse("admin:labeling_campaign_changelist")
    action = {"action": "start_dpo_round", "_selected_action": [campaign.pk]}
    form = client.post(changelist, action).context["form"]
    config = {name: field.initial for name, field in form.fields.items() if field.initial is not None}

    with django_capture_on_commit_callbacks():
        client.post(changelist, {**action, **config, "sources": ["human", "imported"], "apply": "1"})

    assert TrainingRound.objects.get().config["aggregation"]["sources"] == ["human", "imported"]
