"""labeling.bulk.insert: rows as tuples, every other column its field's default, keys back in order."""

import pytest
from django.utils import timezone

from generation.models import Completion, ModelVersion
from labeling import bulk
from labeling.models import Campaign, Comparison, ComparisonStatus, Prompt


@pytest.fixture
def prompts(campaign: Campaign) -> list[Prompt]:
    return [
        Prompt.objects.create(campaign=campaign, text=f"Prompt {i}", content_hash=f"hash-{i}", priority=i)
        for i in range(3)
    ]


def test_inserted_rows_come_back_as_their_keys_in_order_with_json_and_defaults(prompts: list[Prompt]) -> None:
    policy = ModelVersion.objects.create(name="policy", base_path="tiny")
    before = timezone.now()
    token_ids = [[1, 2, 3], [], [70000, 0]]

    pks = bulk.insert(
        Completion,
        columns=("prompt", "model_version", "text", "token_ids", "backend"),
        rows=[(p.pk, policy.pk, f"text {i}", bulk.json_value(token_ids[i]), "vllm") for i, p in enumerate(prompts)],
    )

    stored = {c.pk: c for c in Completion.objects.filter(pk__in=pks)}
    assert [stored[pk].text for pk in pks] == ["text 0", "text 1", "text 2"]
    assert [stored[pk].token_ids for pk in pks] == token_ids
    for completion in stored.values():
        # Columns not given: the fields' defaults, and auto_now_add's time of the call.
        assert completion.sampling_params == {}
        assert completion.job_id is None and completion.seed is None and completion.is_heldout is False
        assert before <= completion.created_at <= timezone.now()


def test_comparisons_inserted_in_batches_are_open_with_no_judgments(prompts: list[Prompt]) -> None:
    policy = ModelVersion.objects.create(name="policy", base_path="tiny")
    texts = [f"answer {i}" for i in range(400)]
    completion_pks = bulk.insert(
        Completion,
        columns=("prompt", "model_version", "text", "backend"),
        rows=[(prompts[0].pk, policy.pk, text, "vllm") for text in texts],
    )
    rows = [(prompts[0].pk, a, b, 7) for a, b in zip(completion_pks[::2], completion_pks[1::2])]

    pks = bulk.insert(Comparison, columns=("prompt", "completion_a", "completion_b", "priority"), rows=rows)

    # 200 rows of 15 columns: more than SQLite takes in one statement, so several batches, keys still in order.
    assert len(pks) == 200 and len(set(pks)) == 200
    comparisons = Comparison.objects.in_bulk(pks)
    assert [(comparisons[pk].completion_a_id, comparisons[pk].completion_b_id) for pk in pks] == [r[1:3] for r in rows]
    first = comparisons[pks[0]]
    assert (first.status, first.judgments_count, first.is_gold, first.gold_choice, first.priority) == (
        ComparisonStatus.OPEN, 0, False, "", 7
    )
    assert first.policy_margin is None and first.selected_by == ""


def test_no_rows_insert_nothing() -> None:
    assert bulk.insert(Comparison, columns=("prompt",), rows=[]) == []
