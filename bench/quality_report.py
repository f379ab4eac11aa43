"""How long the campaign quality dashboard's computations take as a campaign grows: does the Dawid-Skene
reliability fit need caching?

    .venv/bin/python bench/quality_report.py [--judgments 1000,10000,50000] [--repeats 3] [--database-url postgres://...]

Runs in a throwaway database (a temporary SQLite file unless --database-url names one, which must be
empty). For each size it seeds one campaign of about that many human judgments: 3 per regular pair
(complete, as labeling.queue.record_judgment leaves them) and a twentieth of them on gold pairs every
annotator judges (open, as gold stays); 12 annotators, of whom one always picks the left side and two answer
at random; some ties; about one pair in fifty also skipped by a fourth annotator; judged over the last 14 days.
Then it times, each `--repeats` times (the median is reported, wall and CPU):
- reliability: labeling.quality.campaign_reliability, what training/export.py and
  training.services.pairs_score_and_select pay (the judgments read, then the fit);
- fit: labeling.reliability.dawid_skene alone, on the same judgments read beforehand;
- report: labeling.quality.campaign_report (every figure, the fit among them);
- plot_png: labeling.quality.report_plot_png of a report computed beforehand;
- page and plot_view: the dashboard (URL campaign-dashboard) and its image (campaign-dashboard-plot) through
  Django's test Client as a staff user (visit_s: page_s + plot_view_s). The figures below are from before
  the image read only its series (quality.campaign_series): each view then computed the whole report, fit
  included, so a visit paid for it twice, and the image for a fit it does not draw.
Each size's line also gives the SQL queries of one page and one image request. CPU is this process's:
on PostgreSQL the database server's is not counted.

Prints a JSON line per size as it ends and one JSON line last: per size the medians in seconds, the CPU
seconds and the seconds per 1,000 judgments; wall_s and cpu_s of the whole run.

Measured on 2 cores that another heavy job may share (load 1.7-2.5 during the runs), hence CPU seconds beside
wall seconds; the two differed by under 3% here. Defaults, SQLite, 29.2 s wall, 28.6 s CPU; medians in seconds:

    judgments  reliability  fit    report  plot_png  page   plot_view  visit
    999        0.023        0.017  0.031   0.20      0.053  0.23       0.28
    9,999      0.16         0.11   0.21    0.19      0.24   0.40       0.64
    49,998     0.70         0.36   0.94    0.19      0.99   1.13       2.12 (CPU 2.09)
    199,998    2.70         1.42   3.89    0.19      4.09   4.12       8.21 (--judgments 200000: 75.5 s wall)

Linear from 10,000 on: per 1,000 judgments reliability 0.014 s (the fit half of it, reading the rows the
other half), report 0.019-0.021 s, a visit 0.041-0.064 s (0.2 s of it drawing, whatever the size). The
queries do not grow with the campaign: 10 for the page, 9 for the image. The fit took 118 and 124 EM
iterations at 200,000 and 50,000 judgments; at 999 and 9,999 it stopped at its cap, then 200, without
converging: it converges in 250 and 270 (posteriors within 3e-4 of the capped fit's), hence a cap of 500
since. PostgreSQL on the same machine (40.9 s wall, 32.4 s CPU), 49,998 judgments: reliability 0.78 s,
fit 0.36, report 1.09, page 1.13, plot_view 1.32, visit 2.45 (this process's CPU 2.03).
"""

import argparse
import json
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if TYPE_CHECKING:
    from django.test import Client

    from labeling.models import Campaign

ANNOTATORS = 12
PER_PAIR = 3
GOLD_SHARE = 0.05  # of the judgments: on gold pairs, each judged by every annotator
SKIP_SHARE = 0.02  # of the regular pairs: also given back unjudged by another annotator
SPAN = timedelta(days=14)
CHUNK = 1000  # pairs written per transaction


def answer(rng: random.Random, kind: str, truth: str, left_is_a: bool) -> str:
    """A choice (a, b, tie, both_bad) from an annotator of `kind` on a pair whose truth is a, b or tie."""
    if kind == "left":
        return "a" if left_is_a else "b"
    if kind == "random":
        return rng.choice(("a", "b", "tie", "both_bad"))
    if truth == "tie":
        return rng.choices(("tie", "both_bad", "a", "b"), weights=(60, 15, 12.5, 12.5))[0]
    wrong = "b" if truth == "a" else "a"
    return rng.choices((truth, wrong, "tie", "both_bad"), weights=(80, 8, 8, 4))[0]


