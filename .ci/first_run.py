#!/usr/bin/env python3
"""The front door, as a new user meets it: a fresh clone, the README's first command, no settings.

Clones the commit under test into a temporary folder, runs `make run POLICY_MODEL=tiny`
there (the README's first command with its documented switch to the tiny model:
the demo's SmolLM2 is tested by the slow tests) with none of the README's settings
variables set (the embedded defaults: SQLite, the filesystem broker), then over HTTP: the admin gets a token and
starts an 8-prompt generation job, which must succeed; the annotator leases a
pair and judges it; the labeling page's script is served. Then it stops
everything as Ctrl-C does and checks that every process stopped by itself.
Any failed step exits non-zero with the server's log tail. Standard library
only: it runs before any virtualenv exists. Prints one JSON line of timings last.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Bounds on a hung step, not timing checks: a fresh virtualenv and the tiny model's build come first.
SERVE_DEADLINE_S = 1800
JOB_DEADLINE_S = 600
STOP_DEADLINE_S = 60
PROCESSES = ("web", "generation", "worker", "beat")  # the Procfile's


class StepFailed(Exception):
    pass


def settings_variables() -> set[str]:
    """Every variable the README's settings table names: none of them may leak in from CI's environment."""
    table = (ROOT / "README.md").read_text(encoding="utf-8").split("## Settings", 1)[1]
    names = set()
    for line in table.splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    return names


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Http:
    def __init__(self, base: str) -> None:
        self.base = base

    def call(self, method: str, path: str, *, token: str | None = None, body: dict | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(self.base + path, method=method)
        if token:
            request.add_header("Authorization", f"Token {token}")
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, data=data, timeout=60) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else {}
        except urllib.error.HTTPError as error:
            raise StepFailed(f"{method} {path} answered {error.code}: {error.read()[:2000]!r}") from None

    def token(self, username: str, password: str) -> str:
        return self.call("POST", "/api/auth/token/", body={"username": username, "password": password})[1]["token"]


class Server:
    """`make run` in its own process group, so that stopping it is a terminal's Ctrl-C: SIGINT to make and honcho."""

    def __init__(self, clone: Path, port: int, env: dict[str, str], log: Path) -> None:
        self.clone, self.log = clone, log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                ["make", "run", "POLICY_MODEL=tiny", f"PORT={port}"], cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )

    def tail(self, lines: int = 80) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def check_alive(self, what: str) -> None:
        if self.process.poll() is not None:
            raise StepFailed(f"`make run` exited ({self.process.returncode}) before {what}")

    def interrupt(self) -> int:
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            return self.process.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            raise StepFailed(f"`make run` still running {STOP_DEADLINE_S} s after Ctrl-C") from None

    def leftovers(self) -> list[str]:
        """Processes still running in the clone (honcho starts each Procfile process in a session of its own)."""
        found = []
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and Path(os.readlink(proc / "cwd")).is_relative_to(self.clone):
                    command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    found.append(f"{proc.name}: {command[:200]}")
            except OSError:
                continue  # gone meanwhile, or not ours to read
        return found

    def kill_all(self) -> None:
        for line in self.leftovers():
            try:
                os.kill(int(line.split(":", 1)[0]), signal.SIGKILL)
            except ProcessLookupError:
                pass


def wait_until_served(http: Http, server: Server) -> None:
    deadline = time.monotonic() + SERVE_DEADLINE_S
    while time.monotonic() < deadline:
        server.check_alive("serving")
        try:
            with urllib.request.urlopen(http.base + "/login/", timeout=10) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    raise StepFailed(f"nothing served at {http.base}/login/ within {SERVE_DEADLINE_S} s")


