from django.urls import path

from . import views

urlpatterns = [
    path("echo", views.echo),
    path("async/echo", views.async_echo),
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
    path("partner", views.partner),
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
    path("database/ticks", views.database_ticks),
    path("database/idle", views.database_idle),
    path("database/transactions", views.database_transactions),
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
    path("groups/presence", group_views.presence),
    path("groups/stats", group_views.stats),
    path("groups/amember", group_views.async_member),
]

# Slow clients, floods, races and the teardown (tests/test_soundness.py).
from . import soundness_views  # noqa: E402

urlpatterns += [
    path("soundness/send-big", soundness_views.send_big),
    path("soundness/send-forever", soundness_views.send_forever),
    path("soundness/push-loop", soundness_views.push_loop),
    path("soundness/racing-senders", soundness_views.racing_senders),
    path("soundness/join-quietly", soundness_views.join_quietly),
    path("soundness/closed-by-another-thread", soundness_views.closed_by_another_thread),
    path("soundness/callback-after-end", soundness_views.callback_after_end),
    path("soundness/unanswered-pings", soundness_views.unanswered_pings),
    path("soundness/memory", soundness_views.memory),
]

# The browser client's tests (tests/test_browser_client.py); their views are in tests/client_views.py.
from . import client_views  # noqa: E402

urlpatterns += [
    path("static/<path:path>", client_views.static),
    path("client/page", client_views.page),
    path("client/module-page", client_views.module_page),
    path("client/silent", client_views.silent),
    path("client/close/<int:code>", client_views.close_with),
]

# async def views, on the ASGI servers (tests/test_contract_async.py); in tests/async_views.py.
from . import async_views  # noqa: E402

urlpatterns += [
    path("async/small", async_views.small),
    path("async/subprotocol", async_views.subprotocol),
    path("async/refuse", async_views.refuse),
    path("async/crash", async_views.crash),
    path("async/server-close", async_views.server_close),
    path("async/client-close", async_views.client_close),
    path("async/probe", async_views.probe),
    path("async/vanish", async_views.vanish),
    path("async/groups/member", async_views.member),
    path("async/groups/send", async_views.group_send),
    path("async/record", async_views.record),
]

# Detached sockets (tests/test_detach.py).
from . import detach_views  # noqa: E402

urlpatterns += [
    path("detach/notify", detach_views.notify),
    path("detach/attached", detach_views.attached),
    path("detach/anotify", detach_views.async_notify),
    path("detach/aattached", detach_views.async_attached),
    path("detach/status", detach_views.status),
    path("detach/send-sequence", detach_views.send_sequence),
    path("detach/bad-close", detach_views.bad_close),
    path("detach/referrers", detach_views.referrers),
]
