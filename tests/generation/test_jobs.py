"""Generation jobs end to end on the real vLLM CPU engine: pairs, provenance, A/B, identical pairs, resumption."""

from collections import Counter

import pytest
from django.core.exceptions import ValidationError
from django.db.models import Count
from transformers import AutoTokenizer

from config.celery import app as celery_app
from generation import services, tasks
from generation.backends import SamplingConfig
from generation.models import Completion, GenerationJob, GenerationShard, JobStatus, ModelVersion, ShardStatus
from labeling.models import Campaign, Comparison, PairSelection, Prompt, Split
from tests.generation.conftest import demo_lines, import_prompts

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


@pytest.fixture
def vllm_backend(settings, vllm_generator):
    settings.GENERATION_BACKEND = "vllm"
    return vllm_generator


class WorkerKilled(BaseException):
    """Stands in for SIGKILL: not an Exception, so the job is not marked failed, just left running."""


def kill_after_first_chunk(current: GenerationJob) -> None:
    if current.done:
        raise WorkerKilled


def run(job: GenerationJob, **kwargs) -> GenerationJob:
    return services.generation_job_run(job=job, **kwargs)


def enabled(campaign: Campaign) -> list[Prompt]:
    return list(Prompt.objects.filter(campaign=campaign, enabled=True))


def test_every_enabled_prompt_gets_a_pair_with_full_provenance(
    vllm_backend, campaign: Campaign, prompts: list[Prompt], policy: ModelVersion
) -> None:
    job = run(services.generation_job_create(campaign=campaign, policy=policy, seed=3, max_tokens=64))

    assert (job.status, job.done, job.total, job.skipped_identical) == (JobStatus.SUCCEEDED, 5, 5, 0)
    comparisons = Comparison.objects.select_related("prompt", "completion_a", "completion_b")
    assert sorted(c.prompt_id for c in comparisons) == sorted(p.pk for p in enabled(campaign))
    for comparison in comparisons:
        assert comparison.priority == comparison.prompt.priority
        a, b = comparison.completion_a, comparison.completion_b
        assert a.seed + 1 == b.seed
        assert a.seed == services.prompt_seed(job_seed=3, prompt=comparison.prompt, attempt=0)
        for completion in (a, b):
            assert completion.job_id == job.pk and completion.model_version_id == policy.pk
            assert completion.token_ids and completion.text
            assert completion.cumulative_logprob < 0
            assert completion.finish_reason in {"stop", "length"}
            assert completion.sampling_params == {"temperature": 1.0, "top_p": 1.0, "max_tokens": 64}
            assert completion.backend == "vllm"
            assert completion.is_heldout == (comparison.prompt.split == Split.HELDOUT)
    assert Completion.objects.filter(is_heldout=True).count() == 2
    assert not Completion.objects.filter(prompt__enabled=False).exists()


def test_completion_tokens_are_what_the_engine_samples_for_the_recorded_seed(
    vllm_backend, campaign: Campaign, prompts: list[Prompt], policy: ModelVersion
) -> None:
    job = run(services.generation_job_create(campaign=campaign, policy=policy, seed=8, temperature=0.9, max_tokens=32))
    completion = Completion.objects.filter(job=job).select_related("prompt").first()
    params = SamplingConfig(**completion.sampling_params)
    prompt = services.selectors.prompt_model_input(completion.prompt)
    [[again]] = vllm_backend.generate([prompt], policy=policy, params=params, n=1, seeds=[completion.seed])
    assert again.token_ids == completion.token_ids and again.text == completion.text


def test_same_job_seed_reproduces_the_completions(
    vllm_backend, campaign: Campaign, prompts: list[Prompt], policy: ModelVersion
) -> None:
    def tokens(job: GenerationJob) -> list[list[int]]:
        return [c.token_ids for c in Completion.objects.filter(job=job).order_by("prompt_id", "seed")]

    def job(seed: int) -> GenerationJob:
        return run(services.generation_job_create(campaign=campaign, policy=policy, seed=seed, max_tokens=32, only_missing=False))

    first, second, other = job(21), job(21), job(22)
    assert tokens(first) == tokens(second)
    assert tokens(first) != tokens(other)


def test_ab_job_records_which_policy_produced_each_side(
    vllm_backend, campaign: Campaign, prompts: list[Prompt], policy: ModelVersion, lora_policy: ModelVersion
) -> None:
    job = run(
        services.generation_job_create(campaign=campaign, policy=lora_policy, policy_b=policy, seed=1, max_tokens=32)
    )
    assert job.status == JobStatus.SUCCEEDED
    comparisons = Comparison.objects.select_related("completion_a", "completion_b")
    assert comparisons.count() + job.skipped_identical == 5
    for comparison in comparisons:
        assert comparison.completion_a.model_version_id == lora_policy.pk
        assert comparison.completion_b.model_version_id == policy.pk
        assert comparison.completion_b.seed == comparison.completion_a.seed + 1
    # The random adapter emits odd bytes, NUL among them, which PostgreSQL text
    # refuses: the stored text swaps it for U+FFFD, the token ids stay exact.
    tokenizer = AutoTokenizer.from_pretrained(policy.base_path)
    for completion in Completion.objects.filter(job=job):
        decoded = tokenizer.decode(completion.token_ids, skip_special_tokens=True)
        assert completion.text == decoded.replace("\x00", "\ufffd")


