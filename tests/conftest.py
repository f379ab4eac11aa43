"""Shared fixtures: three personas, the tiny and the real model, and the PostgreSQL-only marker."""

from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection

from config.celery import app as celery_app
from generation import real_model, tiny_model
from labeling import services as labeling_services
from labeling.models import Campaign


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL (row locks, concurrent writers); set DATABASE_URL=postgres://... to run it")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


def pytest_report_header(config: pytest.Config) -> str:
    return f"database: {connection.vendor}; broker: {settings.CELERY_BROKER_URL}"


@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    """The bundled tiny model, built once (cached under var/ between runs)."""
    return tiny_model.build(settings.TINY_MODEL_DIR)


@pytest.fixture(scope="session")
def real_model_path() -> Path:
    """SmolLM2-135M-Instruct, fetched and converted once by make_real_model's own code (cached under var/).

    Without its vLLM check: the tests that serve it start the engine themselves.
    """
    return real_model.build(settings.REAL_MODEL_DIR, cache=settings.MODEL_CACHE_DIR, vllm=False)


@pytest.fixture
def admin_user(db) -> User:
    return User.objects.create_superuser("ada", "ada@example.com", "ada-password-1")


@pytest.fixture
def alice(db) -> User:
    return labeling_services.annotator_create(username="alice", password="alice-password-1")


@pytest.fixture
def bob(db) -> User:
    return labeling_services.annotator_create(username="bob", password="bob-password-1")


@pytest.fixture
def campaign(db) -> Campaign:
    return Campaign.objects.create(name="helpfulness", guidelines="Pick the more **helpful** answer.")


@pytest.fixture
def eager_celery():
    """Tasks run inline, in the caller's process, for the test's duration."""
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = previous
