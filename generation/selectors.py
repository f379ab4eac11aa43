from django.db.models import Q, QuerySet, Sum
from django.db.models.functions import Coalesce

from generation.models import GenerationJob, GenerationShard, ModelVersion
from labeling.models import Campaign, Comparison, ComparisonStatus, Prompt


def prompt_model_input(prompt: Prompt) -> list[dict]:
    """What the policy is conditioned on for `prompt`: its chat messages, a plain prompt as one user turn.

    Plain prompts are instructions, and policies here are chat models (the tiny
    one answers a bare instruction with an immediate end token), so both kinds go
    through the chat template. Training must condition on the same thing.
    """
    return prompt.messages or [{"role": "user", "content": prompt.text}]


def prompts_to_sample(
    *,
    campaign: Campaign,
    policy: ModelVersion,
    policy_b: ModelVersion | None = None,
    only_missing: bool = True,
    limit: int | None = None,
    split: str | None = None,
) -> QuerySet[Prompt]:
    """The campaign's enabled prompts a new job would sample, in serving order, within `limit`
    (only those of `split` when given: a promotion's A/B job samples held-out prompts).

    With `only_missing`, a prompt that already has an open or settled comparison
    from the same policy (or the same A/B pair of policies, either side) is left
    out: running "Generate pairs" again samples only what is new.
    """
    prompts = Prompt.objects.filter(campaign=campaign, enabled=True).order_by("-priority", "id")
    if split is not None:
        prompts = prompts.filter(split=split)
    if only_missing:
        other = policy_b or policy
        paired = Comparison.objects.filter(status__in=[ComparisonStatus.OPEN, ComparisonStatus.COMPLETE]).filter(
            Q(completion_a__model_version=policy, completion_b__model_version=other)
            | Q(completion_a__model_version=other, completion_b__model_version=policy)
        )
        prompts = prompts.exclude(pk__in=paired.values("prompt_id"))
    return prompts[:limit] if limit is not None else prompts


def shard_prompts_todo(*, shard: GenerationShard) -> QuerySet[Prompt]:
    """The shard's prompts its job has not finished yet, in serving order.

    A prompt counts as done once it has the job's completions (paired, or kept
    as identical or duplicate) or a skip, so a resumed shard picks up exactly where it stopped.
    """
    return (
        Prompt.objects.filter(pk__in=shard.prompt_ids)
        .exclude(completions__job_id=shard.job_id)
        .exclude(generation_skips__job_id=shard.job_id)
        .order_by("-priority", "id")
        .only("id", "text", "messages", "split", "content_hash")
    )


def comparison_digests(*, prompt_ids: list[int]) -> set[tuple[int, str]]:
    """(prompt id, texts digest) of every comparison of these prompts: what a new pair must not repeat."""
    return set(Comparison.objects.filter(prompt_id__in=prompt_ids).values_list("prompt_id", "texts_digest"))


def job_sampled(*, job: GenerationJob) -> int:
    """Prompts of the job whose samples have finished, stored or still to be stored."""
    return job.shards.aggregate(n=Coalesce(Sum("sampled"), 0))["n"]
