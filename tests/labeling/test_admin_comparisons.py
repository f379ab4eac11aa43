"""Gold curation in the admin: both texts side by side (escaped), bulk "mark as gold" with its answer."""

import pytest
from django.urls import reverse

from labeling.models import Choice, Comparison
from tests.labeling.factories import make_pairs

pytestmark = pytest.mark.django_db


def test_comparison_page_shows_both_texts_side_by_side_as_text(client, campaign, admin_user):
    [pair] = make_pairs(campaign, texts=("<script>alert(1)</script> plain A", "**bold** B"))
    client.force_login(admin_user)

    page = client.get(reverse("admin:labeling_comparison_change", args=[pair.pk])).content.decode()

    assert "&lt;script&gt;alert(1)&lt;/script&gt; plain A" in page and "<script>alert(1)" not in page
    assert "**bold** B" in page and "Explain tides to a child." in page


def test_comparison_and_completion_lists_show_the_text(client, campaign, admin_user):
    make_pairs(campaign, texts=("the left answer", "the right answer"))
    client.force_login(admin_user)

    comparisons = client.get(reverse("admin:labeling_comparison_changelist")).content.decode()
    completions = client.get(reverse("admin:generation_completion_changelist")).content.decode()

    assert "the left answer" in comparisons and "the right answer" in comparisons
    assert "Explain tides to a child." in comparisons
    assert "the left answer" in completions


def test_bulk_action_marks_selected_pairs_gold_with_their_answer(client, campaign, admin_user):
    chosen, other, untouched = make_pairs(campaign, 3)
    client.force_login(admin_user)
    changelist = reverse("admin:labeling_comparison_changelist")
    action = {"action": "mark_gold", "_selected_action": [chosen.pk, other.pk]}

    form = client.post(changelist, action)
    assert form.status_code == 200 and "Mark as gold" in form.content.decode()
    assert not Comparison.objects.filter(is_gold=True).exists()  # the answer comes first
    client.post(changelist, {**action, "gold_choice": "b", "apply": "1"})

    gold = Comparison.objects.filter(is_gold=True).order_by("pk")
    assert [(c.pk, c.gold_choice) for c in gold] == [(chosen.pk, Choice.B), (other.pk, Choice.B)]
    untouched.refresh_from_db()
    assert not untouched.is_gold