def exercise(http: Http, server: Server, timings: dict[str, float], started: float) -> None:
    admin = http.token("admin", "admin-demo-pass")
    campaigns = http.call("GET", "/api/labeling/campaigns/", token=admin)[1]
    campaign = next((c for c in campaigns if c["name"] == "demo"), None)
    if campaign is None:
        raise StepFailed(f"no demo campaign among {campaigns}")

    status, job = http.call("POST", "/api/generation/jobs/", token=admin, body={"campaign": campaign["id"], "limit": 8})
    deadline = time.monotonic() + JOB_DEADLINE_S
    while not job["finished"]:
        server.check_alive("the generation job finished")
        if time.monotonic() > deadline:
            raise StepFailed(f"generation job still {job['status']} after {JOB_DEADLINE_S} s: {job}")
        time.sleep(1)
        job = http.call("GET", f"/api/generation/jobs/{job['id']}/", token=admin)[1]
    if job["status"] != "succeeded" or job["done"] != 8:
        raise StepFailed(f"generation job ended {job['status']} with {job['done']}/{job['total']}: {job['error']}")
    timings["generated_s"] = round(time.monotonic() - started, 1)

    annotator = http.token("annotator", "annotator-demo-pass")
    status, pair = http.call("POST", f"/api/labeling/campaigns/{campaign['id']}/next/", token=annotator)
    if status != 200:
        raise StepFailed(f"the annotator got no pair to judge (HTTP {status}) after 8 were generated")
    status, judgment = http.call(
        "POST", f"/api/labeling/assignments/{pair['assignment_id']}/submit/", token=annotator, body={"choice": "left"}
    )
    if status != 201 or not judgment["created"]:
        raise StepFailed(f"submit answered {status}: {judgment}")

    with urllib.request.urlopen(http.base + "/static/labeling/compare.js", timeout=30) as response:
        if not response.headers["Content-Type"].startswith("text/javascript"):
            raise StepFailed(f"the labeling page's script came as {response.headers['Content-Type']}")


def check_clean_stop(server: Server, returncode: int) -> None:
    log = server.log.read_text(errors="replace")
    if "SIGKILL" in log:
        raise StepFailed("honcho had to SIGKILL a process that did not stop within its grace time")
    stopped = dict(re.findall(r"(\w+)\.\d+ stopped \(rc=(-?\d+)\)", log))  # honcho's "web.1 stopped (rc=0)"
    unclean = {name: stopped.get(name) for name in PROCESSES if stopped.get(name) != "0"}
    if unclean:
        raise StepFailed(f"processes that did not stop with exit code 0 (rc per process): {unclean}")
    # make re-raises the SIGINT it got once its recipe ends (GNU make's rule), so a clean stop reads as "interrupted".
    if returncode not in (-signal.SIGINT, 128 + signal.SIGINT):
        raise StepFailed(f"`make run` ended with {returncode} after Ctrl-C instead of being interrupted")
    leftovers = server.leftovers()
    if leftovers:
        raise StepFailed("processes left running after Ctrl-C:\n" + "\n".join(leftovers))


def main() -> int:
    # Started without job control (`.ci/run &` in a script, nohup), we inherit SIGINT ignored, and so would
    # make: it would then outlive the Ctrl-C below and exit 2. A handler here is reset to the default in children.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()
    timings: dict[str, float] = {}
    workdir = Path(tempfile.mkdtemp(prefix="first-run-"))
    clone = workdir / "clone"
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "checkout", "--quiet", "--detach", commit.strip()], cwd=clone, check=True)

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in settings_variables() | {"TEST_REDIS_URL"}}
    http = Http(f"http://127.0.0.1:{port}")
    server = Server(clone, port, env, workdir / "make-run.log")
    print(f"first run: {commit.strip()[:12]} cloned into {clone}, `make run POLICY_MODEL=tiny PORT={port}` (log {server.log})", flush=True)
    try:
        wait_until_served(http, server)
        timings["served_s"] = round(time.monotonic() - started, 1)
        exercise(http, server, timings, started)
        timings["judged_s"] = round(time.monotonic() - started, 1)
        returncode = server.interrupt()
        check_clean_stop(server, returncode)
        timings["stopped_s"] = round(time.monotonic() - started, 1)
    except Exception as failure:  # whatever failed: say what, show the server's side, stop everything
        print(f"FIRST RUN FAILED: {failure!r}\n--- last lines of `make run` ---\n{server.tail()}", file=sys.stderr, flush=True)
        if server.process.poll() is None:
            os.killpg(server.process.pid, signal.SIGINT)
            try:
                server.process.wait(timeout=STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                os.killpg(server.process.pid, signal.SIGKILL)
        server.kill_all()
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # its virtualenv is several GB
    print(json.dumps({"first_run": "ok", **timings}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
