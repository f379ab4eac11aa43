"""Settings come from the environment and fail loudly, naming the variable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_settings(*, show: str = "settings.DEBUG", **env: str) -> subprocess.CompletedProcess:
    """Start Django in a subprocess with `env` and print the expression `show`."""
    ours = {"DATABASE_URL", "DATABASE_PREPARE", "DEBUG", "SECRET_KEY", "VAR_DIR", "POLICY_MODEL"}
    clean = {k: v for k, v in os.environ.items() if k not in ours}
    script = "import django; django.setup(); from django.conf import settings; from django.db import connection"
    return subprocess.run(
        [sys.executable, "-c", f"{script}; print({show})"],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "env, message",
    [
        ({"DATABASE_URL": "nonsense", "SECRET_KEY": "k"}, "DATABASE_URL='nonsense'"),
        ({"DEBUG": "maybe"}, "DEBUG='maybe' is not a boolean"),
        ({"DATABASE_URL": "postgres://db/app"}, "SECRET_KEY must be set when DATABASE_URL is"),
        ({"SECURE_HSTS_SECONDS": "a year"}, "SECURE_HSTS_SECONDS='a year' is not an integer"),
        ({"SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto: https"}, "SECURE_PROXY_SSL_HEADER='X-Forwarded-Proto: https' is not a header name"),
        ({"CSRF_TRUSTED_ORIGINS": "labels.example.com"}, "CSRF_TRUSTED_ORIGINS: 'labels.example.com' is not an origin"),
        ({"ALLOWED_HOSTS": " , "}, "ALLOWED_HOSTS is empty"),
        ({"CELERY_BROKER_URL": "kafka://x"}, "CELERY_BROKER_URL='kafka://x'"),
        ({"DATABASE_URL": "postgres://db/app", "SECRET_KEY": "k", "DATABASE_PREPARE": "sometimes"}, "DATABASE_PREPARE='sometimes'"),
        ({"GENERATION_BACKEND": "onnx"}, "GENERATION_BACKEND='onnx' must be one of auto, vllm, transformers"),
        ({"VLLM_TENSOR_PARALLEL_SIZE": "two"}, "VLLM_TENSOR_PARALLEL_SIZE='two' is not an integer"),
        ({"VLLM_GPU_MEMORY_UTILIZATION": "1.5"}, "VLLM_GPU_MEMORY_UTILIZATION=1.5 must be between"),
        ({"TRUSTED_PROXY_HEADER": "X-Forwarded-For: 10.0.0.1"}, "TRUSTED_PROXY_HEADER='X-Forwarded-For: 10.0.0.1' is not an HTTP header name"),
        ({"API_TOKEN_LIFETIME_S": "7d"}, "API_TOKEN_LIFETIME_S='7d' is not an integer"),
    ],
)
def test_malformed_setting_stops_start_up_naming_the_variable(env, message):
    result = _load_settings(**env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def test_production_settings_load_from_the_environment():
    result = _load_settings(
        DEBUG="off", SECRET_KEY="s3cret", DATABASE_URL="postgres://u:p@db.example:5432/app", ALLOWED_HOSTS="a.example"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize(
    "prepare, options",
    [
        ({}, "{'server_side_binding': True, 'prepare_threshold': 5}"),
        ({"DATABASE_PREPARE": "0"}, "{}"),
    ],
)
def test_postgresql_prepares_statements_unless_turned_off(prepare, options):
    result = _load_settings(
        show="settings.DATABASES['default'].get('OPTIONS', {})",
        DATABASE_URL="postgres://u:p@db.example:5432/app",
        SECRET_KEY="s3cret",
        **prepare,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == options


def test_debug_is_off_unless_asked_for():
    assert _load_settings().stdout.strip() == "False"
    assert _load_settings(DEBUG="1").stdout.strip() == "True"


def test_embedded_default_makes_its_secret_key_once_and_keeps_it_to_its_owner(tmp_path):
    var = tmp_path / "fresh" / "var"  # a fresh clone: nothing there yet
    first = _load_settings(show="settings.SECRET_KEY", VAR_DIR=str(var))
    assert first.returncode == 0, first.stderr
    key_file = var / "secret_key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert first.stdout.strip() == key_file.read_text().strip() and len(first.stdout.strip()) >= 50
    assert _load_settings(show="settings.SECRET_KEY", VAR_DIR=str(var)).stdout == first.stdout  # kept, not remade


def test_a_secret_key_file_others_can_read_stops_start_up(tmp_path):
    (tmp_path / "secret_key").write_text("k" * 60)
    (tmp_path / "secret_key").chmod(0o644)
    result = _load_settings(VAR_DIR=str(tmp_path))
    assert result.returncode != 0
    assert f"ImproperlyConfigured: {tmp_path / 'secret_key'} (the SECRET_KEY) can be read by others" in result.stderr


def test_embedded_default_database_opens_on_a_fresh_clone(tmp_path):
    # SQLite creates the file but not its folder: this failed with "unable to open database file".
    result = _load_settings(show="connection.ensure_connection() or 'opened'", VAR_DIR=str(tmp_path / "var"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "opened"


def test_https_settings_come_from_the_environment():
    show = (
        "settings.SECURE_SSL_REDIRECT, settings.SESSION_COOKIE_SECURE, settings.CSRF_COOKIE_SECURE, "
        "settings.SECURE_HSTS_SECONDS, settings.SECURE_HSTS_INCLUDE_SUBDOMAINS, settings.SECURE_HSTS_PRELOAD, "
        "settings.SECURE_PROXY_SSL_HEADER, settings.CSRF_TRUSTED_ORIGINS"
    )
    assert _load_settings(show=show).stdout.strip() == "False False False 0 False False None []"
    result = _load_settings(
        show=show,
        SECURE_SSL_REDIRECT="1",
        SECURE_HSTS_SECONDS="3600",
        SECURE_HSTS_INCLUDE_SUBDOMAINS="yes",
        SECURE_HSTS_PRELOAD="on",
        SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto",
        CSRF_TRUSTED_ORIGINS="https://labels.example.com, https://b.example.com",
    )
    assert result.stdout.strip() == (
        "True True True 3600 True True ('HTTP_X_FORWARDED_PROTO', 'https') "
        "['https://labels.example.com', 'https://b.example.com']"
    ), result.stderr
    # Cookies follow the redirect unless told otherwise.
    assert _load_settings(show=show, SECURE_SSL_REDIRECT="1", SESSION_COOKIE_SECURE="0").stdout.split()[:3] == [
        "True",
        "False",
        "True",
    ]


@pytest.mark.parametrize(
    "env, expected",
    [
        ({}, "var/models/tiny"),
        ({"POLICY_MODEL": "tiny"}, "var/models/tiny"),
        ({"POLICY_MODEL": "smollm2"}, "var/models/smollm2"),
        ({"POLICY_MODEL": "/models/Qwen2.5-0.5B-Instruct"}, "/models/Qwen2.5-0.5B-Instruct"),
    ],
)
def test_policy_model_names_the_models_the_app_builds_or_takes_a_path(env, expected):
    result = _load_settings(show="settings.POLICY_MODEL", VAR_DIR="var", **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected
