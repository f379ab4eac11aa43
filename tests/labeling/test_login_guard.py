"""The login guard as deployed: two gunicorn workers on the test's PostgreSQL database, hit over HTTP.

Counting must hold across processes and under concurrency, which an in-process
test client cannot show. The server's password hasher logs each check
(tests/labeling/login_guard_server.py), so the tests count the tries that
reached it. Such a try answers as a wrong password (400 from the API, 200 and
the form again from a page); a refused one answers 429.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from django.db import connection

from tests.waiting import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
PARALLEL = 30
LIMIT = 5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    check_log: Path

    def password_checks(self) -> int:
        return len(self.check_log.read_text().splitlines())


@pytest.fixture(scope="module")
def server(django_db_setup, tmp_path_factory) -> Iterator[Server]:
    """gunicorn, 2 workers x 16 threads (all 30 guesses in flight at once), serving the test database."""
    db = connection.settings_dict
    port = _free_port()
    check_log = tmp_path_factory.mktemp("login_guard") / "password_checks"
    check_log.touch()
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{quote(db['USER'] or '')}:{quote(db['PASSWORD'] or '')}"
        f"@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "DEBUG": "1",
        "SECRET_KEY": "login-guard-test",
        "ALLOWED_HOSTS": "127.0.0.1",
        "LOGIN_FAILURE_LIMIT": str(LIMIT),
        "LOG_LEVEL": "WARNING",
        "DJANGO_SETTINGS_MODULE": "tests.labeling.login_guard_server",
        "PASSWORD_CHECK_LOG": str(check_log),
    }
    command = [
        sys.executable, "-m", "gunicorn", "config.wsgi:application",
        "--bind", f"127.0.0.1:{port}", "--workers", "2", "--worker-class", "gthread", "--threads", "16",
        "--log-level", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def answers() -> bool:
            assert process.poll() is None, f"gunicorn exited with {process.returncode}"
            try:
                return requests.get(f"{url}/login/", timeout=30).status_code == 200
            except requests.RequestException:  # not listening yet, or still loading the app
                return False

        wait_until(answers, what="gunicorn to answer", within_s=120, pause=lambda: time.sleep(0.5))
        yield Server(url, check_log)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


def _form_session(url: str) -> tuple[requests.Session, str]:
    """A browser-like session holding the CSRF cookie and the form's token, as a page visit leaves them."""
    session = requests.Session()
    page = session.get(url, timeout=60).text
    return session, re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)


def _post_form(url: str, session: requests.Session, csrf: str, username: str, password: str) -> requests.Response:
    data = {"csrfmiddlewaretoken": csrf, "username": username, "password": password}
    return session.post(url, data=data, headers={"Referer": url}, allow_redirects=False, timeout=120)


def _token(server: Server, username: str, password: str) -> requests.Response:
    return requests.post(f"{server.url}/api/auth/token/", json={"username": username, "password": password}, timeout=120)


def test_thirty_parallel_wrong_guesses_at_the_token_api_reach_the_password_check_only_five_times(server, alice):
    start = threading.Barrier(PARALLEL)
    checks = server.password_checks()

    def guess(i: int) -> int:
        start.wait()
        return _token(server, "alice", f"wrong-guess-{i}").status_code

    with ThreadPoolExecutor(PARALLEL) as pool:
        answers = Counter(pool.map(guess, range(PARALLEL)))
    assert server.password_checks() - checks == LIMIT
    assert answers == {400: LIMIT, 429: PARALLEL - LIMIT}
    refused = _token(server, "alice", "alice-password-1")
    assert refused.status_code == 429 and refused.json()["code"] == "locked_out"
    assert server.password_checks() - checks == LIMIT


def test_thirty_parallel_wrong_guesses_at_the_login_page_reach_the_password_check_only_five_times(server, alice):
    url = f"{server.url}/login/"
    sessions = [_form_session(url) for _ in range(PARALLEL)]
    start = threading.Barrier(PARALLEL)
    checks = server.password_checks()

    def guess(i: int) -> int:
        session, csrf = sessions[i]
        start.wait()
        return _post_form(url, session, csrf, "alice", f"wrong-guess-{i}").status_code

    with ThreadPoolExecutor(PARALLEL) as pool:
        answers = Counter(pool.map(guess, range(PARALLEL)))
    assert server.password_checks() - checks == LIMIT
    assert answers == {200: LIMIT, 429: PARALLEL - LIMIT}
    session, csrf = _form_session(url)
    refused = _post_form(url, session, csrf, "alice", "alice-password-1")
    assert refused.status_code == 429 and "Too many failed logins" in refused.text
    assert server.password_checks() - checks == LIMIT


def test_full_width_spellings_of_the_username_share_its_five_tries(server, alice):
    spellings = ["ａｌｉｃｅ", "ａlice", "alｉce", "aｌｉｃｅ", "alicｅ"]
    assert [_token(server, name, "wrong-guess").status_code for name in spellings] == [400] * LIMIT
    assert _token(server, "ａｌｉｃｅ", "alice-password-1").status_code == 429
    assert _token(server, "alice", "alice-password-1").status_code == 429


def test_the_admin_login_refuses_the_right_password_after_twenty_wrong_ones(server, admin_user):
    url = f"{server.url}/admin/login/"
    session, csrf = _form_session(url)
    answers = [_post_form(url, session, csrf, "ada", f"wrong-guess-{i}").status_code for i in range(20)]
    assert answers == [200] * LIMIT + [429] * (20 - LIMIT)
    refused = _post_form(url, session, csrf, "ada", "ada-password-1")
    assert refused.status_code == 429 and "Too many failed logins" in refused.text
    assert session.get(f"{server.url}/admin/", allow_redirects=False, timeout=60).status_code == 302  # not logged in
