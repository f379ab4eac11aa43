from django.db.models import QuerySet

from generation.models import GenerationJob
from labeling.models import Prompt


def prompt_model_input(prompt: Prompt) -> list[dict]:
    """What the policy is conditioned on for `prompt`: its chat messages, a plain prompt as one user turn.

    Plain prompts are instructions, and policies here are chat models (the tiny
    one answers a bare instruction with an immediate end token), so both kinds go
    through the chat template. Training must condition on the same thing.
    """
    return prompt.messages or [{"role": "user", "content": prompt.text}]


def job_prompts_todo(*, job: GenerationJob) -> QuerySet[Prompt]:
    """The campaign's enabled prompts this job has not sampled yet, in serving order, within its limit.

    A prompt counts as done once it has this job's completions (paired or skipped
    as identical), so a retried or resumed job picks up exactly where it stopped.
    """
    todo = (
        Prompt.objects.filter(campaign_id=job.campaign_id, enabled=True)
        .exclude(completions__job=job)
        .order_by("-priority", "id")
        .only("id", "text", "messages", "split", "content_hash")
    )
    if job.limit is not None:
        todo = todo[: max(job.limit - job.done, 0)]
    return todo
