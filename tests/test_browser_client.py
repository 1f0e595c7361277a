"""The browser client (django_websocket/static/django_websocket/websocket.js) in headless Chromium.

The test project runs under ``runserver`` in a subprocess that the tests stop and start again on
the same port, as a deployment or a developer restarts a server. Each test loads a page
(tests/client_views.py) that records every event of the clients it makes, with the page's own
clock (``performance.now()``), and reads those records back. A missing browser fails in CI and
skips loudly elsewhere, as in tests/test_browser.py.
"""

import json
import re
import socket
import sys
import time

import pytest

from tests.servers import ROOT, ServerProcess, free_port
from tests.test_browser import WAIT, _require_browser, chromium

FAST = {"initialDelay": 100, "maxDelay": 400, "jitter": 0}  # quick, predictable reconnections


@pytest.fixture(scope="module")
def browser():
    _require_browser()
    with chromium() as driver:
        yield driver


class Project:
    """The test project under runserver; stop() and start() keep the port."""

    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None
        self.start()

    def start(self):
        argv = [sys.executable, "-m", "django", "runserver", "--noreload", f"127.0.0.1:{self.port}"]
        self.process = ServerProcess("client-runserver", argv, self.port, cwd=ROOT)

    def stop(self):
        self.process.stop()

    def running(self):
        return self.process.proc.poll() is None


@pytest.fixture(scope="module")
def project(browser):
    started = Project()
    yield started
    started.stop()


@pytest.fixture
def page(browser, project):
    """The recording page, fresh; the server running when the test starts and after it ends."""
    if not project.running():
        project.start()
    browser.get(project.url + "/client/page")
    yield browser
    browser.get("about:blank")  # ends the page's clients before the next test
    if not project.running():
        project.start()


# --- helpers -------------------------------------------------------------------------------------


def make(driver, name, url, options=None):
    """``new DjangoWebSocket(url, options)`` in the page, its events recorded under ``name``."""
    driver.execute_script(
        "watch(arguments[0], new DjangoWebSocket(arguments[1], arguments[2]))", name, url, options or {}
    )


def call(driver, name, method, *args):
    return driver.execute_script(
        "const c = clients[arguments[0]]; return c[arguments[1]](...arguments[2]);", name, method, list(args)
    )


def prop(driver, name, attribute):
    return driver.execute_script("return clients[arguments[0]][arguments[1]];", name, attribute)


def events(driver, name, *types):
    return [
        e for e in driver.execute_script("return events;") if e["name"] == name and (not types or e["type"] in types)
    ]


def received(driver, name):
    return [e["data"] for e in events(driver, name, "message")]


def wait_until(driver, condition, what, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout}s; events: {driver.execute_script('return events;')}")
        time.sleep(0.05)


def wait_events(driver, name, type, count=1, timeout=WAIT):
    return wait_until(
        driver,
        lambda: (found := events(driver, name, type)) and len(found) >= count and found,
        f"{count} {type!r} event(s) of {name}",
        timeout,
    )


# --- URLs, options ---------------------------------------------------------------------------------


def test_urls_resolve_against_the_page(page, project):
    host = f"127.0.0.1:{project.port}"
    resolved = page.execute_script(
        "return arguments[0].map((u) => new DjangoWebSocket(u, { autoConnect: false }).url);",
        ["/echo", "echo", "?room=1", "https://example.test/x#top", "http://example.test:8000/y", "wss://a.test/z"],
    )
    assert resolved == [
        f"ws://{host}/echo",
        f"ws://{host}/client/echo",  # relative to /client/page
        f"ws://{host}/client/page?room=1",
        "wss://example.test/x",
        "ws://example.test:8000/y",
        "wss://a.test/z",
    ]
    errors = page.execute_script(
        """return [
             ["ftp://example.test/", {}],
             ["http://[not a host/", {}],
             ["/echo", { reconectDelay: 1 }],
             ["/echo", { queueDrop: "middle" }],
           ].map(([url, options]) => {
             try { new DjangoWebSocket(url, { autoConnect: false, ...options }); return null; }
             catch (error) { return error.name; }
           });"""
    )
    assert errors == ["SyntaxError", "SyntaxError", "TypeError", "TypeError"]
    assert page.execute_script("return new DjangoWebSocket('/echo', { autoConnect: false }).state;") == "stopped"


