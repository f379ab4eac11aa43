import hashlib
import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from django.contrib.auth.models import Group, User
from django.db import transaction
from django.db.models import QuerySet
from tqdm import tqdm

from labeling import importers
from labeling.models import Campaign, Prompt, Split, Tag

ANNOTATOR_GROUP = "annotators"
_BATCH = 2000


@dataclass(frozen=True)
class ImportResult:
    created: int
    duplicates: int

    def __str__(self) -> str:
        return f"imported {self.created} prompts, skipped {self.duplicates} duplicates"


def _counting(stream: Iterable[str], bar: tqdm) -> Iterator[str]:
    """Yields the stream's lines, advancing a byte-sized progress bar."""
    for line in stream:
        bar.update(len(line.encode("utf-8")))
        yield line


def prompts_import(
    *,
    campaign: Campaign,
    stream: io.TextIOBase,
    source: str,
    fmt: str | None = None,
    size: int | None = None,
    progress: bool = False,
) -> ImportResult:
    """Import a prompt file whole or not at all.

    The file is parsed and validated first (a bad line raises PromptFileError
    naming it); only then is anything written, in one transaction. Prompts whose
    normalized content already exists in the campaign, or repeats earlier in the
    file, are skipped and counted.
    """
    fmt = fmt or importers.detect_format(source)
    name = os.path.basename(source)
    with tqdm(total=size, unit="B", unit_scale=True, desc=f"reading {name}", disable=not progress) as bar:
        rows = list(importers.parse(_counting(stream, bar), source=name, fmt=fmt))

    with transaction.atomic():
        # Lock the campaign row: concurrent imports into one campaign queue up
        # instead of racing on the unique content hash.
        Campaign.objects.select_for_update().get(pk=campaign.pk)
        existing = set(Prompt.objects.filter(campaign=campaign).values_list("content_hash", flat=True))
        fresh: dict[str, importers.PromptRow] = {}
        for row in rows:
            key = row.content_hash
            if key not in existing and key not in fresh:
                fresh[key] = row
        prompts = [
            Prompt(
                campaign=campaign,
                text=row.text,
                messages=row.messages,
                content_hash=key,
                split=row.split,
                priority=row.priority,
                source=name[:255],
                external_id=row.external_id,
            )
            for key, row in fresh.items()
        ]
        for start in tqdm(range(0, len(prompts), _BATCH), desc="storing", unit="batch", disable=not progress):
            Prompt.objects.bulk_create(prompts[start : start + _BATCH])
        _attach_tags(prompts, [row.tags for row in fresh.values()])
    return ImportResult(created=len(prompts), duplicates=len(rows) - len(prompts))


def _attach_tags(prompts: list[Prompt], tag_lists: list[list[str]]) -> None:
    names = {name for tags in tag_lists for name in tags}
    if not names:
        return
    Tag.objects.bulk_create([Tag(name=n) for n in names], ignore_conflicts=True)
    tag_ids = dict(Tag.objects.filter(name__in=names).values_list("name", "id"))
    through = Prompt.tags.through
    links = [
        through(prompt_id=prompt.pk, tag_id=tag_ids[name])
        for prompt, tags in zip(prompts, tag_lists)
        for name in tags
    ]
    through.objects.bulk_create(links, batch_size=_BATCH)


def prompts_set_enabled(*, prompts: QuerySet[Prompt], enabled: bool) -> int:
    return prompts.update(enabled=enabled)


def _heldout_draw(seed: int, content_hash: str) -> float:
    digest = hashlib.sha256(f"{seed}:{content_hash}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@transaction.atomic
def prompts_assign_heldout(*, prompts: QuerySet[Prompt], fraction: float, seed: int) -> int:
    """Put about `fraction` of `prompts` in the held-out split, the rest in train.

    Each prompt's side depends only on (seed, its content hash): the same seed
    gives the same split on any machine, and adding prompts never moves old ones.
    Returns how many prompts are held out.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be between 0 and 1, not {fraction}")
    heldout, train = [], []
    for pk, key in prompts.values_list("pk", "content_hash").iterator(chunk_size=_BATCH):
        (heldout if _heldout_draw(seed, key) < fraction else train).append(pk)
    for ids, split in ((heldout, Split.HELDOUT), (train, Split.TRAIN)):
        for start in range(0, len(ids), _BATCH):
            Prompt.objects.filter(pk__in=ids[start : start + _BATCH]).update(split=split)
    return len(heldout)


def campaign_get_or_create(*, name: str, **defaults: object) -> tuple[Campaign, bool]:
    return Campaign.objects.get_or_create(name=name, defaults=defaults)


@transaction.atomic
def annotator_create(*, username: str, password: str, email: str = "") -> User:
    """Create (or update the password of) an annotator: a non-staff user in the annotators group."""
    user, _ = User.objects.get_or_create(username=username, defaults={"email": email})
    user.set_password(password)
    user.save()
    group, _ = Group.objects.get_or_create(name=ANNOTATOR_GROUP)
    user.groups.add(group)
    return user



def campaign_set_active_policy(*, campaign: Campaign, policy_id: int | None) -> Campaign:
    """Point the campaign's generator at another policy (a generation.ModelVersion id)."""
    campaign.active_policy_id = policy_id
    campaign.save(update_fields=["active_policy"])
    return campaign
