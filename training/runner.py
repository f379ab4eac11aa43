"""Run the DPO worker as a child process and relay what it says (Django-free).

The child gets its own session (process group), so cancelling kills it together
with whatever it started (`accelerate launch` spawns one process per GPU).
"""

import json
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from training.dpo_worker import EVENT_PREFIX

_KILL_GRACE_S = 10.0


class WorkerCancelled(Exception):
    pass


class WorkerFailed(Exception):
    pass


def worker_command(*, launcher: str, spec_path: Path) -> list[str]:
    """The command line: this interpreter by default, or the launcher (e.g. `accelerate launch --config_file X`)."""
    prefix = shlex.split(launcher) if launcher.strip() else [sys.executable]
    return [*prefix, "-m", "training.dpo_worker", str(spec_path)]


_ENV = {
    "PYTHONUNBUFFERED": "1",
    "TQDM_DISABLE": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
_warm: subprocess.Popen | None = None
_warm_lock = threading.Lock()


def _spawn(command: list[str], cwd: Path, *, stdin: int) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        cwd=cwd,
        env={**os.environ, **_ENV},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=stdin,
        text=True,
        bufsize=1,
        start_new_session=True,
    )


def warm_start(*, cwd: Path, wait: bool = False) -> None:
    """Start a worker that imports torch/transformers/TRL now and waits for the next round's spec.

    Only for the default launcher (this interpreter): a round then skips the ~8 s
    of imports that otherwise come first in every round. Called when a training
    Celery worker starts and after each round it runs. `wait`: return once its
    imports are done (what it printed until then is dropped).
    """
    global _warm
    with _warm_lock:
        if _warm is None or _warm.poll() is not None:
            _warm = _spawn([sys.executable, "-m", "training.dpo_worker", "-"], cwd, stdin=subprocess.PIPE)
        if wait:
            for line in _warm.stdout:
                if line.startswith(EVENT_PREFIX) and json.loads(line[len(EVENT_PREFIX) :])["event"] == "warm":
                    break


def warm_stop() -> None:
    """End the waiting worker (its own session: nothing else would) when the Celery worker shuts down."""
    global _warm
    with _warm_lock:
        process, _warm = _warm, None
    if process is not None:
        _kill(process)


def _take_warm(spec_path: Path) -> subprocess.Popen | None:
    global _warm
    with _warm_lock:
        process, _warm = _warm, None
    if process is None or process.poll() is not None:
        return None
    try:
        process.stdin.write(f"{spec_path}\n")
        process.stdin.close()
    except BrokenPipeError:
        return None
    return process


def _pump(stream: IO[str], lines: "queue.Queue[str | None]") -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def _kill(process: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, _KILL_GRACE_S), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_worker(
    *,
    command: list[str],
    cwd: Path,
    spec_path: Path | None = None,
    log_path: Path,
    on_event: Callable[[dict[str, Any]], None],
    on_output: Callable[[str], None],
    should_cancel: Callable[[], bool],
    poll_s: float = 1.0,
) -> None:
    """Run `command` to the end, calling `on_event` for each event line and `on_output` for other lines.

    `should_cancel` is asked about once every `poll_s` seconds (and when output
    arrives); when it says yes the child is killed and WorkerCancelled raised. A
    non-zero exit raises WorkerFailed. Every line also goes to `log_path`. With
    `spec_path`, a warm worker (see warm_start) runs it when one is waiting.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w", encoding="utf-8") as log:
        process = (spec_path and _take_warm(spec_path)) or _spawn(command, cwd, stdin=subprocess.DEVNULL)
        lines: queue.Queue[str | None] = queue.Queue()
        reader = threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True)
        reader.start()
        try:
            next_check = time.monotonic() + poll_s
            while True:
                try:
                    line = lines.get(timeout=max(0.0, next_check - time.monotonic()))
                except queue.Empty:
                    line = ""
                if line is None:
                    break
                if line:
                    log.write(line)
                    text = line.rstrip("\n")
                    if text.startswith(EVENT_PREFIX):
                        on_event(json.loads(text[len(EVENT_PREFIX) :]))
                    elif text.strip():
                        on_output(text)
                if time.monotonic() >= next_check:
                    if should_cancel():
                        raise WorkerCancelled()
                    next_check = time.monotonic() + poll_s
            code = process.wait()
        finally:
            # Whatever stopped us (cancel, a failing callback, a killed parent task), never leave the child running.
            if process.poll() is None:
                _kill(process)
            reader.join(timeout=5)
    if code != 0:
        raise WorkerFailed(f"the training worker exited with status {code}")
