"""Test data for the labeling queue: prompts with two completions each, written directly.

Tests may use generation's models; labeling's own code may not.
"""

import uuid

from generation.models import Completion, ModelVersion
from labeling.models import Campaign, Choice, Comparison, Prompt, Split


def make_pairs(
    campaign: Campaign,
    count: int = 1,
    *,
    priority: int = 0,
    enabled: bool = True,
    split: str = Split.TRAIN,
    gold_choice: str = "",
    prompt_text: str = "Explain tides to a child.",
    messages: list[dict] | None = None,
    texts: tuple[str, str] = ("Answer A", "Answer B"),
) -> list[Comparison]:
    """`count` comparisons, one prompt each; gold when gold_choice is given (a/b/tie/both_bad)."""
    policy, _ = ModelVersion.objects.get_or_create(name="factory-policy", defaults={"base_path": "tiny"})
    pairs = []
    for i in range(count):
        prompt = Prompt.objects.create(
            campaign=campaign,
            text="" if messages else f"{prompt_text} ({i})" if count > 1 else prompt_text,
            messages=messages,
            content_hash=uuid.uuid4().hex,
            priority=priority,
            enabled=enabled,
            split=split,
        )
        a, b = (
            Completion.objects.create(prompt=prompt, model_version=policy, text=text, backend="test") for text in texts
        )
        pairs.append(
            Comparison.objects.create(
                prompt=prompt,
                completion_a=a,
                completion_b=b,
                priority=priority,
                is_gold=bool(gold_choice),
                gold_choice=Choice(gold_choice) if gold_choice else "",
            )
        )
    return pairs
