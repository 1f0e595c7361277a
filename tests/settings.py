"""Settings of the test project."""

import os
import tempfile

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
# An on-disk database, whose connections really close (an in-memory SQLite one never does):
# tests/test_database.py watches views' connections open and close. A server started by the
# tests is given its file; the test process's own (its test database) is a file too.
_file_database = os.environ.get("TESTS_FILE_DATABASE") or os.path.join(
    tempfile.mkdtemp(prefix="tests-file-db-"), "file.sqlite3"
)
_max_age = os.environ.get("TESTS_CONN_MAX_AGE", "0")
DATABASES["file"] = {
    "ENGINE": "django.db.backends.sqlite3",
    "NAME": _file_database,
    "TEST": {"NAME": _file_database + ".test"},
    "ATOMIC_REQUESTS": bool(os.environ.get("TESTS_ATOMIC_REQUESTS")),
    "CONN_MAX_AGE": None if _max_age == "none" else int(_max_age),
}
if os.environ.get("TESTS_ATOMIC_REQUESTS"):
    DATABASES["default"]["ATOMIC_REQUESTS"] = True
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

# Settings a test gives a server it starts, as JSON: {"WEBSOCKET_SEND_TIMEOUT": 1, ...}.
if os.environ.get("TESTS_SETTINGS_OVERRIDES"):
    import json

    globals().update(json.loads(os.environ["TESTS_SETTINGS_OVERRIDES"]))

# Servers started by the tests may shorten these (tests/servers.py passes them in the
# environment), so that a deadline can be watched in seconds.
for _name in ("WEBSOCKET_HANDSHAKE_TIMEOUT", "WEBSOCKET_CLOSE_TIMEOUT", "WEBSOCKET_SEND_TIMEOUT"):
    if os.environ.get(f"TESTS_{_name}"):
        globals()[_name] = float(os.environ[f"TESTS_{_name}"])