def seed_pairs(
    *,
    campaign_id: int,
    first: int,
    gold: list[bool],
    annotators: list[tuple[int, str]],
    policy_id: int,
    rng: random.Random,
    now: datetime,
) -> int:
    """One chunk of pairs (gold or not, numbered from `first`) with their assignments and judgments; returns
    the judgments written.

    labeling.bulk.insert, not bulk_create: bulk_create stamps auto_now_add columns with the time of the
    call, and the report's series and last-hour / last-day counts need created_at spread over SPAN."""
    from django.db import connection

    from generation.models import Completion
    from labeling import bulk
    from labeling.models import Assignment, AssignmentState, Comparison, ComparisonStatus, Judgment, Prompt, pair_digest

    stamp = connection.ops.adapt_datetimefield_value

    def lease(comparison: int, annotator: int, left_is_a: bool, state: str, at: datetime) -> tuple:
        return comparison, annotator, left_is_a, stamp(at + timedelta(minutes=10)), state, stamp(at)

    numbers = range(first, first + len(gold))
    prompts = bulk.insert(
        Prompt,
        columns=("campaign", "text", "content_hash"),
        rows=[(campaign_id, f"Prompt {i}: explain the tides in two sentences.", f"bench-{i}") for i in numbers],
    )
    texts = [(f"Answer a to prompt {i}: the moon pulls the sea.", f"Answer b to prompt {i}: the sun.") for i in numbers]
    completions = bulk.insert(
        Completion,
        columns=("prompt", "model_version", "text", "backend"),
        rows=[(prompt, policy_id, text, "bench") for prompt, pair in zip(prompts, texts) for text in pair],
    )
    truths = rng.choices(("a", "b", "tie"), weights=(45, 40, 15), k=len(gold))
    judges = [annotators if is_gold else rng.sample(annotators, PER_PAIR) for is_gold in gold]
    # As labeling.queue.record_judgment leaves them: a regular pair completes at N, a gold pair stays open.
    status = {True: ComparisonStatus.OPEN.value, False: ComparisonStatus.COMPLETE.value}
    comparisons = bulk.insert(
        Comparison,
        columns=(
            "prompt", "completion_a", "completion_b", "texts_digest", "is_gold", "gold_choice", "judgments_count", "status"
        ),
        rows=[
            (prompt, a, b, pair_digest(*pair), is_gold, truth if is_gold else "", len(who), status[is_gold])
            for prompt, a, b, pair, is_gold, truth, who in zip(
                prompts, completions[::2], completions[1::2], texts, gold, truths, judges
            )
        ],
    )
    leases, answers, skips = [], [], []
    for comparison, truth, who in zip(comparisons, truths, judges):
        for annotator, kind in who:
            left_is_a = rng.random() < 0.5
            time_ms = int(rng.lognormvariate(9.3, 0.6))  # median ~11 s
            answered = now - SPAN * rng.random()
            leased = answered - timedelta(milliseconds=time_ms)
            leases.append(lease(comparison, annotator, left_is_a, AssignmentState.SUBMITTED.value, leased))
            choice = answer(rng, kind, truth, left_is_a)
            answers.append((comparison, annotator, choice, left_is_a, time_ms, stamp(answered)))
        others = [annotator for annotator in annotators if annotator not in who]
        if others and rng.random() < SKIP_SHARE:
            skipper, _ = rng.choice(others)
            leased = now - SPAN * rng.random()
            skips.append(lease(comparison, skipper, rng.random() < 0.5, AssignmentState.SKIPPED.value, leased))
    lease_columns = ("comparison", "annotator", "left_is_a", "leased_until", "state", "created_at")
    assignments = bulk.insert(Assignment, columns=lease_columns, rows=leases)
    bulk.insert(Assignment, columns=lease_columns, rows=skips)
    bulk.insert(
        Judgment,
        columns=("assignment", "comparison", "annotator", "choice", "left_is_a", "time_ms", "created_at"),
        rows=[(assignment, *row) for assignment, row in zip(assignments, answers)],
    )
    return len(answers)


def seed_campaign(
    *, judgments: int, annotators: list[tuple[int, str]], policy_id: int, rng: random.Random
) -> "Campaign":
    """A campaign of about `judgments` human judgments (see the module docstring)."""
    from django.db import transaction
    from django.utils import timezone
    from tqdm import tqdm

    from labeling.models import Campaign

    campaign = Campaign.objects.create(
        name=f"quality bench {judgments}",
        annotations_per_pair=PER_PAIR,
        gold_rate=GOLD_SHARE,
        guidelines="Pick the better answer.",
    )
    gold_pairs = max(1, round(judgments * GOLD_SHARE / len(annotators)))
    regular_pairs = (judgments - gold_pairs * len(annotators)) // PER_PAIR
    gold = [True] * gold_pairs + [False] * regular_pairs
    rng.shuffle(gold)
    now = timezone.now()
    total = gold_pairs * len(annotators) + regular_pairs * PER_PAIR
    with tqdm(total=total, unit="judgment", desc=f"seeding {judgments}") as bar:
        for first in range(0, len(gold), CHUNK):
            with transaction.atomic():
                written = seed_pairs(
                    campaign_id=campaign.pk,
                    first=first,
                    gold=gold[first : first + CHUNK],
                    annotators=annotators,
                    policy_id=policy_id,
                    rng=rng,
                    now=now,
                )
            bar.update(written)
    return campaign