def test_identical_pairs_are_resampled_once_then_skipped_and_counted(
    vllm_backend, campaign: Campaign, policy: ModelVersion
) -> None:
    # Four tokens at a low temperature: the tiny model often opens both samples
    # alike, so all three outcomes occur (different at once, after the redraw, never).
    import_prompts(campaign, demo_lines(12))
    job = run(services.generation_job_create(campaign=campaign, policy=policy, seed=1, temperature=0.5, max_tokens=4))

    outcomes = Counter()
    for prompt in enabled(campaign):
        stored = list(Completion.objects.filter(job=job, prompt=prompt).order_by("seed"))
        seeds = [services.prompt_seed(job_seed=1, prompt=prompt, attempt=k) for k in (0, 1)]
        first = vllm_backend.generate(
            [services.selectors.prompt_model_input(prompt)],
            policy=policy,
            params=SamplingConfig(0.5, 1.0, 4),
            n=2,
            seeds=[seeds[0]],
        )[0]
        first_identical = " ".join(first[0].text.split()) == " ".join(first[1].text.split())
        final_identical = " ".join(stored[0].text.split()) == " ".join(stored[1].text.split())
        assert len(stored) == 2
        assert stored[0].seed == seeds[1 if first_identical else 0]  # redrawn exactly when the first draw matched
        assert Comparison.objects.filter(prompt=prompt).exists() == (not final_identical)
        outcomes[(first_identical, final_identical)] += 1

    assert set(outcomes) == {(False, False), (True, False), (True, True)}
    assert job.skipped_identical == outcomes[(True, True)]
    assert job.done == job.total == 12


def test_crashed_job_resumes_the_remaining_prompts_without_duplicates(
    vllm_backend, settings, campaign: Campaign, prompts: list[Prompt], policy: ModelVersion
) -> None:
    settings.GENERATION_CHUNK_SIZE = 2
    job = services.generation_job_create(campaign=campaign, policy=policy, seed=5, max_tokens=32)
    with pytest.raises(WorkerKilled):
        run(job, on_progress=kill_after_first_chunk)
    job.refresh_from_db()
    assert (job.status, job.done, job.total) == (JobStatus.RUNNING, 2, 5)

    tasks.generation_shard_run_task(job.shards.get().pk)  # what the redelivered message does

    job.refresh_from_db()
    assert (job.status, job.done, job.total) == (JobStatus.SUCCEEDED, 5, 5)
    per_prompt = Completion.objects.filter(job=job).values("prompt").annotate(n=Count("id"))
    assert sorted(row["n"] for row in per_prompt) == [2] * 5
    assert Comparison.objects.count() == 5
    uninterrupted = run(
        services.generation_job_create(campaign=campaign, policy=policy, seed=5, max_tokens=32, only_missing=False)
    )
    assert [c.token_ids for c in Completion.objects.filter(job=job).order_by("prompt_id", "seed")] == [
        c.token_ids for c in Completion.objects.filter(job=uninterrupted).order_by("prompt_id", "seed")
    ]


def test_overlapping_runs_of_one_job_store_each_prompt_once(
    vllm_backend, settings, campaign: Campaign, prompts: list[Prompt], policy: ModelVersion
) -> None:
    settings.GENERATION_CHUNK_SIZE = 2
    job = services.generation_job_create(campaign=campaign, policy=policy, max_tokens=16)
    overlapped = []

    def second_run_meanwhile(current: GenerationJob) -> None:
        # A redelivered message picked up while the first run still works: it
        # finishes everything before the first run stores its next chunk.
        if current.done == 2 and not overlapped:
            overlapped.append(run(GenerationJob.objects.get(pk=current.pk)))

    job = run(job, on_progress=second_run_meanwhile)
    assert overlapped[0].status == JobStatus.SUCCEEDED
    assert (job.status, job.done) == (JobStatus.SUCCEEDED, 5)
    assert Completion.objects.filter(job=job).count() == 10
    assert Comparison.objects.count() == 5


