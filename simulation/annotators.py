"""Scripted annotators that label through the public HTTP API, exactly as an external client would.

They never touch the ORM for labeling: they log in for a token, ask for the next
pair, let an oracle (simulation.oracles) pick a side, and submit. Only creating
their accounts (an admin's job) goes through labeling.services.
"""

import random
import threading
from collections.abc import Iterator
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


def _choose(oracle: Oracle, pair: dict, rng: random.Random, noise: float) -> str:
    # Oracles answer in a/b for (text_a, text_b); we hand them (left, right).
    verdict = {"a": "left", "b": "right", "tie": "tie"}[oracle(_prompt_text(pair["prompt"]), pair["left"]["text"], pair["right"]["text"])]
    if verdict == "tie" and "tie" not in pair["choices"]:
        verdict = rng.choice(["left", "right"])
    if verdict in FLIP and rng.random() < noise:
        verdict = FLIP[verdict]
    return verdict


def simulate(
    *,
    base_url: str,
    campaign: str,
    credentials: list[tuple[str, str]],
    oracle: Oracle,
    noise: float = 0.0,
    seed: int = 0,
    progress: bool = True,
) -> SimulationResult:
    """Every annotator labels until the API says nothing is left for them; returns what was stored."""
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be between 0 and 1, not {noise}")
    clients = [_Client(base_url, username, password) for username, password in credentials]
    campaign_id = clients[0].campaign_id(campaign)
    result = SimulationResult()
    lock = threading.Lock()
    bar = tqdm(desc="judgments", unit="pair", disable=not progress)

    def work(index: int, client: _Client) -> None:
        rng = random.Random(seed * 1000 + index)
        username = credentials[index][0]
        while True:
            response = client.post(f"/api/labeling/campaigns/{campaign_id}/next/")
            if response.status_code == 204:
                return
            response.raise_for_status()
            pair = response.json()
            submit = client.post(
                f"/api/labeling/assignments/{pair['assignment_id']}/submit/",
                choice=_choose(oracle, pair, rng, noise),
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
                else:
                    raise SimulationError(f"submit refused: HTTP {submit.status_code} {submit.text[:200]}")

    with ThreadPoolExecutor(max_workers=len(clients)) as pool:
        for future in [pool.submit(work, i, c) for i, c in enumerate(clients)]:
            future.result()
    bar.close()
    return result
