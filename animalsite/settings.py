"""Settings for animalsite, read from the environment.

Every value has an embedded default (SQLite, a broker that needs no server, media under
var/) so that a laptop runs the whole product with no services. Bad values fail at start-up
with ImproperlyConfigured, never later in a request or a task.
"""

import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from .env import env_bool, env_float, env_int, env_json, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent


VAR_DIR = Path(env_str("VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", True)


def _secret_key() -> str:
    key = env_str("SECRET_KEY")
    if key:
        return key
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    # The embedded default keeps one generated key so sessions survive restarts.
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50))
        key_file.chmod(0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "axes",
    "classifier",
    "labeling",
    "animalsite",  # the commands that run the whole product: run_all, demo_setup
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "animalsite.security.ContentSecurityPolicyMiddleware",
    "axes.middleware.AxesMiddleware",  # answers 429 to a locked-out login
    # Last, so it sees what views raise: the database or the broker away answers 503 (animalsite/errors.py).
    "animalsite.errors.ServiceUnavailableMiddleware",
]

ROOT_URLCONF = "animalsite.urls"
WSGI_APPLICATION = "animalsite.wsgi.application"

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

# Database: DATABASE_URL, or a SQLite file under var/.
_default_sqlite = f"sqlite:///{VAR_DIR / 'db.sqlite3'}"
try:
    # Health checks: a kept connection that the server closed (a restart, pg_terminate_backend) is
    # replaced before the request uses it, instead of failing that request.
    DATABASES = {"default": dj_database_url.parse(env_str("DATABASE_URL", _default_sqlite), conn_max_age=60,
                                                  conn_health_checks=True)}
except ValueError as e:
    raise ImproperlyConfigured(f"DATABASE_URL is not a database URL: {e}") from None
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat share one file: wait for locks instead of failing at once,
    # and give the test database a file so a worker process can open it too.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {"timeout": 30, "transaction_mode": "IMMEDIATE",
                                       "init_command": "PRAGMA journal_mode=WAL;"}
    # One file per test run, so two runs side by side never share (and delete) each other's.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test_db_{os.getpid()}.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "upload"

# HTTPS=1 behind TLS (X-Forwarded-Proto): SSL redirect, secure cookies and HSTS, each also its own
# variable. With DEBUG=0, SECRET_KEY, ALLOWED_HOSTS and HTTPS=1, `check --deploy` is clean.
HTTPS = env_bool("HTTPS", False)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", HTTPS)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", HTTPS)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600 if HTTPS else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", HTTPS)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", HTTPS)
if env_bool("SECURE_PROXY_SSL_HEADER", HTTPS):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Sent by animalsite/security.py ("" sends none); with media on S3, add the store to img-src.
CONTENT_SECURITY_POLICY = os.environ.get("CONTENT_SECURITY_POLICY", (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'; form-action 'self'"
))

# Login throttling (django-axes): LOGIN_FAILURE_LIMIT wrong passwords for one username from one
# address lock that pair out (429) for LOGIN_COOLOFF_MINUTES. API clients use tokens.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_ENABLED = env_bool("LOGIN_THROTTLING", True)
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "staticfiles")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns on every start without it
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
# Media is private (animalsite/media.py checks every request). Behind nginx, an `internal`
# location aliasing MEDIA_ROOT (/protected-media/): Django answers with X-Accel-Redirect.
MEDIA_ACCEL_REDIRECT_PREFIX = env_str("MEDIA_ACCEL_REDIRECT_PREFIX", "")

# Image files go through Django's storage API only: MEDIA_STORAGE(_OPTIONS) for an object store.
STORAGES = {
    "default": {
        "BACKEND": env_str("MEDIA_STORAGE", "django.core.files.storage.FileSystemStorage"),
        "OPTIONS": env_json("MEDIA_STORAGE_OPTIONS", {}),
    },
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        ),
    },
}

