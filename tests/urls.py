from django.urls import path

from . import views

urlpatterns = [
    path("echo", views.echo),
    path("accept", views.accept),
    path("plain", views.plain),
    path("subprotocol", views.subprotocol),
    path("refuse", views.refuse),
    path("crash", views.crash),
    path("small", views.small),
    path("returns-value", views.returns_value),
    path("server-close", views.server_close),
    path("probe", views.probe),
    path("finished", views.finished_count),
    path("last-results", views.last_results),
    path("cbv", views.EchoView.as_view()),
    path("public", views.public),
    path("undecorated-echo", views.undecorated_echo),
    path("plain-no-middleware", views.plain_no_middleware),
    path("same-object", views.same_object),
    path("hand-marked", views.hand_marked),
    path("hand-required", views.hand_required),
    path("async-view", views.async_view),
    path("raises-forbidden", views.raises_forbidden),
    path("ticker", views.ticker),
    path("finished-probe", views.finished_probe),
    path("server-close-long", views.server_close_long),
    path("flood", views.flood),
    path("database-per-message", views.database_per_message),
    path("unmasking", views.unmasking),
    path("custom-attribute", views.custom_attribute),
    path("large", views.large),
    path("upload", views.upload),
    path("pid", views.pid),
    path("two-senders", views.two_senders),
]

# Groups (tests/test_groups.py, tests/test_groups_redis.py); their views are in tests/group_views.py.
from . import group_views  # noqa: E402

urlpatterns += [
    path("groups/member", group_views.member),
    path("groups/send", group_views.send),
    path("groups/members", group_views.members),
    path("groups/backend", group_views.backend),
]