def test_limit_caps_the_prompts_and_a_resumed_job_keeps_to_it(
    vllm_backend, settings, campaign: Campaign, prompts: list[Prompt], policy: ModelVersion
) -> None:
    settings.GENERATION_CHUNK_SIZE = 2
    job = services.generation_job_create(campaign=campaign, policy=policy, limit=3, max_tokens=16)
    with pytest.raises(WorkerKilled):
        run(job, on_progress=kill_after_first_chunk)
    job = run(job)
    assert (job.done, job.total) == (3, 3)
    # Serving order: the priority-5 prompt first, then by id.
    top = Prompt.objects.filter(campaign=campaign, enabled=True).order_by("-priority", "id")[:3]
    assert set(Comparison.objects.values_list("prompt_id", flat=True)) == {p.pk for p in top}


def test_cancelled_job_stops_before_storing_its_next_chunk(
    vllm_backend, settings, campaign: Campaign, prompts: list[Prompt], policy: ModelVersion
) -> None:
    settings.GENERATION_CHUNK_SIZE = 2
    job = services.generation_job_create(campaign=campaign, policy=policy, max_tokens=16)

    def cancel_after_first_chunk(current: GenerationJob) -> None:
        if current.done:
            services.generation_job_cancel(job=current)

    job = run(job, on_progress=cancel_after_first_chunk)
    assert (job.status, job.done) == (JobStatus.CANCELLED, 2)
    assert Completion.objects.filter(job=job).count() == 4
    engine = vllm_backend.engine(policy.base_path).llm_engine
    # The chunks queued ahead were dropped, not left to run or to wait in memory.
    assert not engine.has_unfinished_requests() and not vllm_backend._finished
    assert run(job).status == JobStatus.CANCELLED  # a late message does not revive it


def test_failed_job_records_the_error_and_can_be_resumed(
    settings, campaign: Campaign, prompts: list[Prompt], policy: ModelVersion, tiny_model_path, tmp_path
) -> None:
    settings.GENERATION_BACKEND = "transformers"
    broken = services.model_version_register(
        name="missing-adapter", base_path=str(tiny_model_path), adapter_path=str(tmp_path / "no-such-adapter")
    )
    job = services.generation_job_create(campaign=campaign, policy=broken, max_tokens=8)
    with pytest.raises(ValueError, match="adapter_config.json"):
        run(job)
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and "no-such-adapter" in job.error
    assert job.finished_at is not None

    assert run(job).status == JobStatus.FAILED  # a stray message does not retry a failed job...
    assert services.generation_job_resume(job=job)  # ...only when resumed
    job.refresh_from_db()
    assert (job.status, job.error) == (JobStatus.QUEUED, "")


def test_transformers_backend_runs_the_same_job(
    settings, transformers_generator, campaign: Campaign, prompts: list[Prompt], policy: ModelVersion
) -> None:
    settings.GENERATION_BACKEND = "transformers"
    job = run(services.generation_job_create(campaign=campaign, policy=policy, seed=2, max_tokens=32))
    assert (job.status, job.done) == (JobStatus.SUCCEEDED, 5)
    assert set(Completion.objects.values_list("backend", flat=True)) == {"transformers"}
    assert Comparison.objects.count() + job.skipped_identical == 5


def test_greedy_single_policy_job_and_ab_against_itself_are_refused(
    campaign: Campaign, policy: ModelVersion
) -> None:
    with pytest.raises(ValidationError, match="temperature"):
        services.generation_job_create(campaign=campaign, policy=policy, temperature=0.0)
    with pytest.raises(ValidationError, match="two different policies"):
        services.generation_job_create(campaign=campaign, policy=policy, policy_b=policy)
    with pytest.raises(ValidationError):
        services.generation_job_create(campaign=campaign, policy=policy, top_p=0.0)
    assert not GenerationJob.objects.exists()


def test_started_job_is_enqueued_on_the_generation_queue_after_commit(
    vllm_backend, eager_celery, django_capture_on_commit_callbacks, campaign, prompts, policy
) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        job = services.generation_job_start(campaign=campaign, policy=policy, max_tokens=16)
        job.refresh_from_db()
        assert job.status == JobStatus.QUEUED  # nothing runs before the commit
    assert len(callbacks) == 1
    route = celery_app.amqp.router.route({}, tasks.generation_shard_run_task.name)
    assert route["queue"].name == "generation"

    callbacks[0]()  # the commit: the (eager) task runs the job's one shard
    job.refresh_from_db()
    assert (job.status, Comparison.objects.count()) == (JobStatus.SUCCEEDED, 5)