def test_messages_json_and_states(page):
    make(page, "c", "/echo", {"json": True})
    page.execute_script("clients.c.onjson = (e) => { window.lastJSON = e.data; };")
    wait_events(page, "c", "open")
    assert prop(page, "c", "state") == "open"
    assert call(page, "c", "sendJSON", {"text": "héllo ✓", "n": [1, 2]}) is True
    call(page, "c", "send", "not json")
    wait_events(page, "c", "jsonerror")
    assert [e["data"] for e in events(page, "c", "json")] == [{"text": "héllo ✓", "n": [1, 2]}]
    assert page.execute_script("return window.lastJSON;") == {"text": "héllo ✓", "n": [1, 2]}
    sent, other = received(page, "c")
    assert (json.loads(sent), other) == ({"text": "héllo ✓", "n": [1, 2]}, "not json")
    assert [e["data"] for e in events(page, "c", "jsonerror")] == ["not json"]
    assert [(e["previous"], e["state"]) for e in events(page, "c", "statechange")] == [
        ("stopped", "connecting"),
        ("connecting", "open"),
    ]
    assert events(page, "c", "open")[0]["reconnected"] is False


def test_an_es_module_can_load_it(browser, project):
    browser.get(project.url + "/client/module-page")
    wait_until(browser, lambda: browser.find_element("id", "reply").text == "echoed to a module", "the echo")


# --- reconnection, the queue -------------------------------------------------------------------------


def test_reconnects_after_a_restart_and_delivers_what_was_sent_meanwhile_once(page, project):
    make(page, "c", "/echo", FAST)
    wait_events(page, "c", "open")
    call(page, "c", "send", "before")
    wait_until(page, lambda: received(page, "c") == ["before"], "the first echo")

    project.stop()  # runserver closes its sockets with 1001
    wait_events(page, "c", "reconnecting")
    close = events(page, "c", "close")[0]
    assert (close["code"], close["reconnect"]) == (1001, True)
    assert call(page, "c", "send", "while down 1") is False
    assert call(page, "c", "send", "while down 2") is False
    assert prop(page, "c", "queued") == 2
    wait_events(page, "c", "connecting", count=3)  # attempts while the server is down fail
    assert len(events(page, "c", "open")) == 1

    project.start()
    opened = wait_events(page, "c", "open", count=2)
    assert opened[1]["reconnected"] is True
    assert prop(page, "c", "queued") == 0
    # A duplicate of a queued message would come back before the echo of this one.
    call(page, "c", "send", "after")
    wait_until(page, lambda: received(page, "c")[-1:] == ["after"], "the echo after the restart")
    assert received(page, "c") == ["before", "while down 1", "while down 2", "after"]
    assert events(page, "c", "drop") == []


@pytest.mark.parametrize(
    "drop, delivered, dropped",
    [("oldest", ["m3", "m4", "m5"], ["m1", "m2"]), ("newest", ["m1", "m2", "m3"], ["m4", "m5"])],
)
def test_the_queue_keeps_at_most_queue_limit_messages(page, project, drop, delivered, dropped):
    project.stop()
    make(page, "c", "/echo", {**FAST, "queueLimit": 3, "queueDrop": drop})
    wait_events(page, "c", "reconnecting")
    for n in range(1, 6):
        assert call(page, "c", "send", f"m{n}") is False
    assert prop(page, "c", "queued") == 3
    assert [(e["data"], e["cause"]) for e in events(page, "c", "drop")] == [(m, "overflow") for m in dropped]

    project.start()
    wait_events(page, "c", "open")
    call(page, "c", "send", "end")
    wait_until(page, lambda: received(page, "c")[-1:] == ["end"], "the echo of the last message")
    assert received(page, "c") == [*delivered, "end"]


def test_queue_limit_zero_keeps_nothing(page, project):
    project.stop()
    make(page, "c", "/echo", {**FAST, "queueLimit": 0})
    wait_events(page, "c", "reconnecting")
    assert call(page, "c", "send", "lost") is False
    assert [(e["data"], e["cause"]) for e in events(page, "c", "drop")] == [("lost", "overflow")]
    assert prop(page, "c", "queued") == 0


def gaps(driver, name):
    """(announced delay, measured wait) of each reconnection: "close" to the next "connecting"."""
    recorded = events(driver, name, "close", "connecting")
    pairs = []
    for before, after in zip(recorded, recorded[1:], strict=False):
        if before["type"] == "close" and after["type"] == "connecting":
            pairs.append((before["delay"], after["t"] - before["t"]))
    return pairs


def test_backoff_grows_by_factor_up_to_max_delay(page):
    # Nothing listens on this port: each attempt fails at once, and only the waits take time.
    url = f"ws://127.0.0.1:{free_port()}/"
    make(page, "c", url, {"initialDelay": 150, "factor": 2, "maxDelay": 1200, "jitter": 0})
    wait_events(page, "c", "connecting", count=7)
    measured = gaps(page, "c")[:6]
    assert [delay for delay, _ in measured] == [150, 300, 600, 1200, 1200, 1200]
    for delay, waited in measured:
        assert delay - 20 <= waited <= delay + 500, measured  # timers are late, never early
    assert [e["attempt"] for e in events(page, "c", "reconnecting")][:6] == [1, 2, 3, 4, 5, 6]


