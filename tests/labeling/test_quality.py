"""Quality statistics on known data, and the staff dashboard that shows them."""

import pytest
from django.urls import reverse

from labeling import quality, services
from labeling.models import Assignment, Choice
from tests.labeling.factories import make_pairs


def test_krippendorff_alpha_matches_krippendorffs_worked_example():
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", nominal example:
    # 4 observers, 12 units, missing values; published alpha = 0.743.
    observers = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    units = [[v for v in unit if v is not None] for unit in zip(*observers)]
    assert quality.krippendorff_alpha_nominal(units) == pytest.approx(0.743, abs=5e-4)


def test_krippendorff_alpha_on_two_coders_binary_example():
    # Krippendorff (2011), two observers, binary data: alpha = 0.095.
    a = [0, 1, 0, 0, 0, 0, 0, 0, 1, 0]
    b = [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]
    assert quality.krippendorff_alpha_nominal(list(zip(a, b))) == pytest.approx(0.095, abs=5e-4)


def test_alpha_is_one_for_perfect_agreement_and_undefined_without_variation():
    assert quality.krippendorff_alpha_nominal([["a", "a"], ["b", "b", "b"]]) == pytest.approx(1.0)
    assert quality.krippendorff_alpha_nominal([["a", "a"], ["a", "a"]]) is None
    assert quality.krippendorff_alpha_nominal([["a"], ["b"]]) is None


def test_pairwise_agreement_counts_agreeing_annotator_pairs():
    # unit 1: 3 pairs, 1 agreeing; unit 2: 1 pair, agreeing; single-judgment units don't count.
    assert quality.pairwise_agreement([["a", "a", "b"], ["tie", "tie"], ["b"]]) == pytest.approx(2 / 4)
    assert quality.pairwise_agreement([["a"]]) is None


def label(campaign, user, choice: str, *, left_is_a: bool = True, time_ms: int = 1000) -> None:
    assignment = services.assignment_next(campaign=campaign, annotator=user)
    Assignment.objects.filter(pk=assignment.pk).update(left_is_a=left_is_a)
    services.judgment_submit(assignment_id=assignment.pk, annotator=user, choice=choice, time_ms=time_ms)


@pytest.mark.django_db
def test_report_measures_position_bias_gold_accuracy_agreement_and_rates(campaign, alice, bob):
    campaign.annotations_per_pair = 2
    campaign.save()
    make_pairs(campaign, 20)
    # Alice always picks the left side, whatever is there: position bias.
    for i in range(20):
        label(campaign, alice, "left", left_is_a=i % 2 == 0, time_ms=1000 + i)
    # Bob agrees with Alice on a/b for half the pairs, then says tie and both bad.
    for i in range(20):
        choice = "left" if i < 10 else ("tie" if i < 15 else "both_bad")
        label(campaign, bob, choice, left_is_a=i % 2 == 0)
    report = quality.campaign_report(campaign=campaign)
    a, b = report.annotators["alice"], report.annotators["bob"]
    assert (a.judgments, a.left, a.right, a.left_share) == (20, 20, 0, 1.0)
    assert a.left_p_value == pytest.approx(2 * 0.5**20)
    assert a.median_time_ms == pytest.approx(1009.5)
    assert (b.tie_rate, b.both_bad_rate) == (0.25, 0.25)
    assert report.agreement_pairs == 20
    assert report.pairwise_agreement == pytest.approx(0.5)
    assert (report.done, report.needed, report.complete) == (40, 40, 20)
    assert report.overall.judgments == 40 and report.judgments_last_hour == 40


@pytest.mark.django_db
def test_gold_accuracy_is_the_share_of_gold_pairs_answered_as_known(campaign, alice):
    campaign.gold_rate = 1.0
    campaign.save()
    make_pairs(campaign, 3)
    make_pairs(campaign, 2, gold_choice=Choice.A)
    label(campaign, alice, "left", left_is_a=True)  # gold, a: right answer
    label(campaign, alice, "left", left_is_a=False)  # gold, b: wrong
    label(campaign, alice, "tie")  # a regular pair
    tally = quality.campaign_report(campaign=campaign).annotators["alice"]
    assert (tally.gold_seen, tally.gold_correct, tally.gold_accuracy) == (2, 1, 0.5)


