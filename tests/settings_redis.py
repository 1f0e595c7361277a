"""The test project with the Redis group backend, on the Redis server the tests started.

Used by server subprocesses: DJANGO_SETTINGS_MODULE=tests.settings_redis with TEST_REDIS_URL.
"""

import os

from tests.settings import *  # noqa: F403

WEBSOCKET_GROUPS = {
    # RedisClusterGroupBackend for the cluster tests (tests/test_groups_cluster.py).
    "BACKEND": "django_websocket.groups.redis." + os.environ.get("TEST_REDIS_BACKEND", "RedisGroupBackend"),
    "LOCATION": os.environ["TEST_REDIS_URL"],
    "PREFIX": os.environ.get("TEST_REDIS_PREFIX", "tests:"),
}
if os.environ.get("TEST_REDIS_PRESENCE_TTL"):
    WEBSOCKET_GROUPS["PRESENCE_TTL"] = float(os.environ["TEST_REDIS_PRESENCE_TTL"])
