"""The documented production settings (config/production.env) pass Django's deployment checks."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION_ENV = ROOT / "config" / "production.env"


def _manage_with_production_env(*args: str, var_dir: Path, secret_key: str) -> subprocess.CompletedProcess:
    """`manage.py ARGS` in a shell that loaded the production settings as the README says, then filled in the key."""
    # Only what the shell needs from here: the settings must come from the file alone.
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}
    script = 'set -a; . "$1"; set +a; export SECRET_KEY="$2" VAR_DIR="$3"; shift 3; exec "$@"'
    return subprocess.run(
        ["bash", "-c", script, "bash", PRODUCTION_ENV, secret_key, var_dir, sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_deploy_check_is_clean_with_the_documented_production_settings(tmp_path):
    result = _manage_with_production_env(
        "check", "--deploy", "--fail-level", "WARNING", var_dir=tmp_path, secret_key=secrets.token_urlsafe(50)
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_production_settings_without_their_secret_key_stop_start_up(tmp_path):
    result = _manage_with_production_env("check", var_dir=tmp_path, secret_key="")
    assert result.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY must be set" in result.stderr
