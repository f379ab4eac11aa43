"""A pair's texts digest: the key generation and preference imports check a new pair against."""

import importlib

import pytest
from django.apps import apps

from labeling.models import Comparison, pair_digest
from tests.labeling.factories import make_pairs

pytestmark = pytest.mark.django_db


def test_the_digest_ignores_which_side_an_answer_is_on_and_how_its_whitespace_runs():
    assert pair_digest("The sea  rises.\n", "It falls.") == pair_digest("It falls.", " The sea rises.")
    assert pair_digest("The sea rises.", "It falls.") != pair_digest("The sea rises.", "It falls!")
    # The two texts stay apart: moving words from one answer to the other is another pair.
    assert pair_digest("ab", "c") != pair_digest("a", "bc")


def test_a_comparison_saved_without_a_digest_gets_its_texts_digest(campaign):
    (pair,) = make_pairs(campaign, texts=("Warm  words.", "Cold words."))
    pair.refresh_from_db()
    assert pair.texts_digest == pair_digest("Warm words.", "Cold words.")


def test_the_migration_gives_existing_pairs_the_digest_the_model_computes(campaign):
    pairs = make_pairs(campaign, 3, texts=("Tides follow the moon.", "The\tsea is  wet."))
    Comparison.objects.update(texts_digest="")  # as every pair was before the migration
    migration = importlib.import_module("labeling.migrations.0011_comparison_texts_digest")
    migration.backfill(apps, None)
    assert set(Comparison.objects.filter(pk__in=[p.pk for p in pairs]).values_list("texts_digest", flat=True)) == {
        pair_digest("Tides follow the moon.", "The\tsea is  wet.")
    }
