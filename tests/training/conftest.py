"""Preference data built row by row (no labeling services: they are written alongside this app)."""

import hashlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from generation.models import Completion, ModelVersion
from labeling import services as labeling_services
from labeling.models import Assignment, AssignmentState, Campaign, Comparison, Judgment, JudgmentSource, Prompt, Split

_serial = itertools.count()


@dataclass
class PairFactory:
    campaign: Campaign
    policy: ModelVersion
    annotators: list[User] = field(default_factory=list)

    def _annotator(self, i: int) -> User:
        while len(self.annotators) <= i:
            n = len(self.annotators)
            self.annotators.append(
                User.objects.create(username=f"judge{n}-{next(_serial)}")
            )  # no password: hashing is slow
        return self.annotators[i]

    def prompt(self, *, text: str = "", messages: list[dict] | None = None, split: str = Split.TRAIN) -> Prompt:
        key = f"{text}|{messages}|{next(_serial)}"
        return Prompt.objects.create(
            campaign=self.campaign,
            text=text,
            messages=messages,
            split=split,
            content_hash=hashlib.sha256(key.encode()).hexdigest(),
        )

    def pair(
        self,
        *,
        votes: Sequence[str],
        text: str = "Tell me about the sea.",
        messages: list[dict] | None = None,
        split: str = Split.TRAIN,
        a: str = "The sea is wide and blue.",
        b: str = "sea sea sea",
        strengths: Sequence[int | None] | None = None,
        sources: Sequence[str] | None = None,
        is_gold: bool = False,
        heldout_completion: bool = False,
        prompt: Prompt | None = None,
        policy_b: ModelVersion | None = None,
        answered_ago: timedelta = timedelta(hours=1),
    ) -> Comparison:
        """A pair with a judgment per vote, answered `answered_ago` (by default long past the undo window)."""
        prompt = prompt or self.prompt(text="" if messages else text, messages=messages, split=split)
        completions = [
            Completion.objects.create(
                prompt=prompt, model_version=policy, text=t, backend="test", is_heldout=heldout_completion
            )
            for t, policy in ((a, self.policy), (b, policy_b or self.policy))
        ]
        comparison = Comparison.objects.create(
            prompt=prompt,
            completion_a=completions[0],
            completion_b=completions[1],
            is_gold=is_gold,
            gold_choice="a" if is_gold else "",
            judgments_count=len(votes),
        )
        strengths = strengths or [None] * len(votes)
        sources = sources or [JudgmentSource.HUMAN] * len(votes)
        for i, (choice, strength, source) in enumerate(zip(votes, strengths, sources)):
            annotator = self._annotator(i)
            assignment = Assignment.objects.create(
                comparison=comparison,
                annotator=annotator,
                left_is_a=i % 2 == 0,
                leased_until=timezone.now() + timedelta(minutes=5),
                state=AssignmentState.SUBMITTED,
            )
            Judgment.objects.create(
                assignment=assignment,
                comparison=comparison,
                annotator=annotator,
                choice=choice,
                strength=strength,
                source=source,
                left_is_a=assignment.left_is_a,
            )
        Judgment.objects.filter(comparison=comparison).update(created_at=timezone.now() - answered_ago)
        return comparison


@pytest.fixture
def tiny_policy(db, campaign, tiny_model_path) -> ModelVersion:
    policy = ModelVersion.objects.create(name="tiny-base", base_path=str(tiny_model_path))
    labeling_services.campaign_set_active_policy(campaign=campaign, policy_id=policy.pk)
    campaign.refresh_from_db()
    return policy


@pytest.fixture
def pairs(campaign, tiny_policy) -> PairFactory:
    return PairFactory(campaign=campaign, policy=tiny_policy)


@pytest.fixture
def artifacts(settings, tmp_path):
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    return settings.ARTIFACTS_DIR
