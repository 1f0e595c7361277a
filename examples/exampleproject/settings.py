"""Settings of the example project (for development only: DEBUG is on)."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "django-websocket-example-not-secret"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    # Listed first so that its runserver (which serves WebSocket views) is the one used.
    "django_websocket",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "echo",
    "search",
    "chat",
    "notifications",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django_websocket.middleware.WebSocketMiddleware",
]

ROOT_URLCONF = "exampleproject.urls"
WSGI_APPLICATION = "exampleproject.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "exampleproject" / "templates"],
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

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        # EXAMPLE_DATABASE: another SQLite file, e.g. a temporary one for the browser tests.
        "NAME": os.environ.get("EXAMPLE_DATABASE", BASE_DIR / "db.sqlite3"),
    }
}

STATIC_URL = "static/"
# The pages' shared style, icon and connection-state helper (their WebSocket client,
# django_websocket/websocket.js, comes from the django_websocket app).
STATICFILES_DIRS = [BASE_DIR / "exampleproject" / "static"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Live search: seconds between two searches pushed for an unchanged query (the 2010 example
# searched every 30 seconds); a change of the entries pushes fresh results at once anyway.
LIVE_SEARCH_INTERVAL = 30

# Chat: rooms are groups. In memory by default (the sockets of one process: runserver); set
# REDIS_URL (e.g. redis://127.0.0.1:6379/0) to share them between processes, as several
# gunicorn workers need. (So are the notifications' users: see notifications/views.py.)
if os.environ.get("REDIS_URL"):
    WEBSOCKET_GROUPS = {
        "BACKEND": "django_websocket.groups.redis.RedisGroupBackend",
        "LOCATION": os.environ["REDIS_URL"],
        "PREFIX": "exampleproject:",
    }
