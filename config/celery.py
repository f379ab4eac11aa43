import gc
import os

from celery import Celery
from celery.signals import worker_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def _make_broker_folders(sender: Celery, **_: object) -> None:
    # kombu's filesystem transport does not create its folders.
    options = sender.conf.broker_transport_options or {}
    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        if options.get(key):
            os.makedirs(options[key], exist_ok=True)


@worker_shutdown.connect
def _skip_final_collection(**_: object) -> None:
    # The worker has stopped; Python's exit would still walk every live object in one
    # last garbage collection (seconds with torch or a vLLM engine loaded, on a busy
    # host), past the grace a supervisor gives before SIGKILL. Frozen objects are skipped.
    gc.freeze()
