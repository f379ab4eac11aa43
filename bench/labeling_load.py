"""Load test of the labeling queue over HTTP: K simulated annotators against gunicorn on PostgreSQL.

    .venv/bin/python bench/labeling_load.py [--comparisons 100000] [--annotators 50]
        [--think-ms 500] [--seconds 30] [--per-pair 3] [--undo-share 0.05] [--postgres postgres://postgres@127.0.0.1:5432]

Creates its own database (labeling_bench, dropped again unless --keep-db),
bulk-loads a campaign, starts gunicorn on 127.0.0.1 and runs the annotators
for --seconds: each starts at a random point within one think time, then
leases a pair (POST next), pauses --think-ms, then submits
(about 5% of the time it skips instead, and about 5% of submits are sent
twice, as a double click would); after --undo-share of its submits it undoes
the answer at once and answers again (reported as `undos`). Afterwards it stops
gunicorn and counts from the database: double assignments, lost judgments (a
2xx submit with no Judgment row, or an undone one whose new answer or old-answer
revision is missing), duplicate judgments and over-filled pairs. Prints one JSON line last.

CPU per request is given for gunicorn, the run's PostgreSQL backends and the
clients; database_buffers_per_request counts the shared-buffer pages PostgreSQL
touched per request, the same work counted rather than timed, which other load
on the machine does not move. Both PostgreSQL figures, 1M pairs against 100k:
50 annotators each, CPU 1.75 / 1.71 ms, buffers 172.9 / 163.9 (ratios 1.02 and
1.05); 200 annotators at 1M against 50 at 100k: CPU 2.36 / 1.71 (1.38), buffers
246.9 / 163.9 (1.51). What grows there is the number of annotators, not of pairs
(200 at 100k: 2.77 ms, 370.0 buffers): every claim walks past the pairs whose
slots are all leased, about annotators / N of them at the head of the queue
(46 per claim with 200, 17 with 50, from pg_stat_user_indexes).
"""

import argparse
import http.client
import json
import math
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def create_database(server_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(f"{server_url}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(server_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(f"{server_url}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def insert_select(model, exprs: dict[str, str], tail: str, params: list) -> int:
    """INSERT INTO model's table SELECT ... computed in the database (no rows through Python).

    Columns not in `exprs` get the model field's default, so the bench keeps
    working when a field with a default is added. `exprs` take no parameters
    (the defaults' come first); `params` are for `tail`.
    """
    from django.db import connection

    columns, values, args = [], [], []
    for f in model._meta.concrete_fields:
        if f.primary_key:
            continue
        columns.append(connection.ops.quote_name(f.column))
        if f.attname in exprs:
            values.append(exprs[f.attname])
        else:
            values.append("%s")
            args.append(f.get_db_prep_save(f.get_default(), connection))
    sql = f"INSERT INTO {model._meta.db_table} ({', '.join(columns)}) SELECT {', '.join(values)} {tail}"
    with connection.cursor() as cursor:
        cursor.execute(sql, [*args, *params])
        return cursor.rowcount


def load_campaign(*, comparisons: int, annotators: int, per_pair: int) -> tuple[int, list[str]]:
    """The campaign (one prompt per pair, four priority levels) and annotator tokens."""
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import User
    from django.db import DatabaseError, connection, transaction
    from rest_framework.authtoken.models import Token

    from generation.models import Completion, ModelVersion
    from labeling.authentication import token_key
    from labeling.models import Campaign, Comparison, Prompt

    with transaction.atomic():
        campaign = Campaign.objects.create(
            name="bench", annotations_per_pair=per_pair, lease_seconds=600, guidelines="Pick the better answer."
        )
        policy = ModelVersion.objects.create(name="bench-policy", base_path="bench")
        insert_select(
            Prompt,
            {
                "campaign_id": str(int(campaign.pk)),
                "text": "'Prompt ' || g || ': explain the tides in two sentences.'",
                "content_hash": "md5('bench' || g)",
                "priority": "g %% 4",
                "created_at": "now()",
            },
            "FROM generate_series(1, %s) AS g",
            [comparisons],
        )
        insert_select(
            Completion,
            {
                "prompt_id": "p.id",
                "model_version_id": str(int(policy.pk)),
                "text": "'Answer ' || side || ' to prompt ' || p.id || E'.\\n\\nThe **moon** pulls the sea; `tides` follow.'",
                "backend": "'bench'",
                "created_at": "now()",
            },
            "FROM labeling_prompt p CROSS JOIN (VALUES ('a'), ('b')) AS s(side) WHERE p.campaign_id = %s",
            [campaign.pk],
        )
        insert_select(
            Comparison,
            {
                "prompt_id": "p.id",
                "completion_a_id": "min(c.id)",
                "completion_b_id": "max(c.id)",
                "priority": "p.priority",
                "created_at": "now()",
            },
            "FROM labeling_prompt p JOIN generation_completion c ON c.prompt_id = p.id "
            "WHERE p.campaign_id = %s GROUP BY p.id, p.priority",
            [campaign.pk],
        )
        # One password hash for all (PBKDF2 costs ~0.5 s each); tokens written directly.
        password = make_password("bench-password")
        users = User.objects.bulk_create(
            [User(username=f"bench{i:03d}", password=password) for i in range(annotators)]
        )
        tokens = Token.objects.bulk_create([Token(user=u, key=token_key(user=u)) for u in users])
    # Settle the bulk load before timing: statistics and the visibility map now (else
    # autovacuum does it mid-run), and its ~100 MB of WAL flushed by a checkpoint now
    # (else one lands mid-run and every commit waits on the disk behind it).
    # Only the loaded tables: the ones the run fills (assignments, judgments) stay never
    # analyzed. Analyzed while empty, they told the planner "no rows", so every claim's
    # checks (seen by me? room left?) scanned the whole assignment table for each pair it
    # looked at, for as long as the run outlasted autovacuum's first look (a minute): a
    # cost no deployment with any history pays, and one that grew through the run.
    loaded = [Prompt, Completion, Comparison, Campaign, ModelVersion, User, Token]
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE " + ", ".join(connection.ops.quote_name(m._meta.db_table) for m in loaded))
        try:
            cursor.execute("CHECKPOINT")
        except DatabaseError as exc:  # needs superuser or pg_checkpoint
            log(f"no CHECKPOINT before the run: {exc}")
    return campaign.pk, [t.key for t in tokens]


def explain_claim(campaign_id: int) -> str:
    """The claim query's plan (EXPLAIN ANALYZE) for a fresh annotator."""
    from django.contrib.auth.models import User
    from django.db import connection, transaction
    from django.utils import timezone

    from labeling import queue
    from labeling.models import Campaign

    sql, params = queue.comparison_claim_sql(
        campaign=Campaign.objects.get(pk=campaign_id),
        annotator=User.objects.filter(username__startswith="bench").first(),
        gold=False,
        now=timezone.now(),
        exclude=[],
        lock="skip",
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("EXPLAIN ANALYZE " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gunicorn(*, env: dict, port: int, workers: int, threads: int) -> subprocess.Popen:
    command = [
        str(ROOT / ".venv" / "bin" / "gunicorn"),
        "config.wsgi:application",
        "--bind", f"127.0.0.1:{port}",
        "--worker-class", "gthread",
        "--workers", str(workers),
        "--threads", str(threads),
        "--keep-alive", "30",
        "--log-level", "warning",
    ]  # fmt: skip
    server = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise SystemExit(f"gunicorn exited with {server.returncode}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/login/")
                if conn.getresponse().status == 200:
                    return server
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.3)
        raise SystemExit("gunicorn did not answer within 90 s")
    except BaseException:
        stop_gunicorn(server)
        raise


def warm_up(*, port: int, token: str, campaign_id: int, requests_count: int) -> None:
    """Concurrent requests so every worker has imported the URLconf and opened its connection before timing starts."""

    def stats() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", f"/api/labeling/campaigns/{campaign_id}/me/", headers={"Authorization": f"Token {token}"})
        conn.getresponse().read()

    threads = [threading.Thread(target=stats) for _ in range(requests_count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def stop_gunicorn(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


@dataclass
class Tally:
    next_ms: list[float] = field(default_factory=list)
    submit_ms: list[float] = field(default_factory=list)
    accepted: set[int] = field(default_factory=set)  # assignments with a 2xx submit
    created: Counter = field(default_factory=Counter)  # assignment -> submits that said created=True
    statuses: Counter = field(default_factory=Counter)
    revised: dict[int, str] = field(default_factory=dict)  # undone assignment -> the stored choice it was answered with again
    skips: int = 0
    repeats: int = 0
    exhausted: int = 0


class Client:
    """One annotator's keep-alive HTTP connection (http.client: a fraction of requests' CPU per call,
    which matters when 50 clients share two cores with the server)."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, path: str, body: dict | None = None) -> tuple[int, dict | None]:
        payload = json.dumps(body or {})
        # Every call here is safe to repeat (next returns the held lease, submit and skip are
        # idempotent), so a keep-alive connection the server closed is simply reopened once.
        for attempt in (1, 2):
            try:
                self.conn.request("POST", path, payload, self.headers)
                response = self.conn.getresponse()
                data = response.read()
                return response.status, json.loads(data) if data else None
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def annotate(
    *,
    port: int,
    campaign_id: int,
    token: str,
    think_s: float,
    undo_share: float,
    deadline: float,
    seed: int,
    tally: Tally,
    lock: threading.Lock,
) -> None:
    rng = random.Random(seed)
    client = Client(port, token)
    mine = Tally()
    # Annotators do not all press a key in the same millisecond: each starts at a random
    # point of one think time (a ramp-up), so the run measures steady load, not a
    # thundering herd of K simultaneous first requests.
    time.sleep(rng.uniform(0, think_s))
    while time.monotonic() < deadline:
        started = time.perf_counter()
        status, pair = client.post(f"/api/labeling/campaigns/{campaign_id}/next/")
        mine.next_ms.append((time.perf_counter() - started) * 1000)
        mine.statuses[f"next {status}"] += 1
        if status == 204:
            mine.exhausted += 1
            break
        if status != 200:
            continue
        if think_s:
            time.sleep(think_s)
        assignment = pair["assignment_id"]
        if rng.random() < 0.05:
            status, _ = client.post(f"/api/labeling/assignments/{assignment}/skip/")
            mine.statuses[f"skip {status}"] += 1
            mine.skips += 1
            continue
        body = {"choice": rng.choice(pair["choices"]), "time_ms": rng.randint(2000, 30000)}
        sends = 2 if rng.random() < 0.05 else 1  # a double click
        mine.repeats += sends - 1
        for _ in range(sends):
            started = time.perf_counter()
            status, result = client.post(f"/api/labeling/assignments/{assignment}/submit/", body)
            mine.submit_ms.append((time.perf_counter() - started) * 1000)
            mine.statuses[f"submit {status}"] += 1
            if 200 <= status < 300:
                mine.accepted.add(assignment)
                mine.created[assignment] += result["created"]
        if assignment in mine.accepted and rng.random() < undo_share:
            status, _ = client.post(f"/api/labeling/assignments/{assignment}/undo/")
            mine.statuses[f"undo {status}"] += 1
            if status == 200:
                body = {"choice": rng.choice([c for c in pair["choices"] if c != body["choice"]])}
                status, result = client.post(f"/api/labeling/assignments/{assignment}/submit/", body)
                mine.statuses[f"resubmit {status}"] += 1
                if status == 200 and result["revised"]:
                    mine.revised[assignment] = result["stored_choice"]
    client.conn.close()
    with lock:
        tally.next_ms += mine.next_ms
        tally.submit_ms += mine.submit_ms
        tally.accepted |= mine.accepted
        tally.created.update(mine.created)
        tally.revised.update(mine.revised)
        tally.statuses.update(mine.statuses)
        tally.skips += mine.skips
        tally.repeats += mine.repeats
        tally.exhausted += mine.exhausted


def process_cpu(pid: int) -> tuple[int, float] | None:
    """(process group, user + system CPU seconds) of a live process, from /proc; None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[2]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # fields 5, 14, 15 of stat


def cpu_seconds(*, pgid: int) -> float:
    """User + system CPU of the live processes in a process group (gunicorn)."""
    found = (process_cpu(int(entry.name)) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    return sum(seconds for group, seconds in filter(None, found) if group == pgid)


def backend_cpu(database: str) -> dict[int, float]:
    """CPU seconds (user + system) of each live PostgreSQL backend connected to `database`, by pid.

    The server's own processes are shared with whatever else runs on the machine (other databases'
    clients come and go), so summing every postgres process mixed their work into this run's figure
    and could even go negative when one exited; the bench's own backends are gunicorn's persistent
    connections (CONN_MAX_AGE), alive from their first request to the end of the run."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [database])
        pids = [row[0] for row in cursor.fetchall()]
    connection.close()
    # A pid missing from /proc: already gone, or the server runs on another machine.
    return {pid: cpu[1] for pid in pids if (cpu := process_cpu(pid)) is not None}


def database_buffers(database: str) -> int:
    """Shared-buffer pages PostgreSQL has touched (hits + reads) in `database` so far.

    The work behind database CPU, counted rather than timed: unlike CPU seconds on a
    shared machine, it does not move with the load. A backend reports its counts when
    it goes idle or exits (see backends_gone)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT blks_hit + blks_read FROM pg_stat_database WHERE datname = %s", [database])
        (pages,) = cursor.fetchone()
    connection.close()
    return pages


def backends_gone(database: str, *, timeout_s: float = 10) -> None:
    """Wait until no other client is connected to `database` (gunicorn's backends exit a moment
    after gunicorn does, and report their last counts as they go)."""
    from django.db import connection

    deadline = time.monotonic() + timeout_s
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
                " AND backend_type = 'client backend'",
                [database],
            )
            if cursor.fetchone()[0] == 0:
                return
            time.sleep(0.05)
    log(f"PostgreSQL backends of {database} still connected after {timeout_s} s: buffer counts may be short")


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)], 1)


def audit(*, per_pair: int, accepted: set[int], created: Counter, revised: dict[int, str]) -> dict:
    """Counts taken from the database after the run (and the clients' record of accepted submits and revisions)."""
    from django.db import connection

    from labeling.models import Judgment, JudgmentRevision

    def scalar(sql: str, params: list | None = None) -> int:
        with connection.cursor() as cursor:
            cursor.execute(sql, params or [])
            return cursor.fetchone()[0]

    stored = set(Judgment.objects.filter(assignment_id__in=accepted).values_list("assignment_id", flat=True))
    # An undone judgment must hold its new answer and keep the old one as exactly one revision.
    now_stored = dict(Judgment.objects.filter(assignment_id__in=revised).values_list("assignment_id", "choice"))
    revisions = Counter(
        JudgmentRevision.objects.filter(judgment__assignment_id__in=revised).values_list("judgment__assignment_id", flat=True)
    )
    lost_revisions = sum(now_stored.get(a) != choice or revisions[a] != 1 for a, choice in revised.items())
    return {
        # The same pair leased twice to one annotator, or to more annotators at once than N.
        "double_assignments": scalar(
            "SELECT count(*) FROM (SELECT 1 FROM labeling_assignment GROUP BY comparison_id, annotator_id"
            " HAVING count(*) > 1) d"
        )
        + scalar(
            "SELECT count(*) FROM (SELECT 1 FROM labeling_assignment a JOIN labeling_comparison c"
            " ON c.id = a.comparison_id WHERE NOT c.is_gold AND a.state IN ('leased', 'submitted')"
            " GROUP BY a.comparison_id HAVING count(*) > %s) d",
            [per_pair],
        ),
        "lost_judgments": len(accepted - stored) + lost_revisions,
        "duplicate_judgments": scalar(
            "SELECT count(*) - count(DISTINCT (comparison_id, annotator_id)) FROM labeling_judgment"
        )
        + sum(n - 1 for n in created.values() if n > 1),
        "overfilled_comparisons": scalar(
            "SELECT count(*) FROM (SELECT 1 FROM labeling_judgment j JOIN labeling_comparison c"
            " ON c.id = j.comparison_id WHERE NOT c.is_gold GROUP BY j.comparison_id HAVING count(*) > %s) d",
            [per_pair],
        ),
        "count_mismatches": scalar(
            "SELECT count(*) FROM labeling_comparison c WHERE c.judgments_count <>"
            " (SELECT count(*) FROM labeling_judgment j WHERE j.comparison_id = c.id)"
        ),
        "judgments": Judgment.objects.count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comparisons", type=int, default=100_000)
    parser.add_argument("--annotators", type=int, default=50)
    parser.add_argument("--think-ms", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--per-pair", type=int, default=3, help="The campaign's N.")
    parser.add_argument("--undo-share", type=float, default=0.05, help="Share of submits undone and answered again.")
    # The README's production command. 3 x 8 on this 2-core machine: next p99 161-193 ms against 84-188 (median
    # 107) in four runs each; 8 threads of one process queue on its GIL.
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes.")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker.")
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432", help="Server URL, no database.")
    parser.add_argument("--database", default="labeling_bench")
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args()

    url = f"{args.postgres.rstrip('/')}/{args.database}"
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DEBUG": "0",
        "SECRET_KEY": "bench-" + secrets.token_hex(16),
        "ALLOWED_HOSTS": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)  # this process sets up and audits the same database gunicorn serves
    create_database(args.postgres.rstrip("/"), args.database)
    server = None
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection

        started = time.perf_counter()
        call_command("migrate", verbosity=0)
        migrate_s = time.perf_counter() - started
        started = time.perf_counter()
        campaign_id, tokens = load_campaign(
            comparisons=args.comparisons, annotators=args.annotators, per_pair=args.per_pair
        )
        load_s = time.perf_counter() - started
        log(f"migrated in {migrate_s:.1f} s; loaded {args.comparisons} comparisons in {load_s:.1f} s")
        log("claim query plan:\n" + explain_claim(campaign_id))
        connection.close()

        port = free_port()
        server = start_gunicorn(env=env, port=port, workers=args.workers, threads=args.threads)
        warm_up(port=port, token=tokens[0], campaign_id=campaign_id, requests_count=args.workers * args.threads)
        tally, lock = Tally(), threading.Lock()
        deadline = time.monotonic() + args.seconds
        threads = [
            threading.Thread(
                target=annotate,
                kwargs={
                    "port": port,
                    "campaign_id": campaign_id,
                    "token": token,
                    "think_s": args.think_ms / 1000,
                    "undo_share": args.undo_share,
                    "deadline": deadline,
                    "seed": i,
                    "tally": tally,
                    "lock": lock,
                },
            )
            for i, token in enumerate(tokens)
        ]
        loadavg = os.getloadavg()[0]
        server_cpu, client_cpu = cpu_seconds(pgid=server.pid), time.process_time()
        database_cpu, buffers = backend_cpu(args.database), database_buffers(args.database)
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        server_cpu, client_cpu = cpu_seconds(pgid=server.pid) - server_cpu, time.process_time() - client_cpu
        database_cpu = sum(seconds - database_cpu.get(pid, 0.0) for pid, seconds in backend_cpu(args.database).items())
        stop_gunicorn(server)
        server = None
        backends_gone(args.database)
        buffers = database_buffers(args.database) - buffers
        counts = audit(per_pair=args.per_pair, accepted=tally.accepted, created=tally.created, revised=tally.revised)
        log(f"responses: {dict(sorted(tally.statuses.items()))}")
        requests = max(1, sum(tally.statuses.values()))
        result = {
            "judgments_per_s": round(counts["judgments"] / elapsed, 1),
            "next_p50_ms": percentile(tally.next_ms, 50),
            "next_p95_ms": percentile(tally.next_ms, 95),
            "next_p99_ms": percentile(tally.next_ms, 99),
            "submit_p50_ms": percentile(tally.submit_ms, 50),
            "submit_p99_ms": percentile(tally.submit_ms, 99),
            "double_assignments": counts["double_assignments"],
            "lost_judgments": counts["lost_judgments"],
            "duplicate_judgments": counts["duplicate_judgments"],
            "overfilled_comparisons": counts["overfilled_comparisons"],
            "count_mismatches": counts["count_mismatches"],
            "judgments": counts["judgments"],
            "skips": tally.skips,
            "repeated_submits": tally.repeats,
            "undos": len(tally.revised),
            "errors": sum(n for k, n in tally.statuses.items() if not k.endswith((" 200", " 201", " 204"))),
            "annotators": args.annotators,
            "comparisons": args.comparisons,
            "per_pair": args.per_pair,
            "think_ms": args.think_ms,
            "seconds": round(elapsed, 1),
            "gunicorn": f"{args.workers}x{args.threads} gthread",
            "load_s": round(load_s, 1),
            # Where the two cores went (database: the PostgreSQL backends serving this run), and what else was running.
            **{
                f"{name}_cpu_ms_per_request": round(1000 * seconds / requests, 2)
                for name, seconds in (("server", server_cpu), ("database", database_cpu), ("client", client_cpu))
            },
            "database_buffers_per_request": round(buffers / requests, 1),
            "loadavg_1m_before": round(loadavg, 2),
        }
    finally:
        if server is not None:
            stop_gunicorn(server)
        from django.db import connections

        connections.close_all()
        if not args.keep_db:
            drop_database(args.postgres.rstrip("/"), args.database)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
