"""Settings of the fan-out benchmark's servers (benchmarks/fanout.py starts them).

The group backend is in memory unless ``BENCH_REDIS_URL`` names the Redis server to use (a node
of a Redis Cluster with ``BENCH_REDIS_BACKEND=RedisClusterGroupBackend``).
"""

import os

SECRET_KEY = "django-websocket-fanout-benchmark"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
INSTALLED_APPS = ["django_websocket"]
MIDDLEWARE = []
ROOT_URLCONF = "benchmarks.fanout_urls"
DATABASES = {}
USE_TZ = True
# No keepalive pings during a run: only group messages on the wire.
WEBSOCKET_PING_INTERVAL = None
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_websocket": {"handlers": ["console"], "level": "WARNING"}},
}
if os.environ.get("BENCH_REDIS_URL"):
    WEBSOCKET_GROUPS = {
        # RedisGroupBackend, or RedisClusterGroupBackend when the URL is a cluster node's.
        "BACKEND": "django_websocket.groups.redis." + os.environ.get("BENCH_REDIS_BACKEND", "RedisGroupBackend"),
        "LOCATION": os.environ["BENCH_REDIS_URL"],
        "PREFIX": "fanout:",
    }
