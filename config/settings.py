"""Countersign settings, driven by environment variables.

With no environment variables at all this is the embedded default: SQLite, an
in-memory channel layer and background work in the web process. Setting
DATABASE_URL (postgres://...) and REDIS_URL (redis://...) switches to the
production components: psycopg 3 with its pool, channels-redis and Celery.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, *, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def env_int(name: str, *, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from exc


def env_list(name: str, *, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_secret(name: str) -> str:
    """A secret from NAME, or from the file named by NAME_FILE (Docker/K8s secrets)."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={path!r} cannot be read: {exc}") from exc
    return os.environ.get(name, "")


DATABASE_URL = env_str("DATABASE_URL")
REDIS_URL = env_str("REDIS_URL")
PRODUCTION = bool(DATABASE_URL and REDIS_URL)

DEBUG = env_bool("DEBUG", default=False)
SECRET_KEY = env_secret("SECRET_KEY")
if not SECRET_KEY:
    if PRODUCTION and not DEBUG and not env_bool("COUNTERSIGN_INSECURE_DEMO_KEY", default=False):
        raise ImproperlyConfigured("SECRET_KEY (or SECRET_KEY_FILE) must be set in production.")
    # The embedded demo runs on loopback only; a fixed key keeps sessions across restarts.
    SECRET_KEY = "countersign-embedded-demo-key-not-for-production"  # noqa: S105

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "guardian",
    "django_htmx",
    "template_partials",
    "live",
    "audit",
    "accounts",
    "agents",
    "approvals",
    "runtime",
    "gateway",
    "demo",
    "ops",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "audit.context.RequestIdMiddleware",
    # The input boundary: hostile query strings, forms and bodies never reach a view.
    "core.middleware.InputBoundaryMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "core.middleware.TransientErrorMiddleware",
]
# Django's own body limit matches the boundary's (core.inbound.MAX_BODY_BYTES).
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
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
                "config.navigation.navigation",
            ],
            # {% load data %}: JSON shown as tables and trees, changes as old → new (core.data_tags).
            "libraries": {"data": "core.data_tags"},
        },
    },
]

if DATABASE_URL:
    if not DATABASE_URL.startswith(("postgres://", "postgresql://")):
        raise ImproperlyConfigured("DATABASE_URL must be a postgres:// URL.")
    _db = dj_database_url.parse(DATABASE_URL, conn_max_age=0)
    # Django's backends plus writes deferred to just before COMMIT (core.transactions).
    _db["ENGINE"] = "core.backends.postgresql"
    _db.setdefault("OPTIONS", {})
    # Parameters bound on the server, and psycopg prepares a statement the fifth time it runs on a
    # connection: PostgreSQL then stops re-planning the ORM's joins and permission subqueries,
    # which cost more than executing them (profiled once in-process: a decision 37 -> 26 ms).
    # Django leaves both off by default. Turn them off for a pooler in transaction mode that cannot
    # keep prepared statements (PgBouncer before 1.21).
    if env_bool("DATABASE_PREPARED_STATEMENTS", default=True):
        _db["OPTIONS"]["server_side_binding"] = True
        _db["OPTIONS"]["prepare_threshold"] = 5
    if env_bool("DATABASE_POOL", default=True):
        # psycopg 3's pool; Django requires CONN_MAX_AGE=0 with it.
        # The pool tests a connection before handing it out, so after a PostgreSQL
        # restart a dead one is replaced instead of failing the request.
        _db["OPTIONS"]["pool"] = {
            "min_size": env_int("DATABASE_POOL_MIN", default=2),
            "max_size": env_int("DATABASE_POOL_MAX", default=10),
            "timeout": 10,
        }
        # Django passes ConnectionPool.check_connection as the pool's `check`.
        _db["CONN_HEALTH_CHECKS"] = True
    DATABASES = {"default": _db}
