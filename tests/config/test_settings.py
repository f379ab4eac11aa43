"""Settings come from the environment and fail loudly, naming the variable."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_settings(*, show: str = "settings.DEBUG", **env: str) -> subprocess.CompletedProcess:
    """Start Django in a subprocess with `env` and print the expression `show`."""
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DATABASE_PREPARE", "DEBUG", "SECRET_KEY", "POLICY_MODEL"}}
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); from django.conf import settings; print({show})"],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "env, message",
    [
        ({"DATABASE_URL": "nonsense"}, "DATABASE_URL='nonsense'"),
        ({"DEBUG": "maybe"}, "DEBUG='maybe' is not a boolean"),
        ({"DEBUG": "0"}, "SECRET_KEY must be set when DEBUG is off"),
        ({"ALLOWED_HOSTS": " , "}, "ALLOWED_HOSTS is empty"),
        ({"CELERY_BROKER_URL": "kafka://x"}, "CELERY_BROKER_URL='kafka://x'"),
        ({"DATABASE_URL": "postgres://db/app", "DATABASE_PREPARE": "sometimes"}, "DATABASE_PREPARE='sometimes'"),
        ({"GENERATION_BACKEND": "onnx"}, "GENERATION_BACKEND='onnx' must be one of auto, vllm, transformers"),
        ({"VLLM_TENSOR_PARALLEL_SIZE": "two"}, "VLLM_TENSOR_PARALLEL_SIZE='two' is not an integer"),
        ({"VLLM_GPU_MEMORY_UTILIZATION": "1.5"}, "VLLM_GPU_MEMORY_UTILIZATION=1.5 must be between"),
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
        show="settings.DATABASES['default'].get('OPTIONS', {})", DATABASE_URL="postgres://u:p@db.example:5432/app", **prepare
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == options


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
