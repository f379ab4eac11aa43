"""Scripted annotators that label through the public HTTP API, exactly as an external client would.

They never touch the ORM for labeling: they log in for a token, ask for the next
pair, let an oracle (simulation.oracles) pick a side, and submit. Only creating
their accounts (an admin's job) goes through labeling.services.
"""

import math
import random
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import requests
from tqdm import tqdm

from labeling import services
from labeling.models import Campaign
from simulation.oracles import Oracle

FLIP = {"left": "right", "right": "left"}


class SimulationError(RuntimeError):
    pass


@dataclass
class SimulationResult:
    judgments: int = 0
    expired: int = 0
    by_annotator: dict[str, int] = field(default_factory=dict)


def annotators_ensure(*, campaign: Campaign, prefix: str, count: int, password: str) -> list[tuple[str, str]]:
    """K simulated annotator accounts (created or reset, marked simulated) that may label the campaign,
    as (username, password) pairs. A members-only campaign (a scratch copy is one) gets them as members."""
    names = [f"{prefix}-{i + 1}" for i in range(count)]
    users = [services.annotator_create(username=name, password=password, simulated=True) for name in names]
    if not campaign.open_to_everyone:
        services.campaign_members_add(campaign=campaign, users=users)
    return [(name, password) for name in names]


@contextmanager
def serve_in_thread() -> Iterator[str]:
    """This project's WSGI app on 127.0.0.1 (a free port) in a background thread; yields its URL."""
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
    from django.core.wsgi import get_wsgi_application

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadedWSGIServer(("127.0.0.1", 0), QuietHandler, allow_reuse_address=False)
    server.set_app(get_wsgi_application())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def _prompt_text(prompt: dict) -> str:
    if prompt.get("messages"):
        return "\n\n".join(f"{m['role']}: {m['text']}" for m in prompt["messages"])
    return prompt["text"]


class _Client:
    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        response = self.session.post(
            f"{self.base_url}/api/auth/token/", data={"username": username, "password": password}, timeout=30
        )
        if response.status_code != 200:
            raise SimulationError(f"{username} cannot log in at {self.base_url}: HTTP {response.status_code}")
        self.session.headers["Authorization"] = f"Token {response.json()['token']}"

    def post(self, path: str, **payload: object) -> requests.Response:
        return self.session.post(f"{self.base_url}{path}", json=payload, timeout=60)

    def campaign_id(self, name: str) -> int:
        response = self.session.get(f"{self.base_url}/api/labeling/campaigns/", timeout=30)
        response.raise_for_status()
        for campaign in response.json():
            if campaign["name"] == name:
                return campaign["id"]
        raise SimulationError(f"campaign {name!r} is not open for labeling at {self.base_url}")


@dataclass(frozen=True)
class Behaviour:
    """How one scripted annotator departs from the oracle: `flip`, the probability of answering the other
    side; `always`, a side ("left" or "right") answered whatever the pair (a position-biased clicker)."""

    flip: float = 0.0
    always: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= self.flip <= 1.0:
            raise ValueError(f"flip must be between 0 and 1, not {self.flip}")
        if self.always not in ("", *FLIP):
            raise ValueError(f"always must be left, right or empty, not {self.always!r}")

    def answer(self, verdict: str, rng: random.Random) -> str:
        """This annotator's answer for the oracle's verdict (left, right or tie)."""
        if self.always:
            return self.always
        if verdict in FLIP and rng.random() < self.flip:
            return FLIP[verdict]
        return verdict


def noisy_crowd(count: int, *, flip: float = 0.4) -> list[Behaviour]:
    """`count` annotators of whom a quarter (at least one) flip their answer with probability `flip` and one
    more always picks the left side; the rest answer as the oracle does."""
    if count < 2:
        raise ValueError("a noisy crowd needs at least 2 annotators (a flipper and a left-clicker)")
    flippers = max(1, count // 4)
    return [Behaviour(flip=flip)] * flippers + [Behaviour(always="left")] + [Behaviour()] * (count - flippers - 1)


def _choose(oracle: Oracle, pair: dict, rng: random.Random, behaviour: Behaviour) -> str:
    # Oracles answer in a/b for (text_a, text_b); we hand them (left, right).
    verdict = {"a": "left", "b": "right", "tie": "tie"}[oracle(_prompt_text(pair["prompt"]), pair["left"]["text"], pair["right"]["text"])]
    if verdict == "tie" and "tie" not in pair["choices"]:
        verdict = rng.choice(["left", "right"])
    return behaviour.answer(verdict, rng)


def simulate(
    *,
    base_url: str,
    campaign: str,
    credentials: list[tuple[str, str]],
    oracle: Oracle,
    noise: float = 0.0,
    behaviours: Sequence[Behaviour] | None = None,
    limit: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> SimulationResult:
    """Every annotator labels until the API says nothing is left for them, or until `limit` judgments are
    stored in all; returns what was stored.

    Each annotator answers by `behaviours` (one per credential), or, without them, flips every answer with
    probability `noise`.
    """
    if behaviours is None:
        behaviours = [Behaviour(flip=noise)] * len(credentials)
    if len(behaviours) != len(credentials):
        raise ValueError(f"{len(behaviours)} behaviours for {len(credentials)} annotators: give one each")
    clients = [_Client(base_url, username, password) for username, password in credentials]
    campaign_id = clients[0].campaign_id(campaign)
    result = SimulationResult()
    lock = threading.Lock()
    # Judgments still allowed: an annotator takes one before asking for a pair, so the threads together
    # never store more than `limit` (the queue serves picked pairs first, so these are the picked ones).
    allowance = math.inf if limit is None else limit
    bar = tqdm(desc="judgments", unit="pair", disable=not progress)

    def take() -> bool:
        nonlocal allowance
        with lock:
            if allowance < 1:
                return False
            allowance -= 1
            return True

    def work(index: int, client: _Client) -> None:
        nonlocal allowance
        rng = random.Random(seed * 1000 + index)
        username = credentials[index][0]
        while take():
            response = client.post(f"/api/labeling/campaigns/{campaign_id}/next/")
            if response.status_code == 204:
                with lock:
                    allowance += 1
                return
            response.raise_for_status()
            pair = response.json()
            submit = client.post(
                f"/api/labeling/assignments/{pair['assignment_id']}/submit/",
                choice=_choose(oracle, pair, rng, behaviours[index]),
                rationale="simulated",
                time_ms=0,
            )
            with lock:
                if submit.status_code in (200, 201):
                    result.judgments += submit.status_code == 201
                    result.by_annotator[username] = result.by_annotator.get(username, 0) + 1
                    bar.update(1)
                elif submit.status_code == 409 and submit.json().get("code") == "lease_expired":
                    result.expired += 1
                    allowance += 1  # the judgment was not stored: another may take its place
                else:
                    raise SimulationError(f"submit refused: HTTP {submit.status_code} {submit.text[:200]}")

    with ThreadPoolExecutor(max_workers=len(clients)) as pool:
        for future in [pool.submit(work, i, c) for i, c in enumerate(clients)]:
            future.result()
    bar.close()
    return result
