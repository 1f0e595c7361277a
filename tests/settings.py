"""Settings of the test project."""

import os

SECRET_KEY = "django-websocket-tests"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
INSTALLED_APPS = [
    "django_websocket",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_websocket.middleware.WebSocketMiddleware",
]
ROOT_URLCONF = "tests.urls"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
if os.environ.get("TESTS_FILE_DATABASE"):
    # An on-disk database, whose connections really close (an in-memory SQLite one never does):
    # tests/test_integration.py watches a view's connections open and close between messages.
    DATABASES["file"] = {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["TESTS_FILE_DATABASE"]}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django_websocket": {"handlers": ["console"], "level": "INFO"},
        "django.request": {"handlers": ["console"], "level": "ERROR"},
    },
}

# Servers started by the tests may shorten these (tests/servers.py passes them in the
# environment), so that a deadline can be watched in seconds.
for _name in ("WEBSOCKET_HANDSHAKE_TIMEOUT", "WEBSOCKET_CLOSE_TIMEOUT", "WEBSOCKET_SEND_TIMEOUT"):
    if os.environ.get(f"TESTS_{_name}"):
        globals()[_name] = float(os.environ[f"TESTS_{_name}"])