@pytest.mark.parametrize("mode", [PairSelection.UNCERTAINTY, PairSelection.CERTAINTY])
def test_a_finished_job_of_a_scoring_campaign_queues_its_pair_selection_on_the_training_queue(
    settings, transformers_generator, eager_celery, django_capture_on_commit_callbacks, campaign, prompts, policy, mode
) -> None:
    settings.GENERATION_BACKEND = "transformers"
    campaign.pair_selection, campaign.active_policy = mode, policy
    campaign.save()
    with django_capture_on_commit_callbacks() as callbacks:
        job = services.generation_job_start(campaign=campaign, policy=policy, seed=2, max_tokens=16)
    [run_shard] = callbacks
    with django_capture_on_commit_callbacks() as callbacks:
        run_shard()  # the (eager) worker runs the job's one shard
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    # Nothing was picked inside the worker's run: one message waits for the job's commit.
    assert not Comparison.objects.exclude(selected_by="").exists()
    [select] = callbacks
    route = celery_app.amqp.router.route({}, services.PAIRS_SELECT_TASK)
    assert route["queue"].name == "training"

    select()  # the (eager) training worker scores the new pairs and picks the batch
    train = Comparison.objects.filter(prompt__split=Split.TRAIN)
    assert train.count() == 4
    # Round 0's policy is its own reference: every margin is 0 (its entropy at each prompt is not), and the
    # batch (all 4 under a budget of 150) is a random 20% share and the rest picked by the campaign's mode.
    assert Counter(train.values_list("selected_by", flat=True)) == {mode: 3, "random": 1}
    assert set(train.values_list("policy_margin", flat=True)) == {0.0}
    assert sorted(train.values_list("selection_rank", flat=True)) == [1, 2, 3, 4]  # served in the batch's order
    assert not train.filter(policy_entropy__isnull=True).exists() and not train.filter(policy_entropy__lte=0).exists()


def test_a_random_campaign_or_the_loop_harness_queues_no_pair_selection(
    settings, transformers_generator, django_capture_on_commit_callbacks, campaign, prompts, policy
) -> None:
    settings.GENERATION_BACKEND = "transformers"
    with django_capture_on_commit_callbacks() as callbacks:
        run(services.generation_job_create(campaign=campaign, policy=policy, seed=2, max_tokens=16))
    assert callbacks == []
    campaign.pair_selection = PairSelection.UNCERTAINTY
    campaign.save()
    with django_capture_on_commit_callbacks() as callbacks:
        job = run(
            services.generation_job_create(campaign=campaign, policy=policy, seed=3, max_tokens=16, only_missing=False),
            queue_selection=False,
        )
    assert job.status == JobStatus.SUCCEEDED and callbacks == []


def test_a_restarted_worker_requeues_only_the_shards_it_was_running(
    settings, campaign: Campaign, prompts: list[Prompt], policy: ModelVersion, django_capture_on_commit_callbacks
):
    settings.GENERATION_SHARD_SIZE = 2
    job = services.generation_job_create(campaign=campaign, policy=policy, seed=1)
    mine, other, queued = job.shards.order_by("number")
    GenerationJob.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING)
    GenerationShard.objects.filter(pk=mine.pk).update(status=ShardStatus.RUNNING, worker="generation@host-a")
    GenerationShard.objects.filter(pk=other.pk).update(status=ShardStatus.RUNNING, worker="generation@host-b")
    with django_capture_on_commit_callbacks() as callbacks:
        assert services.generation_jobs_recover(worker="generation@host-a") == 1
    assert len(callbacks) == 1  # its task is enqueued once the requeue commits
    assert GenerationShard.objects.get(pk=mine.pk).status == ShardStatus.QUEUED
    assert GenerationShard.objects.get(pk=other.pk).status == ShardStatus.RUNNING
    assert GenerationJob.objects.get(pk=job.pk).status == JobStatus.RUNNING


def test_the_job_reports_its_phase_and_counts_prompts_as_their_samples_finish(
    vllm_backend, settings, monkeypatch, campaign: Campaign, policy: ModelVersion
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    import_prompts(campaign, demo_lines(12))
    settings.GENERATION_CHUNK_SIZE = 12  # one chunk: a per-chunk count would jump from 0 to 12
    monkeypatch.setattr(services, "SAMPLED_WRITE_INTERVAL_S", 0.0)
    seen = []

    def watch(current: GenerationJob) -> None:
        stored = GenerationJob.objects.get(pk=current.pk)  # what the page reads
        seen.append((stored.phase, services.selectors.job_sampled(job=stored), stored.done))

    job = services.generation_job_create(campaign=campaign, policy=policy, seed=6, max_tokens=48)
    with CaptureQueriesContext(connection) as queries:
        job = run(job, on_progress=watch)

    assert (job.status, job.done) == (JobStatus.SUCCEEDED, 12)
    before_store = [sampled for phase, sampled, done in seen if done == 0]
    assert all(phase == "sampling" for phase, _, done in seen if done == 0)
    assert len(set(before_store)) >= 2 and 0 < min(before_store) < 12  # counted as samples finish
    assert seen[-1] == ("storing", 12, 12)
    phases = [p for q in queries.captured_queries for p in ("loading", "sampling", "storing") if f"\"phase\" = '{p}'" in q["sql"]]
    assert phases[:3] == ["loading", "sampling", "storing"]
