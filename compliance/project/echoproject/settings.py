"""Settings of the conformance echo project.

The suite's group 9 sends messages of up to 16 MiB, in up to 65,536 fragments: the limits here
allow that. Projects keep the safe defaults (1 MiB).
"""

SECRET_KEY = "conformance-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["django_websocket"]
MIDDLEWARE = []
ROOT_URLCONF = "echoproject.urls"
DATABASES = {}
WSGI_APPLICATION = "echoproject.wsgi.application"

WEBSOCKET_MAX_MESSAGE_SIZE = 32 * 2**20
# The suite checks every frame it receives: no unsolicited keepalive pings during a case.
WEBSOCKET_PING_INTERVAL = None
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_websocket": {"handlers": ["console"], "level": "WARNING"}},
}