else:
    DATABASES = {
        "default": {
            "ENGINE": "core.backends.sqlite3",
            "NAME": env_str("SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
            "OPTIONS": {
                # The web thread and the background worker share one file: wait for
                # the lock instead of failing, and take it at BEGIN so two writers
                # never deadlock upgrading a read lock.
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
]
ANONYMOUS_USER_NAME = None  # guardian: no anonymous user row
GUARDIAN_RAISE_403 = False

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"  # config.navigation.home: where this person's work is
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
# Countersign ships in English only (no translations, no LocaleMiddleware). Django's docs advise turning
# translation off when it is unused: every value a template prints asked it for the active language, and an
# inbox page of 50 rows spent 10 ms of 67 there (docs/benchmarks-history.md). The pages are the same byte for byte.
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
# The embedded default serves straight from the finders; production serves
# the collected, hashed files.
WHITENOISE_USE_FINDERS = not PRODUCTION
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION and not DEBUG
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}

# --- Security -------------------------------------------------------------------
# Production is served over HTTPS unless HTTPS=0 says otherwise (e.g. a test stack
# on loopback). The embedded demo is plain HTTP on 127.0.0.1.
HTTPS = env_bool("HTTPS", default=PRODUCTION and not DEBUG)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", default=12 * 3600)
CSRF_COOKIE_SAMESITE = "Lax"
# htmx sends the token from the page (hx-headers), so the cookie need not be readable by scripts.
CSRF_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", default=HTTPS)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=HTTPS)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", default=31_536_000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=HTTPS)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", default=HTTPS)
if env_bool("TRUST_X_FORWARDED_PROTO", default=False):
    # Behind a TLS-terminating proxy that sets X-Forwarded-Proto.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Login throttling: this many failures per username and address lock it for the window.
LOGIN_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", default=5)
LOGIN_FAILURE_WINDOW_SECONDS = env_int("LOGIN_FAILURE_WINDOW_SECONDS", default=900)

if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Channels -------------------------------------------------------------
# The embedded demo's in-memory layer: capacity and expiry set explicitly (the defaults are 100
# and 60 s); a socket that falls behind loses messages and resyncs over HTTP. (With Redis, the
# pub/sub layer keeps no per-socket store: see live.layers.)
CHANNEL_CAPACITY = env_int("CHANNEL_CAPACITY", default=1000)
# Open sockets re-validate their session and rights this often, besides at once on
# logout, user changes and grants: a safety net for changes that send no signal.
SOCKET_RECHECK_SECONDS = env_int("SOCKET_RECHECK_SECONDS", default=30)
if SOCKET_RECHECK_SECONDS < 1:
    raise ImproperlyConfigured(f"SOCKET_RECHECK_SECONDS must be at least 1, got {SOCKET_RECHECK_SECONDS}")
# Sockets join and leave their groups this many at a time per process (live.consumers), so a
# burst of reconnects queues in the process instead of all at once on its Redis subscription.
LIVE_LAYER_CONCURRENCY = env_int("LIVE_LAYER_CONCURRENCY", default=32)
# An inbox approve or reject waits this long in the browser before it is sent: "Undo" until then, and
# nothing is decided (or run) before it arrives. 0 sends at once.
DECISION_UNDO_SECONDS = env_int("DECISION_UNDO_SECONDS", default=5)
# The MCP gateway (gateway.mcp): a tools/call that waits for a person is held this long, with progress
# notifications this often, then answered "pending, call again" (an identical call joins the request).
GATEWAY_HOLD_SECONDS = env_int("GATEWAY_HOLD_SECONDS", default=20)
GATEWAY_PROGRESS_SECONDS = env_int("GATEWAY_PROGRESS_SECONDS", default=5)
if GATEWAY_HOLD_SECONDS < 0 or GATEWAY_PROGRESS_SECONDS < 1:
    raise ImproperlyConfigured("GATEWAY_HOLD_SECONDS must be ≥ 0 and GATEWAY_PROGRESS_SECONDS ≥ 1")
# MCP Tasks (gateway.mcp, protocol 2025-11-25): a task is kept this long from its creation unless the
# client asks for less (never more, never unlimited, never under a minute); clients are told to poll this
# often; a requestor has at most this many tasks whose answer was not fetched.
GATEWAY_TASK_TTL_SECONDS = env_int("GATEWAY_TASK_TTL_SECONDS", default=7 * 24 * 3600)
GATEWAY_TASK_POLL_MS = env_int("GATEWAY_TASK_POLL_MS", default=5000)
GATEWAY_MAX_OPEN_TASKS = env_int("GATEWAY_MAX_OPEN_TASKS", default=1000)
if not 60 <= GATEWAY_TASK_TTL_SECONDS <= 366 * 24 * 3600 or GATEWAY_TASK_POLL_MS < 100 or GATEWAY_MAX_OPEN_TASKS < 1:
    raise ImproperlyConfigured(
        "GATEWAY_TASK_TTL_SECONDS must be from 60 to a year, GATEWAY_TASK_POLL_MS ≥ 100 and GATEWAY_MAX_OPEN_TASKS ≥ 1"
    )
# Grants (approvals.grants): how long an agent has to redeem one, and then to report what came of it.
GRANT_SECONDS = env_int("GRANT_SECONDS", default=600)
GRANT_REPORT_SECONDS = env_int("GRANT_REPORT_SECONDS", default=900)
if GRANT_SECONDS < 1 or GRANT_REPORT_SECONDS < 1:
    raise ImproperlyConfigured("GRANT_SECONDS and GRANT_REPORT_SECONDS must be ≥ 1")
# Tool sources (agents.upstream): the programs an admin may start as MCP servers over stdio, as
# written in the source (a path or a name on PATH). Empty: stdio sources cannot be added.
UPSTREAM_STDIO_COMMANDS = env_list("UPSTREAM_STDIO_COMMANDS", default=[])
# The trust loop (approvals.calibration): below this many graded samples per agent and tool,
# calibrated routing falls back to the static threshold; bounds are one-sided at this level.
CALIBRATION_MIN_SAMPLES = env_int("CALIBRATION_MIN_SAMPLES", default=50)
CALIBRATION_CONFIDENCE = 0.95
CHANNEL_REDIS_SOCKET_TIMEOUT = env_int("CHANNEL_REDIS_SOCKET_TIMEOUT", default=15)
if REDIS_URL:
    # One PUBLISH per frame and group, fanned out in each web process (live.layers explains why).
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "live.layers.LiveLayer",
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_timeout": CHANNEL_REDIS_SOCKET_TIMEOUT}],
                "prefix": env_str("CHANNEL_PREFIX", "countersign"),
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": CHANNEL_CAPACITY, "expiry": 60},
        }
    }