# Uploads. The pixel limit stops decompression bombs (KBs of PNG claiming 20000x20000 pixels) before decoding.
UPLOAD_MAX_BYTES = env_int("UPLOAD_MAX_BYTES", 20 * 1024 * 1024, minimum=1024)
UPLOAD_MAX_PIXELS = env_int("UPLOAD_MAX_PIXELS", 50_000_000, minimum=10_000)
UPLOAD_MAX_FILES = env_int("UPLOAD_MAX_FILES", 100, minimum=1)
# Memory one decoded image may take (classifier/ml/images.py): larger JPEGs are decoded at a
# reduced scale, other formats refused. The web and the workers stay well under 1 GB per image.
UPLOAD_MAX_DECODED_BYTES = env_int("UPLOAD_MAX_DECODED_BYTES", 256 * 1024 * 1024, minimum=1024 * 1024)
# A label import's zip (checked before it is stored; nginx's client_max_body_size should match).
IMPORT_MAX_BYTES = env_int("IMPORT_MAX_BYTES", 500 * 1024 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = UPLOAD_MAX_BYTES + 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FILES = UPLOAD_MAX_FILES
THUMBNAIL_SIZE = env_int("THUMBNAIL_SIZE", 256, minimum=32)
PREVIEW_SIZE = env_int("PREVIEW_SIZE", 1024, minimum=128)

# Machine learning.
DEFAULT_BACKBONE = env_str("DEFAULT_BACKBONE", "efficientnet_lite0")
PREDICTION_TOP_K = env_int("PREDICTION_TOP_K", 5, minimum=1)
TORCH_NUM_THREADS = env_int("TORCH_NUM_THREADS", 0, minimum=0)  # 0: torch's own choice
WEIGHTS_DIR = env_str("WEIGHTS_DIR")  # extra folder searched for torchvision weight files
# How CPU processes serve a version: "auto" (ONNX Runtime on the CPU where it is installed,
# PyTorch on CUDA), "onnxruntime" (never fall back to PyTorch on the CPU) or "torch".
SERVING_BACKEND = env_str("SERVING_BACKEND", "auto")
if SERVING_BACKEND not in ("auto", "onnxruntime", "torch"):
    raise ImproperlyConfigured(f"SERVING_BACKEND={SERVING_BACKEND!r}; choose one of: auto, onnxruntime, torch")
ONNX_THREADS = env_int("ONNX_THREADS", 0, minimum=0)  # 0: the CPUs this process may use
# Real photos an export is checked on against PyTorch before it serves (a few are read).
ONNX_CHECK_PHOTOS = Path(env_str("ONNX_CHECK_PHOTOS", str(BASE_DIR / "demo" / "photos")))
# A prediction claimed longer ago than this is from a dead worker: the recovery loop queues it again.
PREDICTION_CLAIM_TIMEOUT_S = env_int("PREDICTION_CLAIM_TIMEOUT_S", 60, minimum=10)

# Training and the model registry: MODELS_ROOT is this node's own working folder.
MODELS_ROOT = Path(env_str("MODELS_ROOT", str(VAR_DIR / "models")))
EMBEDDING_CACHE_DIR = Path(env_str("EMBEDDING_CACHE_DIR", str(VAR_DIR / "embeddings")))
# Model versions' files (card.json and weights) go through one storage, STORAGES["models"]: the
# file system at MODELS_ROOT by default (no copy: training writes there), any S3-compatible store
# with MODELS_STORAGE=storages.backends.s3.S3Storage and MODELS_STORAGE_OPTIONS (django-storages).
# A node that lacks a version's folder downloads it into MODELS_CACHE_DIR (one folder per card
# checksum), checking every file's checksum (classifier/model_store.py).
STORAGES["models"] = {
    "BACKEND": env_str("MODELS_STORAGE", "django.core.files.storage.FileSystemStorage"),
    "OPTIONS": env_json("MODELS_STORAGE_OPTIONS", {}),  # FileSystemStorage without "location": MODELS_ROOT
}
MODELS_CACHE_DIR = Path(env_str("MODELS_CACHE_DIR", str(VAR_DIR / "model-cache")))
# ONNX exports, one per model card (named by the card's hash), made once per node.
ONNX_DIR = Path(env_str("ONNX_DIR", str(MODELS_ROOT / "onnx")))
# Where training reads the current labels from: {image id: class name}. A dotted path, so
# classifier never imports labeling (labeling depends on classifier, not the reverse).
TRAINING_LABELS_SOURCE = env_str("TRAINING_LABELS_SOURCE", "labeling.selectors.training_labels")
RETRAIN_AFTER_LABELS = env_int("RETRAIN_AFTER_LABELS", 50, minimum=0)  # 0: never by label count
RETRAIN_MODE = env_str("RETRAIN_MODE", "head")
TRAINING_MIN_PER_CLASS = env_int("TRAINING_MIN_PER_CLASS", 5, minimum=2)
TRAINING_TEST_FRACTION = env_float("TRAINING_TEST_FRACTION", 0.3, minimum=0.05, maximum=0.9)
TRAINING_VAL_FRACTION = env_float("TRAINING_VAL_FRACTION", 0.15, minimum=0.05, maximum=0.9)
# Plain (not flip-averaged) features for the head: the ones every prediction already stores,
# so a head retrain and a re-score never run the backbone for an image seen before.
TRAINING_HEAD_TTA = env_bool("TRAINING_HEAD_TTA", False)
TRAINING_EPOCHS = env_int("TRAINING_EPOCHS", 30, minimum=1)  # finetune
TRAINING_BATCH_SIZE = env_int("TRAINING_BATCH_SIZE", 32, minimum=1)
# The most a training request may ask for (400 naming the option above these).
TRAINING_MAX_EPOCHS = env_int("TRAINING_MAX_EPOCHS", 500, minimum=1)
TRAINING_MAX_BATCH_SIZE = env_int("TRAINING_MAX_BATCH_SIZE", 512, minimum=1)
TRAINING_DEVICE = env_str("TRAINING_DEVICE", "auto")  # auto: cuda when present
# A running training run whose worker has not reported for this long is marked failed.
TRAINING_HEARTBEAT_TIMEOUT_S = env_int("TRAINING_HEARTBEAT_TIMEOUT_S", 600, minimum=2)
# A run whose worker died is queued again until it has been claimed this many times, then failed.
TRAINING_MAX_ATTEMPTS = env_int("TRAINING_MAX_ATTEMPTS", 2, minimum=1)
PROMOTION_MAX_CLASS_DROP = env_float("PROMOTION_MAX_CLASS_DROP", 0.02, minimum=0.0, maximum=1.0)
PROMOTION_MIN_TEST_IMAGES = env_int("PROMOTION_MIN_TEST_IMAGES", 10, minimum=1)
# The gate's paired test: a challenger must be more accurate than the champion on the same test
# images with a one-sided McNemar exact p below this (docs/loop.md); 1 turns the test off.
PROMOTION_SIGNIFICANCE = env_float("PROMOTION_SIGNIFICANCE", 0.05, minimum=0.0, maximum=1.0)
# A class needs this many test images before its own F1 drop can veto a promotion (see gate.py).
PROMOTION_MIN_CLASS_SUPPORT = env_int("PROMOTION_MIN_CLASS_SUPPORT", 10, minimum=1)
REPREDICT_CHUNK_SIZE = env_int("REPREDICT_CHUNK_SIZE", 64, minimum=1)
# Batch inference jobs: images per chunk (one task each), per forward pass, decoding threads.
INFERENCE_CHUNK_SIZE = env_int("INFERENCE_CHUNK_SIZE", 256, minimum=1)
INFERENCE_BATCH_SIZE = env_int("INFERENCE_BATCH_SIZE", 32, minimum=1)
INFERENCE_DECODE_THREADS = env_int("INFERENCE_DECODE_THREADS", 2, minimum=1)
# A running chunk's heartbeat; one older than the timeout is requeued (docs/operations.md).
INFERENCE_CHUNK_HEARTBEAT_S = env_int("INFERENCE_CHUNK_HEARTBEAT_S", 10, minimum=1)
INFERENCE_CHUNK_TIMEOUT_S = env_int("INFERENCE_CHUNK_TIMEOUT_S", 45, minimum=5)
if INFERENCE_CHUNK_TIMEOUT_S < 3 * INFERENCE_CHUNK_HEARTBEAT_S:
    raise ImproperlyConfigured("INFERENCE_CHUNK_TIMEOUT_S must be at least 3 x INFERENCE_CHUNK_HEARTBEAT_S")
# Workers announce queues, device and backend every WORKER_HEARTBEAT_S; gone after WORKER_FRESH_S.
WORKER_HEARTBEAT_S = env_int("WORKER_HEARTBEAT_S", 30, minimum=1)
WORKER_FRESH_S = env_int("WORKER_FRESH_S", 120, minimum=2)
# CPU seconds per training image per fine-tune epoch (Lite0, 224 px: 0.18 measured, docs/workers.md).
FINETUNE_CPU_S_PER_IMAGE = env_float("FINETUNE_CPU_S_PER_IMAGE", 0.2, minimum=0.0)
if RETRAIN_MODE not in ("head", "finetune"):
    raise ImproperlyConfigured(f"RETRAIN_MODE={RETRAIN_MODE!r}; choose one of: head, finetune")
if TRAINING_DEVICE not in ("auto", "cpu", "cuda"):
    raise ImproperlyConfigured(f"TRAINING_DEVICE={TRAINING_DEVICE!r}; choose one of: auto, cpu, cuda")

# Review queue (labeling).
REVIEW_QUEUE_STRATEGY = env_str("REVIEW_QUEUE_STRATEGY", "margin_diverse")
REVIEW_RANDOM_SHARE = float(env_int("REVIEW_RANDOM_PERCENT", 10, minimum=0)) / 100.0
REVIEW_CLAIM_SECONDS = env_int("REVIEW_CLAIM_SECONDS", 600, minimum=5)

# The data browser (docs/browse.md): "more like this" size; exact search below INDEX_MIN_ROWS
# embeddings (an IVF index above); deleted and late-committed rows seen within RESYNC_SECONDS; the
# cosine at which an image is flagged as an earlier one's near-duplicate (benchmarks.near_duplicates).
SIMILAR_DEFAULT_K = env_int("SIMILAR_DEFAULT_K", 8, minimum=1)
SIMILARITY_INDEX_MIN_ROWS = env_int("SIMILARITY_INDEX_MIN_ROWS", 20000, minimum=1)
SIMILARITY_RESYNC_SECONDS = env_float("SIMILARITY_RESYNC_SECONDS", 10.0, minimum=0.0)
NEAR_DUPLICATE_COSINE = env_float("NEAR_DUPLICATE_COSINE", 0.85, minimum=0.5, maximum=1.0)
# image id -> its near-duplicate group's first image, read by snapshots (classifier never imports labeling).
NEAR_DUPLICATE_GROUPS_SOURCE = env_str("NEAR_DUPLICATE_GROUPS_SOURCE", "labeling.summaries.near_duplicate_roots")
REVIEW_CANDIDATE_LIMIT = env_int("REVIEW_CANDIDATE_LIMIT", 5000, minimum=10)
REVIEW_PREFETCH = env_int("REVIEW_PREFETCH", 3, minimum=1)
# This share of images (chosen by content hash) is labelled by two annotators, for agreement.
DOUBLE_ANNOTATION_PERCENT = env_int("DOUBLE_ANNOTATION_PERCENT", 10, minimum=0)
if DOUBLE_ANNOTATION_PERCENT > 100:
    raise ImproperlyConfigured("DOUBLE_ANNOTATION_PERCENT must be between 0 and 100")
if REVIEW_RANDOM_SHARE > 1:
    raise ImproperlyConfigured("REVIEW_RANDOM_PERCENT must be between 0 and 100")
_strategies = ("margin_diverse", "margin", "entropy", "random")
if REVIEW_QUEUE_STRATEGY not in _strategies:
    raise ImproperlyConfigured(
        f"REVIEW_QUEUE_STRATEGY={REVIEW_QUEUE_STRATEGY!r}; choose one of: {', '.join(_strategies)}")

# Celery: one app (animalsite/celery.py) configured from the CELERY_ names below.
INFERENCE_QUEUE = env_str("INFERENCE_QUEUE", "inference")
TRAINING_QUEUE = env_str("TRAINING_QUEUE", "training")
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
BROKER_DIR = VAR_DIR / "broker"
if CELERY_BROKER_URL.startswith("filesystem://"):
    BROKER_DIR.mkdir(parents=True, exist_ok=True)
    (BROKER_DIR / "processed").mkdir(exist_ok=True)
    (BROKER_DIR / "control").mkdir(exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR),
        "data_folder_out": str(BROKER_DIR),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
        # The transport polls its folder; the default 1 s would add up to a second to
        # every upload's answer.
        "polling_interval": 0.1,
    }
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # A task not acknowledged within this time is handed to another worker; it must be
    # longer than the longest task, or a slow training run would be started twice.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT_S", 6 * 3600)}
