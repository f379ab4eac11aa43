"""The storing process: where a generation worker writes its chunks, apart from the engine's interpreter.

The engine's stepping is Python-bound (scheduling, detokenizing, output
processing; on a GPU host, launching the device's work), and a storing thread
beside it in the same interpreter took the GIL from it: on 2 CPU cores, each
second the thread spent in Python cost the engine about a second of sampling.
A process of its own runs the store (generation.services._store_chunk) with its
own interpreter and database connection; the sampling thread only pickles a
chunk's samples to it (~1 ms for 64 prompts).

One process per worker process, started on the first shard (Django set up
there takes ~1 s, while the engine loads) and kept for the next ones. It
ignores SIGINT and SIGTERM, which a terminal's Ctrl-C or a supervisor sends the
whole process group: its worker decides when to stop, and a store in flight
lands first. It ends with its worker: when the worker exits normally (the
executor's exit handler), and within a second when the worker is killed.

It is started by spawning (forking a process that holds an engine's threads is
unsafe), which imports the worker's main module again: a script that runs a job
must do it under `if __name__ == "__main__":`, as manage.py, Celery and the
benches do.
"""

import atexit
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from django.db import connections

PARENT_POLL_S = 1.0  # how often the process checks that its worker still lives

_executor: ProcessPoolExecutor | None = None
_database: dict | None = None


def _executor_for(database: dict) -> ProcessPoolExecutor:
    global _executor, _database
    if _executor is None or _database != database:
        if _executor is not None:
            _executor.shutdown(wait=False)
        _executor = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),  # never fork an engine's threads
            initializer=_start,
            initargs=(database, os.getpid()),
        )
        _database = dict(database)  # a copy: Django may change its own in place (a test database's name)
    return _executor


def submit(database: dict, fn: Callable, /, **kwargs: Any) -> Future:
    """Run fn(**kwargs) in this worker's storing process, on `database` (the worker's connection settings, so
    that a test database is the one written); a new process if the database changed or the last one died."""
    global _executor
    try:
        return _executor_for(database).submit(fn, **kwargs)
    except BrokenProcessPool:  # killed (out of memory?): its store failed, and the next gets a new process
        _executor = None
        return _executor_for(database).submit(fn, **kwargs)


def start(database: dict) -> None:
    """Start the storing process now, without waiting for it (its set-up then overlaps the engine's)."""
    submit(database, os.getpid)


@atexit.register
def shutdown() -> None:
    """At the worker's exit: stop the storing process and drop the executor, so that its queues' semaphores are
    released (the resource tracker otherwise warns of them as leaked)."""
    global _executor, _database
    if _executor is not None:
        _executor.shutdown(wait=True)
    _executor = _database = None


def close_connections() -> None:
    """Run in the storing process after a shard: no connection is left open between shards."""
    connections.close_all()


def _start(database: dict, worker_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(worker_pid,), name="store-watch-worker", daemon=True).start()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django
    from django.conf import settings

    settings.DATABASES["default"] = database  # before any connection is made
    django.setup()


def _exit_with(worker_pid: int) -> None:
    while os.getppid() == worker_pid:
        time.sleep(PARENT_POLL_S)
    os._exit(1)  # the worker was killed: a store in flight ends with it (its transaction whole or not at all)