@pytest.mark.django_db
def test_dashboard_shows_staff_the_numbers_and_a_plot(client, campaign, alice, admin_user):
    make_pairs(campaign, 3)
    for choice in ("left", "right", "tie"):
        label(campaign, alice, choice)
    client.force_login(admin_user)
    page = client.get(reverse("campaign-dashboard", args=[campaign.pk])).content.decode()
    assert "alice" in page and "Krippendorff" in page and "3 of 3 judgments" in page
    assert reverse("campaign-dashboard-plot", args=[campaign.pk]) in page
    png = client.get(reverse("campaign-dashboard-plot", args=[campaign.pk]))
    assert png["Content-Type"] == "image/png" and png.content.startswith(b"\x89PNG")


@pytest.mark.django_db
def test_the_dashboard_plot_fits_no_reliability_model(client, campaign, alice, admin_user, monkeypatch):
    make_pairs(campaign, 2)
    label(campaign, alice, "left")
    client.force_login(admin_user)

    def refuse(*args, **kwargs):
        raise AssertionError("the plot draws no reliability: it must not fit one")

    monkeypatch.setattr(quality, "dawid_skene", refuse)
    png = client.get(reverse("campaign-dashboard-plot", args=[campaign.pk]))

    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")


@pytest.mark.django_db
def test_an_empty_campaign_shows_no_empty_axes_but_its_plot_still_draws(client, campaign, admin_user):
    client.force_login(admin_user)
    page = client.get(reverse("campaign-dashboard", args=[campaign.pk])).content.decode()
    assert 'id="no-plot"' in page and reverse("campaign-dashboard-plot", args=[campaign.pk]) not in page
    png = client.get(reverse("campaign-dashboard-plot", args=[campaign.pk]))
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")


@pytest.mark.django_db
def test_leads_see_skips_flags_seconds_and_intervals_per_annotator(client, campaign, alice, bob, admin_user):
    make_pairs(campaign, 14)
    for i in range(10):
        label(campaign, alice, "left", left_is_a=True, time_ms=1000 * (i + 1))  # 1 s .. 10 s
    for _ in range(2):
        services.assignment_skip(assignment_id=services.assignment_next(campaign=campaign, annotator=bob).pk, annotator=bob)
    flagged = services.assignment_next(campaign=campaign, annotator=bob)
    services.comparison_flag(assignment_id=flagged.pk, annotator=bob, reason="unclear")

    report = quality.campaign_report(campaign=campaign)
    a = report.annotators["alice"]
    assert (a.median_time_s, a.p90_time_s) == (5.5, 9.0)
    low, high = a.left_share_interval  # 10 of 10 left: Wilson's 95% interval is (0.72, 1)
    assert low == pytest.approx(0.7225, abs=1e-3) and high == pytest.approx(1.0)
    assert a.gold_accuracy_interval is None
    # A flag gives the pair back too, but counts once, as a flag.
    assert [(n, s, f) for n, _, s, f, *_ in report.annotator_lines] == [("alice", 0, 0), ("bob", 2, 1)]

    client.force_login(admin_user)
    page = client.get(reverse("campaign-dashboard", args=[campaign.pk])).content.decode()
    assert "5.5 s" in page and "(p90 9.0 s)" in page and "(0.72–1.00)" in page


def test_simulated_judgments_are_shown_apart_and_counted_only_when_asked(client, campaign, alice, admin_user):
    campaign.annotations_per_pair = 2
    campaign.save()
    make_pairs(campaign, 3)
    script = services.annotator_create(username="sim-script-1", password="script-password-1", simulated=True)
    for choice in ("left", "right"):
        label(campaign, alice, choice)
    for _ in range(3):
        label(campaign, script, "left")

    human = quality.campaign_report(campaign=campaign)
    both = quality.campaign_report(campaign=campaign, sources=("human", "simulated"))

    assert list(human.annotators) == ["alice"] and human.overall.judgments == 2
    assert human.by_source == {"human": 2, "simulated": 3}
    assert set(both.annotators) == {"alice", "sim-script-1"} and both.overall.judgments == 5
    client.force_login(admin_user)
    page = client.get(reverse("campaign-dashboard", args=[campaign.pk])).content.decode()
    assert "Human: 2</strong> (counted below)" in page
    assert "Simulated (a scripted annotator): 3, shown apart, not counted below" in page
    assert "sim-script-1" not in page
    asked = client.get(reverse("campaign-dashboard", args=[campaign.pk]), {"source": ["human", "simulated"]})
    assert "sim-script-1" in asked.content.decode()
    assert client.get(reverse("campaign-dashboard", args=[campaign.pk]), {"source": "robots"}).status_code == 404