def test_full_jitter_draws_each_wait_below_the_growing_bound(page):
    url = f"ws://127.0.0.1:{free_port()}/"
    make(page, "c", url, {"initialDelay": 100, "factor": 2, "maxDelay": 800})  # jitter: 1, the default
    wait_events(page, "c", "connecting", count=9, timeout=2 * WAIT)
    measured = gaps(page, "c")[:8]
    bounds = [100, 200, 400, 800, 800, 800, 800, 800]
    for (delay, waited), bound in zip(measured, bounds, strict=True):
        assert 0 <= delay <= bound, measured
        assert delay - 20 <= waited <= delay + 500, measured
    # Drawn at random: eight waits all at their bound would mean no jitter at all.
    assert any(delay < bound * 0.95 for (delay, _), bound in zip(measured, bounds, strict=True)), measured


def test_waits_keep_growing_while_connections_close_at_once(page):
    # Each connection opens, then the server closes it at once: not a connection that lasted.
    make(page, "c", "/client/close/3000", {"initialDelay": 100, "maxDelay": 1000, "jitter": 0})
    wait_events(page, "c", "reconnecting", count=4)
    assert len(events(page, "c", "open")) >= 4
    assert [(e["attempt"], e["delay"]) for e in events(page, "c", "reconnecting")][:4] == [
        (1, 100),
        (2, 200),
        (3, 400),
        (4, 800),
    ]


def test_waits_start_small_again_after_a_connection_that_lasted(page):
    # Each connection lasts 1 s, longer than resetAfter: every drop is the first failure again.
    make(page, "c", "/client/close/3000?after=1", {"initialDelay": 100, "jitter": 0, "resetAfter": 500})
    wait_events(page, "c", "reconnecting", count=3)
    assert [(e["attempt"], e["delay"]) for e in events(page, "c", "reconnecting")][:3] == [(1, 100)] * 3


def test_max_retries_stops(page):
    make(page, "c", f"ws://127.0.0.1:{free_port()}/", {**FAST, "maxRetries": 2})
    stopped = wait_events(page, "c", "stopped")
    assert stopped[0]["cause"] == "retries"
    assert len(events(page, "c", "connecting")) == 3  # the first try and two retries


# --- what stops it -----------------------------------------------------------------------------------


def test_policy_and_application_codes_stop_it_other_codes_do_not(page):
    make(page, "policy", "/client/close/1008", FAST)
    make(page, "app-low", "/client/close/4000", FAST)
    make(page, "app-high", "/client/close/4999", FAST)
    make(page, "chosen", "/client/close/3001", {**FAST, "stopOn": [3001]})
    page.execute_script(
        "watch('predicate', new DjangoWebSocket('/client/close/3002', "
        "{ ...arguments[0], stopOn: (code, reason) => code === 3002 && reason === 'closed with 3002' }));",
        FAST,
    )
    # Controls: codes that do not stop, so that the test sees what reconnecting looks like.
    make(page, "other", "/client/close/3000", FAST)
    make(page, "no-app-range", "/client/close/4000", {**FAST, "stopOn": []})
    make(page, "policy-anyway", "/client/close/1008", {**FAST, "stopOn": []})

    stopping = {"policy": 1008, "app-low": 4000, "app-high": 4999, "chosen": 3001, "predicate": 3002}
    for name, code in {**stopping, "policy-anyway": 1008}.items():
        stopped = wait_events(page, name, "stopped")
        assert (stopped[0]["cause"], stopped[0]["code"]) == ("code", code), name
        assert stopped[0]["reason"] == f"closed with {code}"
        assert events(page, name, "close")[0]["reconnect"] is False
    for name in ("other", "no-app-range"):
        wait_events(page, name, "open", count=3)
    time.sleep(1.0)  # ten times the first wait: a reconnection would have shown by now
    for name in (*stopping, "policy-anyway"):
        assert len(events(page, name, "connecting")) == 1, name
        assert prop(page, name, "state") == "stopped"
    assert events(page, "other", "stopped") == events(page, "no-app-range", "stopped") == []