def timed(call: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of `repeats` calls."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        call()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def measure(*, campaign: "Campaign", client: "Client", repeats: int) -> dict:
    """The size's medians, CPU medians and seconds per 1,000 judgments, and the queries of one visit."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    from labeling import quality, reliability

    page_url = reverse("campaign-dashboard", args=[campaign.pk])
    plot_url = reverse("campaign-dashboard-plot", args=[campaign.pk])

    def get(url: str) -> None:
        response = client.get(url)
        if response.status_code != 200:
            raise SystemExit(f"GET {url} answered {response.status_code}")

    observations, gold = quality.reliability_input(campaign=campaign)
    fit = reliability.dawid_skene(observations, gold=gold)
    report = quality.campaign_report(campaign=campaign)
    calls = {
        "reliability": lambda: quality.campaign_reliability(campaign=campaign),
        "fit": lambda: reliability.dawid_skene(observations, gold=gold),
        "report": lambda: quality.campaign_report(campaign=campaign),
        "plot_png": lambda: quality.report_plot_png(report),
        "page": lambda: get(page_url),
        "plot_view": lambda: get(plot_url),
    }
    seconds, cpu = {}, {}
    for name, call in calls.items():
        seconds[name], cpu[name] = timed(call, repeats)
    seconds["visit"], cpu["visit"] = seconds["page"] + seconds["plot_view"], cpu["page"] + cpu["plot_view"]
    queries = {}
    for name, url in (("page", page_url), ("plot_view", plot_url)):
        with CaptureQueriesContext(connection) as captured:
            get(url)
        queries[name] = len(captured)
    return {
        "judgments": len(observations),
        "pairs": campaign.prompts.count(),
        "gold_pairs": len(gold),
        "fit_iterations": fit.iterations,
        "fit_converged": fit.converged,
        **{f"{name}_s": round(value, 4) for name, value in seconds.items()},
        **{f"{name}_cpu_s": round(value, 4) for name, value in cpu.items()},
        **{f"{name}_s_per_1k": round(1000 * value / len(observations), 4) for name, value in seconds.items()},
        **{f"{name}_queries": value for name, value in queries.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--judgments", default="1000,10000,50000", help="Campaign sizes, comma-separated.")
    parser.add_argument("--repeats", type=int, default=3, help="Timings per measure; the median is reported.")
    parser.add_argument("--database-url", help="An empty database to use instead of a temporary SQLite file.")
    args = parser.parse_args()
    sizes = [int(size) for size in args.judgments.split(",")]
    if min(sizes) < ANNOTATORS * PER_PAIR:
        parser.error(f"every size must be at least {ANNOTATORS * PER_PAIR} judgments")

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench-quality-"))
    os.environ["VAR_DIR"] = str(work)
    os.environ["DATABASE_URL"] = args.database_url or f"sqlite:///{work / 'db.sqlite3'}"
    os.environ.setdefault("SECRET_KEY", secrets.token_hex(32))  # a deployment's DATABASE_URL needs one
    os.environ["ALLOWED_HOSTS"] = "testserver"  # the test Client's host name
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from generation.models import ModelVersion

    call_command("migrate", verbosity=0)
    # The first dashboard of a process imports scipy and matplotlib (~1-2 s): paid here, not in a timing.
    import matplotlib.figure  # noqa: F401
    import scipy.stats  # noqa: F401

    kinds = ["left", "random", "random"] + ["careful"] * (ANNOTATORS - 3)
    users = User.objects.bulk_create(
        [User(username=f"annotator{i:02d}", password=make_password(None)) for i in range(ANNOTATORS)]
    )
    annotators = [(user.pk, kind) for user, kind in zip(users, kinds)]
    client = Client()
    client.force_login(User.objects.create_user(username="bench-staff", is_staff=True))
    policy = ModelVersion.objects.create(name="bench-policy", base_path="bench")
    rng = random.Random(0)
    results = []
    for size in sizes:
        seed_started = time.perf_counter()
        campaign = seed_campaign(judgments=size, annotators=annotators, policy_id=policy.pk, rng=rng)
        result = {"size": size, "seed_s": round(time.perf_counter() - seed_started, 2)}
        result.update(measure(campaign=campaign, client=client, repeats=args.repeats))
        results.append(result)
        print(json.dumps(result), flush=True)
    print(
        json.dumps(
            {
                "bench": "quality_report",
                "database": connection.vendor,
                "repeats": args.repeats,
                "sizes": results,
                "wall_s": round(time.perf_counter() - started, 1),
                "cpu_s": round(time.process_time(), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