# Who delivers the pushes (live.relay): "process", a `manage.py live_relay` process beside the
# workers (production: the request that made a change only writes its intent); "inline", the
# process that committed, at once (tests and the single-process demo).
LIVE_RELAY = env_str("LIVE_RELAY", "process" if REDIS_URL else "inline")
if LIVE_RELAY not in {"process", "inline"}:
    raise ImproperlyConfigured("LIVE_RELAY must be process or inline.")
# The relay process delivers at most once per this many milliseconds: a change after a quiet spell goes
# out at once, a stream of changes in batches, so each socket handles a frame per batch, not per change.
LIVE_RELAY_GATHER_MS = env_int("LIVE_RELAY_GATHER_MS", default=25)
if not 0 <= LIVE_RELAY_GATHER_MS <= 1000:
    raise ImproperlyConfigured("LIVE_RELAY_GATHER_MS must be from 0 to 1000.")

# --- Background work --------------------------------------------------------
# "celery": tasks go to the broker and a separate `celery worker` runs them.
# "embedded": tasks run on a thread of the web process (no broker). Tests set
# "inline" so a task runs synchronously when the transaction commits.
BACKGROUND_TASKS = env_str("BACKGROUND_TASKS", "celery" if REDIS_URL else "embedded")
if BACKGROUND_TASKS not in {"celery", "embedded", "inline"}:
    raise ImproperlyConfigured("BACKGROUND_TASKS must be celery, embedded or inline.")

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
# At-least-once delivery: ack after the task ran, redeliver if the worker died,
# and never let one worker hoard messages another could run.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery's Django fixup closes Django's connection pool after every task on prefork (for fork safety),
# unless it may reuse connections: measured, three new PostgreSQL sessions per task and twice the CPU of
# the same task on solo. The pool lives in the pool child (created after the fork) and is closed every
# CELERY_DB_REUSE_MAX tasks; between tasks the connection goes back to it (config.celery).
CELERY_DB_REUSE_MAX = 1000
# prefork (Celery's default) runs each task in a pool child, which Celery interrupts past the soft
# time limit and kills past the hard one. solo runs it in the worker's own process: measured somewhat
# cheaper per task (docs/benchmarks.md), but nothing ends a hung task there; docs/production.md says
# what that costs before you choose it.
CELERY_WORKER_POOL = env_str("CELERY_WORKER_POOL", "prefork")
if CELERY_WORKER_POOL not in {"solo", "prefork"}:
    raise ImproperlyConfigured("CELERY_WORKER_POOL must be prefork or solo.")
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 240
# The longest an agent run's step may hold its lease (a model call and taking the step).
STEP_TIME_LIMIT_SECONDS = env_int("STEP_TIME_LIMIT_SECONDS", default=CELERY_TASK_TIME_LIMIT)
if STEP_TIME_LIMIT_SECONDS < 1:
    raise ImproperlyConfigured("STEP_TIME_LIMIT_SECONDS must be at least 1.")
