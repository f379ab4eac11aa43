"""Round pages: the counts a round stands on, the jobs it queued, one "Rounds" link, numbers that read
plainly (KL never below zero, margins that differ from zero), charts without empty axes, the leaderboard."""

import pytest
from django.urls import reverse
from matplotlib.ticker import MaxNLocator
from rest_framework.test import APIClient

from generation import services as generation_services
from generation.models import ModelVersion
from labeling.models import Split
from training import plots, services
from training.models import RoundMetric, RoundStatus, TrainingRound

pytestmark = pytest.mark.django_db


def texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


@pytest.fixture
def started_round(campaign, pairs, django_capture_on_commit_callbacks) -> TrainingRound:
    campaign.annotations_per_pair = 2
    campaign.save()
    for i in range(3):
        pairs.pair(votes=["a", "a"], text=f"train {i}")
    pairs.pair(votes=["a"], text="half judged")
    pairs.pair(votes=["a", "a"], text="held out", split=Split.HELDOUT)
    with django_capture_on_commit_callbacks():  # queued, never run
        training_round = services.round_start(campaign=campaign)
    return training_round


def test_round_page_shows_counts_at_start_and_at_export_and_links_the_jobs_it_queued(
    client, admin_user, campaign, pairs, tiny_policy, started_round
):
    pairs.pair(votes=["b", "b"], text="judged after the start")
    # What _round_train records once it has exported (the worker itself is not needed to show the page).
    started_round.evidence["export"] = services._evidence(
        campaign=campaign, config=services.RoundConfig.from_dict(started_round.config)
    )
    regenerate = generation_services.generation_job_create(campaign=campaign, policy=tiny_policy)
    started_round.eval_results = {"queued_jobs": {"regenerate": regenerate.pk}}
    started_round.save()
    client.force_login(admin_user)

    response = client.get(reverse("training:round", args=[started_round.pk]))

    table = response.context["evidence_table"]
    train = {label: cells for label, cells in table["sections"][0]["rows"]}
    assert table["columns"] == ["at start", "at export"]
    assert train["settled preferences (the rows the round uses)"] == [3, 4]
    assert train["dropped: unsettled (fewer votes than the campaign's N)"] == [1, 1]
    page = response.content.decode()
    assert "What the round stands on" in page and "at export" in page
    assert reverse("generation:job", args=[regenerate.pk]) in page and "no A/B job" in page
    assert page.count(">Rounds</a>") == 1  # the navigation's, not a second one from the page


def test_round_page_never_shows_kl_below_zero_and_gives_small_margins_their_digits(
    client, admin_user, started_round
):
    started_round.status = RoundStatus.GATED
    started_round.eval_results = {"pairs": 60, "samples": 8, "accuracy": 0.5, "margin": 0.00042, "kl": -0.0123}
    started_round.save()
    client.force_login(admin_user)

    page = client.get(reverse("training:round", args=[started_round.pk])).content.decode()
    index = client.get(reverse("training:rounds")).content.decode()

    assert "0.000420 (n = 60)" in page and "0.0000 (n = 8 samples)" in page and "shown as 0" in page
    assert "<td>0.0000<span" in index and "estimate, -0.0123, is below 0" in index and "0.000420" in index
    assert "0.500 <span class=\"muted\">(n = 60)</span>" in index


def test_curves_of_a_round_that_has_logged_nothing_say_no_data_yet():
    figure = plots.round_curves_figure([])

    assert all(texts(ax) == [plots.NO_DATA] for ax in figure.axes)


def test_curves_show_plain_loss_values_on_whole_number_steps(started_round):
    metrics = [
        RoundMetric(round=started_round, step=step, values={"loss": 0.69314 + step * 1e-6}) for step in (1, 2, 3)
    ]

    loss = plots.round_curves_figure(metrics).axes[0]

    assert texts(loss) == [] and loss.yaxis.get_major_formatter().get_useOffset() is False
    assert isinstance(loss.xaxis.get_major_locator(), MaxNLocator)
    assert all(float(t).is_integer() for t in loss.get_xticks())
    plots._png(loss.figure)  # it draws


def test_cross_round_chart_clips_kl_at_zero_with_a_note_and_has_whole_round_ticks(campaign, tiny_policy):
    rounds = [
        TrainingRound(
            campaign=campaign,
            number=n,
            status=RoundStatus.GATED,
            eval_results={"accuracy": 0.5, "kl": kl, "margin": 1e-4},
        )
        for n, kl in ((1, -0.02), (2, 0.5))
    ]

    figure = plots.campaign_rounds_figure(rounds)

    kl_axis = figure.axes[3]
    assert plots.KL_CLIPPED_NOTE in kl_axis.get_title()
    assert min(kl_axis.collections[0].get_offsets()[:, 1]) == 0.0
    assert kl_axis.get_ylim()[0] == 0
    assert all(float(t).is_integer() for t in figure.axes[0].get_xticks())
    assert texts(figure.axes[2]) == [plots.NO_DATA]  # no round reported a sample length


def test_cross_round_chart_of_a_single_round_has_one_whole_round_tick(campaign):
    rounds = [TrainingRound(campaign=campaign, number=1, status=RoundStatus.PROMOTED, eval_results={"accuracy": 0.6})]

    accuracy = plots.campaign_rounds_figure(rounds).axes[0]

    assert [t for t in accuracy.get_xticks() if 0.5 <= t <= 1.5] == [1.0]


def test_cross_round_chart_while_the_first_round_runs_says_no_data_yet(campaign, started_round):
    figure = plots.campaign_rounds_figure([started_round])

    assert all(texts(ax) == [plots.NO_DATA] for ax in figure.axes)


def test_rounds_page_and_api_show_the_leaderboard(
    client, admin_user, alice, campaign, pairs, tiny_policy, started_round
):
    later = ModelVersion.objects.create(name="round-1 policy", base_path=tiny_policy.base_path, parent=tiny_policy)
    for i in range(4):
        pairs.pair(votes=["b"], policy_b=later, text=f"ab {i}", split=Split.HELDOUT)
    client.force_login(admin_user)
    url = reverse("training-api:leaderboard", args=[campaign.pk])

    page = client.get(reverse("training:rounds")).content.decode()
    board = client.get(url).json()
    api = APIClient()
    api.force_authenticate(alice)
    refused = api.get(url)

    assert "Leaderboard" in page and "round-1 policy" in page and "4 human A/B judgments" in page
    assert board["judgments"] == 4 and [r["name"] for r in board["ratings"]] == ["round-1 policy", "tiny-base"]
    assert board["ratings"][1]["rating"] == 1000.0 and board["anchor"]["version_id"] == tiny_policy.pk
    assert refused.status_code == 403
    schema = client.get("/api/schema/").content.decode()
    assert "/api/training/campaigns/{id}/leaderboard/" in schema