else:
    raise ImproperlyConfigured(
        f"CELERY_BROKER_URL={CELERY_BROKER_URL!r}: use redis://HOST:PORT/DB or filesystem://"
    )
# "default" is each process's own memory. "shared" is seen by the web and every worker (the
# retrain check's debounce): SHARED_CACHE_URL (a redis:// URL), by default the broker's Redis
# (keys under "animalsite:"), or with the filesystem broker files under VAR_DIR, shared by the
# processes of one machine as that broker is. Nothing may clear "shared": on the broker's Redis
# database that would drop the queues.
_broker_is_redis = CELERY_BROKER_URL.startswith(("redis://", "rediss://"))
SHARED_CACHE_URL = env_str("SHARED_CACHE_URL", CELERY_BROKER_URL if _broker_is_redis else "")
if SHARED_CACHE_URL.startswith(("redis://", "rediss://")):
    _shared_cache = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": SHARED_CACHE_URL,
                     "KEY_PREFIX": "animalsite"}
elif SHARED_CACHE_URL:
    raise ImproperlyConfigured(f"SHARED_CACHE_URL={SHARED_CACHE_URL!r}: use redis://HOST:PORT/DB, or leave it unset")
else:
    _shared_cache = {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                     "LOCATION": str(VAR_DIR / "cache")}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}, "shared": _shared_cache}