# Longer than any task's hard limit, or Redis redelivers a task still running.
# Priorities: Redis emulates them with one list per step; 0 is served first.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": 3600,
    "priority_steps": list(range(10)),
    "sep": ":",
    "queue_order_strategy": "priority",
}
CELERY_TASK_DEFAULT_PRIORITY = 5
# Periodic jobs, run by `celery -A config beat` (one beat process). The embedded
# default runs the same jobs on a timer inside the web process.
PERIODIC_JOBS = {
    "approvals.sweep_executions": float(env_int("SWEEP_INTERVAL_SECONDS", default=5)),
    "approvals.sweep_grants": float(env_int("SWEEP_INTERVAL_SECONDS", default=5)),
    "approvals.sweep_webhooks": float(env_int("SWEEP_INTERVAL_SECONDS", default=5)),
    "agents.sweep_runs": float(env_int("SWEEP_INTERVAL_SECONDS", default=5)),
    "approvals.sla_tick": float(env_int("SLA_INTERVAL_SECONDS", default=15)),
    "audit.checkpoint": float(env_int("AUDIT_CHECKPOINT_INTERVAL_SECONDS", default=60)),
    "agents.purge_traces": 3600.0,
    "gateway.purge_tasks": 3600.0,
    "ops.evaluate_alerts": float(env_int("ALERT_INTERVAL_SECONDS", default=60)),
    "approvals.refit_calibration": float(env_int("CALIBRATION_REFIT_SECONDS", default=600)),
}
CELERY_BEAT_SCHEDULE = {name: {"task": name, "schedule": every} for name, every in PERIODIC_JOBS.items()}
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_QUEUE", "countersign")
# Workers log through LOGGING below (its formatter masks secrets), not Celery's own.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- Countersign ------------------------------------------------------------
COUNTERSIGN_DEMO_PASSWORD = env_str("COUNTERSIGN_DEMO_PASSWORD", "countersign-demo")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # Known secret values are masked in every line, tracebacks included (core.logs).
    "formatters": {
        "plain": {"()": "core.logs.ScrubbingFormatter", "format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        # channels-redis reports messages dropped on full channels ("N of M channels
        # over capacity in group G") at INFO: keep it visible whatever LOG_LEVEL is.
        "channels_redis": {"level": "INFO", "handlers": ["console"], "propagate": False},
        "django.channels.server": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
    },
}
COUNTERSIGN_MODEL_PRICES = env_str("COUNTERSIGN_MODEL_PRICES")

# Fault injection for tests and the soak benchmark: the demo tools hold their
# effect's transaction open this long. Never set in production.
DEMO_TOOL_DELAY_SECONDS = float(env_str("DEMO_TOOL_DELAY_SECONDS", "0") or 0)
# A run's step or an execution in progress holds a lease this long, renewed by a
# heartbeat every third of it (core.leases); the sweeper hands on work whose lease
# ran out. Interrupted work settles within LEASE_SECONDS + SWEEP_INTERVAL_SECONDS.
LEASE_SECONDS = float(env_int("LEASE_SECONDS", default=15))

