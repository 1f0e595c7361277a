"""The test project with the Redis group backend, on the Redis server the tests started.

Used by server subprocesses: DJANGO_SETTINGS_MODULE=tests.settings_redis with TEST_REDIS_URL.
"""

import os

from tests.settings import *  # noqa: F403

WEBSOCKET_GROUPS = {
    "BACKEND": "django_websocket.groups.redis.RedisGroupBackend",
    "LOCATION": os.environ["TEST_REDIS_URL"],
    "PREFIX": os.environ.get("TEST_REDIS_PREFIX", "tests:"),
}