def test_close_by_the_page_stops_it_and_connect_starts_again(page, project):
    make(page, "c", "/echo", FAST)
    page.execute_script("clients.c.onstopped = (e) => { window.stoppedBy = e.cause; };")
    wait_events(page, "c", "open")
    call(page, "c", "close", 1000, "bye")
    wait_events(page, "c", "stopped")
    assert [e["state"] for e in events(page, "c", "statechange")] == ["connecting", "open", "closing", "stopped"]
    assert page.execute_script("return window.stoppedBy;") == "close"
    close = events(page, "c", "close")[0]
    assert (close["code"], close["wasClean"], close["reconnect"]) == (1000, True, False)
    assert call(page, "c", "send", "after the stop") is False
    assert [(e["data"], e["cause"]) for e in events(page, "c", "drop")] == [("after the stop", "stopped")]
    time.sleep(0.5)
    assert len(events(page, "c", "connecting")) == 1

    call(page, "c", "connect")
    wait_events(page, "c", "open", count=2)
    call(page, "c", "send", "again")
    wait_until(page, lambda: received(page, "c")[-1:] == ["again"], "the echo after connect()")

    # Stopped while waiting to reconnect: the wait is cancelled, what was queued is dropped.
    project.stop()
    wait_events(page, "c", "reconnecting", count=2)
    call(page, "c", "send", "queued")
    call(page, "c", "close")
    assert prop(page, "c", "state") == "stopped"
    assert [e["data"] for e in events(page, "c", "drop")][-1:] == ["queued"]
    connects = len(events(page, "c", "connecting"))
    time.sleep(0.8)
    assert len(events(page, "c", "connecting")) == connects


# --- dead connections --------------------------------------------------------------------------------


def test_an_attempt_that_does_not_open_in_time_is_given_up(page):
    # A listener that never answers the handshake: the kernel takes the connection, nobody reads.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        url = f"ws://127.0.0.1:{listener.getsockname()[1]}/"
        make(page, "c", url, {**FAST, "openTimeout": 600})
        wait_events(page, "c", "connecting", count=2)
    first_try, closed = events(page, "c", "connecting")[0], events(page, "c", "close")[0]
    assert (closed["code"], closed["reason"], closed["reconnect"]) == (1006, "not open within 600 ms", True)
    assert 550 <= closed["t"] - first_try["t"] <= 3000
    assert events(page, "c", "open") == []


def test_silence_past_idle_timeout_is_a_dead_connection_unless_heartbeats_are_answered(page):
    dead = {**FAST, "idleTimeout": 800}
    make(page, "silent", "/client/silent", dead)
    make(page, "silent-heartbeat", "/client/silent", {**dead, "heartbeatInterval": 200})
    make(page, "echoed-heartbeat", "/echo", {**dead, "heartbeatInterval": 200, "heartbeatReply": "ping"})
    for name in ("silent", "silent-heartbeat"):
        wait_events(page, name, "open", count=2)
        opened, closed = events(page, name, "open")[0], events(page, name, "close")[0]
        assert (closed["code"], closed["reason"]) == (1006, "no message within 800 ms"), name
        assert 750 <= closed["t"] - opened["t"] <= 3000, name
    # The echoed heartbeats kept this one open all along, and none reached the page as a message.
    assert len(events(page, "echoed-heartbeat", "open")) == 1
    assert events(page, "echoed-heartbeat", "close") == []
    assert received(page, "echoed-heartbeat") == []
    call(page, "echoed-heartbeat", "send", "real")
    wait_until(page, lambda: received(page, "echoed-heartbeat") == ["real"], "a real message still passing")


def test_offline_gives_the_connection_up_and_online_reconnects_at_once(page):
    # DevTools' network emulation: the page's navigator.onLine and its online/offline events.
    make(page, "c", "/echo", {"initialDelay": 60000, "maxDelay": 60000, "jitter": 0})
    wait_events(page, "c", "open")
    page.execute_cdp_cmd("Network.enable", {})
    conditions = {"latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}
    try:
        page.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": True, **conditions})
        wait_events(page, "c", "reconnecting")
        closed = events(page, "c", "close")[0]
        assert (closed["reason"], closed["delay"]) == ("the browser went offline", 60000)
        assert call(page, "c", "send", "typed while offline") is False
    finally:
        page.execute_cdp_cmd("Network.emulateNetworkConditions", {"offline": False, **conditions})
    # Without "online" the next attempt would be a minute away.
    wait_events(page, "c", "open", count=2, timeout=5)
    wait_until(page, lambda: received(page, "c") == ["typed while offline"], "the queued message")


# --- the reference ------------------------------------------------------------------------------------


def test_the_reference_documents_every_option_with_its_default_and_every_event(page):
    reference = (ROOT / "docs" / "reference" / "browser-client.rst").read_text()
    defaults = page.execute_script(
        "return Object.fromEntries(Object.entries(DjangoWebSocket.defaults)"
        ".map(([k, v]) => [k, v === Infinity ? 'Infinity' : JSON.stringify(v)]));"
    )
    for name, default in defaults.items():
        match = re.search(rf"\.\. js:attribute:: options\.{name}\n(.*?)(?=\n\.\. |\Z)", reference, re.S)
        assert match, f"option {name} is not in the reference"
        assert f"Default: ``{default}``" in match.group(1), f"option {name}: the default is {default}"
    for event in page.execute_script("return DjangoWebSocket.EVENTS;"):
        assert f'``"{event}"``' in reference, f"event {event} is not in the reference"
    assert json.loads(defaults["stopOn"]) == [[4000, 4999]]