CELERY_TASK_ROUTES = ("animalsite.celery.route_task",)
CELERY_TASK_DEFAULT_QUEUE = INFERENCE_QUEUE
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True  # state lives in our tables, not in a result backend
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A send to an absent broker fails within a second (the outbox keeps the task), not holding the request.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
# The outbox (classifier/enqueue.py, docs/operations.md): a task is a row written with the work
# it is for; the request sends it after its commit, the sweeper sends what is left.
OUTBOX_RESEND_AFTER_S = env_int("OUTBOX_RESEND_AFTER_S", 5, minimum=1)  # grace for the request's own send
OUTBOX_REDELIVER_AFTER_S = env_int("OUTBOX_REDELIVER_AFTER_S", 30, minimum=5)  # sent, no worker started it
OUTBOX_SWEEP_INTERVAL_S = env_int("OUTBOX_SWEEP_INTERVAL_S", 5, minimum=1)
OUTBOX_KEEP_DAYS = env_int("OUTBOX_KEEP_DAYS", 7, minimum=1)
# The database or the broker away: API answers 503 {"detail", "retry_after"} with this Retry-After.
SERVICE_RETRY_AFTER_S = env_int("SERVICE_RETRY_AFTER_S", 5, minimum=1)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "classifier.api.pagination.StrictPageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "classifier.api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "animalsite API",
    "DESCRIPTION": "Upload animal photos and read the model's predictions.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Offline docs: Swagger UI's assets come from drf-spectacular-sidecar, not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Every operation documents its error answers (401, 403, 404, 400, 409) as {"detail": ...}.
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "classifier.api.schema.document_errors"],
    "ENUM_NAME_OVERRIDES": {"ModelVersionStatusEnum": "classifier.models.ModelVersion.Status",
                            "ImageStatusEnum": "classifier.models.Image.Status"},
    # Ids in paths (classifier/converters.py): integers that fit a 64-bit column.
    "PATH_CONVERTER_OVERRIDES": {"id": {"type": "integer", "minimum": 0, "maximum": 999_999_999_999_999_999}},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
