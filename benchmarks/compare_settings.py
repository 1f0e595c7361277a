"""Settings of every Django server that benchmarks/compare.py measures, ours and Channels alike.

The same minimal project for all: no middleware, no database, so that each server's own
WebSocket path is what is measured. Keepalive pings stay at their defaults (every server here
pings after 20 s of silence), as a user gets them.
"""

SECRET_KEY = "django-websocket-compare-benchmark"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["django_websocket"]
MIDDLEWARE = []
ROOT_URLCONF = "benchmarks.compare_urls"
DATABASES = {}
USE_TZ = True
# Channels (benchmarks/compare_asgi.py): the in-memory channel layer is not used by the echo.
ASGI_APPLICATION = "benchmarks.compare_asgi.application"
# Regular views on an ASGI server (benchmarks/compare_asgi_app.py) run a thread each: enough for
# the largest idle scenario (the default, 500, refuses the 501st with 503).
WEBSOCKET_ASGI_THREADS = 11000
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    # Only warnings: thousands of connections must not mean thousands of log lines.
    "loggers": {"django_websocket": {"handlers": ["console"], "level": "WARNING"}},
}