# --- E-mail -------------------------------------------------------------------
# Notifications go by e-mail only when EMAIL_HOST is set (or EMAIL_BACKEND chosen).
EMAIL_HOST = env_str("EMAIL_HOST")
EMAIL_PORT = env_int("EMAIL_PORT", default=587)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_secret("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", default=True)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "countersign@localhost")
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend" if EMAIL_HOST else "django.core.mail.backends.dummy.EmailBackend",
)
EMAIL_NOTIFICATIONS = bool(EMAIL_HOST) or env_bool("EMAIL_NOTIFICATIONS", default=False)
COUNTERSIGN_BASE_URL = env_str("COUNTERSIGN_BASE_URL", "http://127.0.0.1:8000").rstrip("/")

# --- Audit ----------------------------------------------------------------------
# The chain is keyed: each row's hash is an HMAC with this key, which must not live
# in the database, so someone who can only write rows cannot forge one that verifies.
# Old keys stay listed after a rotation so the rows they signed still verify.
# Anchors (the chain's head, appended after every commit) go to a file outside the
# database; `audit_verify` checks them, so a cut-off tail is caught.
AUDIT_CHAIN_KEY = env_secret("AUDIT_CHAIN_KEY")
AUDIT_CHAIN_OLD_KEYS = [k for k in env_secret("AUDIT_CHAIN_OLD_KEYS").split(",") if k.strip()]
# A deployment whose chain began before it was keyed: its unkeyed rows end at this seq
# (what `audit_verify` printed as "events" before the upgrade). 0 = every row is keyed.
AUDIT_LEGACY_UNTIL_SEQ = env_int("AUDIT_LEGACY_UNTIL_SEQ", default=0)
AUDIT_ANCHOR_FILE = env_str("AUDIT_ANCHOR_FILE")
# Anchor files of other hosts (each host appends its own), read by audit_verify.
AUDIT_ANCHOR_EXTRA_FILES = env_list("AUDIT_ANCHOR_EXTRA_FILES", default=[])
if PRODUCTION and not env_bool("AUDIT_UNPROTECTED", default=False):
    if not AUDIT_CHAIN_KEY:
        raise ImproperlyConfigured(
            "AUDIT_CHAIN_KEY (or AUDIT_CHAIN_KEY_FILE) must be set in production; "
            "AUDIT_UNPROTECTED=1 runs without tamper evidence."
        )
    if not AUDIT_ANCHOR_FILE:
        raise ImproperlyConfigured(
            "AUDIT_ANCHOR_FILE must name a file outside the database in production; "
            "AUDIT_UNPROTECTED=1 runs without an external anchor."
        )
if not AUDIT_CHAIN_KEY:
    # The embedded demo (or an explicitly unprotected deployment): a key derived from
    # SECRET_KEY, which is not in the database either.
    AUDIT_CHAIN_KEY = hashlib.sha256(f"countersign audit chain:{SECRET_KEY}".encode()).hexdigest()
if not AUDIT_ANCHOR_FILE and not PRODUCTION:
    AUDIT_ANCHOR_FILE = env_str("SQLITE_PATH", str(BASE_DIR / "db.sqlite3")) + ".anchors"

# --- Retention -------------------------------------------------------------------
# Prompts and responses in traces can hold personal data: after this many days
# their text is removed (metrics stay). The audit log is never touched. 0 = keep.
TRACE_RETENTION_DAYS = env_int("TRACE_RETENTION_DAYS", default=90)

# Where provider keys and webhook secrets may be referenced from: variables with
# this prefix, or files under this directory. Nothing else can be sent anywhere.
SECRET_ENV_PREFIX = env_str("SECRET_ENV_PREFIX", "COUNTERSIGN_SECRET_")
SECRETS_DIR = env_str("SECRETS_DIR", "/run/secrets")
