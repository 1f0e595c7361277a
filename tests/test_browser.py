"""The example pages in headless Chromium, against the example project started for real.

The project runs as README's command runs it (``manage.py runserver --multithreaded``, on a
free port of 127.0.0.1, migrated into a temporary SQLite database). The browser is Debian's
``chromium`` driven through ``chromium-driver`` by Selenium; nothing is downloaded. Without them
the tests are skipped with the command that installs them, except in CI (``CI=true``), where a
missing browser is a failure.
"""

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytest
from django.test import override_settings

from django_websocket.testing import WebSocketLiveServerTestCase
from tests.servers import ROOT, ServerProcess, free_port

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL = "apt-get install -y chromium chromium-driver"
WAIT = 15  # seconds any one thing may take to show on a page
EXAMPLES = ROOT / "examples"


def _missing_browser():
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        return f"{' and '.join(missing)} not found: install them with `{INSTALL}`"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[test]'"
    return None


def _require_browser():
    problem = _missing_browser()
    if problem:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"browser tests cannot run in CI: {problem}")
        warnings.warn(f"SKIPPED browser tests: {problem}", stacklevel=1)
        pytest.skip(f"browser tests: {problem}")


@contextlib.contextmanager
def chromium():
    """A headless Chromium with a fresh profile, under Selenium."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        f"--user-data-dir={profile}",
        # Traffic to anything but loopback (which Chromium never proxies) goes to a closed local
        # port: the tests talk to 127.0.0.1 only, whatever the browser would like to fetch.
        "--proxy-server=127.0.0.1:9",
        "--window-size=1000,800",
    ):
        options.add_argument(flag)
    # The console's messages, for driver.get_log("browser"): a page must not log errors.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module; each test opens the windows it needs."""
    _require_browser()
    with chromium() as driver:
        yield driver


class ExampleProject:
    """The example project under ``runserver --multithreaded``; :meth:`restart` keeps the port."""

    def __init__(self, tmp):
        self.env = {
            "DJANGO_SETTINGS_MODULE": "exampleproject.settings",
            "EXAMPLE_DATABASE": str(Path(tmp) / "examples.sqlite3"),
        }
        self.manage("migrate", "--noinput", "-v", "0")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None
        self.start()

    def start(self):
        # --noreload: the autoreloader's file polling is of no use here, and stop() ends one process.
        argv = [sys.executable, "manage.py", "runserver", "--multithreaded", "--noreload", f"127.0.0.1:{self.port}"]
        self.process = ServerProcess("examples", argv, self.port, env=self.env, cwd=EXAMPLES)

    def stop(self):
        self.process.stop()

    def manage(self, *args):
        subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=EXAMPLES,
            env=dict(os.environ, PYTHONPATH=str(ROOT), **self.env),
            check=True,
            timeout=120,
        )

    def restart(self):
        self.stop()
        self.start()


@pytest.fixture(scope="module")
def project(browser, tmp_path_factory):
    started = ExampleProject(tmp_path_factory.mktemp("examples"))
    yield started
    started.stop()


# --- helpers -------------------------------------------------------------------------------------


def wait_for(driver, condition, what):
    """Wait until ``condition(driver)`` is truthy; fail saying ``what`` and what the page showed."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT, poll_frequency=0.05).until(condition)
    except TimeoutException:
        state = driver.execute_script("const s = document.getElementById('state'); return s && s.outerHTML;")
        body = driver.find_element("tag name", "body").text
        pytest.fail(f"{what} did not happen within {WAIT}s on {driver.current_url}; state: {state}; page:\n{body}")


def state(driver):
    element = driver.find_element("id", "state")
    return element.get_attribute("class"), element.get_attribute("data-opens")


def wait_open(driver, opens=1):
    """Wait for the page's connection number ``opens`` (examples/.../connection.js counts them)."""
    wait_for(driver, lambda d: state(d) == ("open", str(opens)), f"connection number {opens} opening")


def texts(driver, selector):
    # In one script: the page may replace the elements between a lookup and a read.
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]), (e) => e.textContent);", selector
    )


def updates(driver):
    return int(driver.find_element("id", "results").get_attribute("data-updates") or 0)


def open_window(driver, url):
    driver.switch_to.new_window("tab")
    driver.get(url)
    return driver.current_window_handle


@pytest.fixture
def windows(browser):
    """Closes the windows a test opened, keeping one for the next test."""
    yield browser
    handles = browser.window_handles
    for handle in handles[1:]:
        browser.switch_to.window(handle)
        browser.close()
    browser.switch_to.window(handles[0])


# --- the examples ----------------------------------------------------------------------------------


def test_index_links_the_examples(windows, project):
    windows.get(project.url + "/")
    links = {a.text: a.get_attribute("href") for a in windows.find_elements("css selector", "#examples a")}
    assert links["Echo"] == project.url + "/echo/page"
    assert links["Live search"] == project.url + "/search/"
    if (EXAMPLES / "chat").is_dir():
        assert "Chat" in links


def test_echo_page_echoes(windows, project):
    windows.get(project.url + "/echo/page")
    wait_open(windows)
    box = windows.find_element("id", "message")
    for text in ("hello from Chromium", "héllo ✓"):
        box.send_keys(text + "\n")
    wait_for(windows, lambda d: texts(d, "#log li") == ["hello from Chromium", "héllo ✓"], "the echo")


def test_live_search_updates_when_an_entry_is_added_from_another_page(windows, project):
    windows.get(project.url + "/search/")
    search = windows.current_window_handle
    wait_open(windows)
    windows.find_element("id", "query").send_keys("quokka")
    wait_for(windows, lambda d: "0 matches for “quokka”" in d.find_element("id", "summary").text, "the first answer")

    open_window(windows, project.url + "/search/add")
    windows.find_element("id", "id_title").send_keys("quokka-tools")
    windows.find_element("id", "id_summary").send_keys("Smiling utilities.")
    windows.find_element("css selector", "#add-form button").click()
    wait_for(windows, lambda d: "Added “quokka-tools”" in d.find_element("id", "added").text, "the form's answer")

    windows.switch_to.window(search)
    wait_for(windows, lambda d: texts(d, "#results .title") == ["quokka-tools"], "the pushed result")
    assert "1 match for “quokka”" in windows.find_element("id", "summary").text


def test_chat_two_pages_in_one_room_see_each_other(windows, project):
    if not (EXAMPLES / "chat").is_dir():
        pytest.skip("examples/chat is not there yet")
    project.manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import User\n"
        "for name in ('ada', 'grace'): User.objects.create_user(name, password='chat-pw')",
    )
    with chromium() as other:  # a second browser: another user, another session
        pages = {"ada": windows, "grace": other}
        for name, page in pages.items():
            page.get(project.url + "/chat/login/?next=/chat/lobby/")
            page.find_element("id", "id_username").send_keys(name)
            page.find_element("id", "id_password").send_keys("chat-pw\n")
            wait_for(page, lambda d: d.current_url.endswith("/chat/lobby/"), f"{name}'s login")
            wait_open(page)
            welcome = f"You joined as {name}."
            wait_for(page, lambda d, welcome=welcome: welcome in texts(d, "#log li"), f"{name}'s welcome")

        def members(driver):
            return driver.find_element("id", "members").text

        for name, page in pages.items():
            # Who is in the room: both, in the order they came.
            wait_for(page, lambda d: members(d) == "ada, grace", f"the members in {name}'s page")

        windows.find_element("id", "message").send_keys("hello, Grace\n")
        other.find_element("id", "message").send_keys("hi Ada!\n")
        for name, page in pages.items():
            wait_for(
                page,
                # Each line is "<time> <user>: <text>", the time in the browser's locale.
                lambda d: all(
                    any(line.endswith(said) for line in texts(d, "#log li.message"))
                    for said in ("ada: hello, Grace", "grace: hi Ada!")
                ),
                f"both messages in {name}'s page",
            )
        other.execute_script("socket.close()")  # Grace leaves the room: Ada's page no longer lists her
        wait_for(windows, lambda d: members(d) == "ada", "Grace gone from Ada's page")


def test_a_notification_reaches_the_badge_of_its_user_only(windows, project):
    # Two users, two browsers: Omar notifies Nora through his page's form; her page's detached
    # socket gets it (badge and list), his does not.
    project.manage(
        "shell",
        "-c",
        "from django.contrib.auth.models import User\n"
        "for name in ('nora', 'omar'): User.objects.create_user(name, password='notify-pw')",
    )
    with chromium() as other:
        pages = {"nora": windows, "omar": other}
        for name, page in pages.items():
            page.get(project.url + "/notifications/login/")
            page.find_element("id", "id_username").send_keys(name)
            page.find_element("id", "id_password").send_keys("notify-pw\n")
            wait_for(page, lambda d: d.current_url.endswith("/notifications/"), f"{name}'s login")
            wait_open(page)

        def badge(driver):
            return driver.find_element("id", "badge").text

        to = other.find_element("id", "to")
        to.clear()
        to.send_keys("nora")
        other.find_element("id", "text").send_keys("lunch?\n")
        wait_for(other, lambda d: d.find_element("id", "sent").text == "Sent to nora.", "Omar's confirmation")
        wait_for(windows, lambda d: badge(d) == "1", "Nora's badge")
        assert [line.split(": ", 1)[1] for line in texts(windows, "#notifications li")] == ["lunch? (from omar)"]
        assert windows.title.startswith("(1) ")
        windows.find_element("id", "read").click()
        assert badge(windows) == "0"
        assert badge(other) == "0" and texts(other, "#notifications li") == []


def test_pages_reconnect_after_a_server_restart(windows, project):
    windows.get(project.url + "/echo/page")
    echo = windows.current_window_handle
    wait_open(windows)
    windows.find_element("id", "message").send_keys("before the restart\n")
    wait_for(windows, lambda d: texts(d, "#log li") == ["before the restart"], "the first echo")
    open_window(windows, project.url + "/search/")
    search = windows.current_window_handle
    wait_open(windows)
    windows.find_element("id", "query").send_keys("gevent")
    wait_for(windows, lambda d: "gevent" in texts(d, "#results .title"), "the search results")
    answers = updates(windows)

    project.stop()  # SIGTERM: open sockets get a 1001 close frame
    windows.switch_to.window(echo)
    wait_for(windows, lambda d: state(d)[0] == "reconnecting", "the echo page noticing the stop")
    # Typed while the server is down: kept by the page, sent once the connection is back.
    windows.find_element("id", "message").send_keys("while the server is down\n")
    assert windows.find_element("id", "message").get_attribute("value") == ""
    project.start()

    # Backoff: the pages come back by themselves, and work again.
    wait_open(windows, opens=2)
    assert windows.find_element("id", "state").text == "open (reconnected)"
    windows.find_element("id", "message").send_keys("after the restart\n")
    wait_for(windows, lambda d: texts(d, "#log li")[-1:] == ["after the restart"], "the echo after the restart")
    # Exactly once: a duplicate would have come back before the last echo.
    assert texts(windows, "#log li") == ["before the restart", "while the server is down", "after the restart"]
    windows.switch_to.window(search)
    wait_open(windows, opens=2)
    assert windows.find_element("id", "state").text == "open (reconnected)"
    # The page sends its query again on reconnection, and the new server answers it.
    wait_for(windows, lambda d: updates(d) >= answers + 1, "fresh results after the restart")
    assert "gevent" in texts(windows, "#results .title")


# Every page of the project, and what a page must do at a desktop's width and at a phone's.
PAGES = [
    "/", "/echo/page", "/chat/", "/chat/lobby/", "/chat/login/", "/search/", "/search/add",
    "/notifications/", "/notifications/login/",
]  # fmt: skip
SCREENS = {"desktop": (1280, 900, False), "phone": (390, 844, True)}
UNBREAKABLE = "x" * 300  # a message with no place to break a line


@contextlib.contextmanager
def screen(driver, width, height, mobile):
    """The page's viewport as a screen of that size; ``mobile`` honours <meta name=viewport>."""
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    try:
        yield
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def layout_problems(driver):
    """What is wrong with the page's layout, as a list of sentences (empty: nothing)."""
    return driver.execute_script(
        """
        const problems = [];
        const page = document.documentElement;
        if (page.scrollWidth > window.innerWidth) {
          problems.push(`the page is ${page.scrollWidth}px wide in a ${window.innerWidth}px viewport`);
        }
        // Each box holds its content: a long message wraps, rather than scrolling its box sideways.
        for (const element of document.body.querySelectorAll("*:not(input, textarea, select, script)")) {
          if (element.clientWidth && element.scrollWidth > element.clientWidth + 1) {
            const name = element.id ? `#${element.id}` : element.tagName.toLowerCase();
            problems.push(`${name} is ${element.scrollWidth}px wide inside ${element.clientWidth}px`);
          }
        }
        if (!document.querySelector('a[href="/"]')) {
          problems.push("no link to the index");
        }
        const context = document.createElement("canvas").getContext("2d");
        for (const input of document.querySelectorAll("input[placeholder]")) {
          const style = getComputedStyle(input);
          context.font = style.font;
          const room = input.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
          const needed = context.measureText(input.placeholder).width;
          if (needed > room) {
            problems.push(`the placeholder "${input.placeholder}" needs ${needed}px, its box has ${room}px`);
          }
        }
        return problems;
        """
    )


@pytest.mark.parametrize("screen_name", SCREENS)
def test_pages_fit_the_screen_link_to_the_index_and_log_no_error(windows, project, screen_name):
    width, height, mobile = SCREENS[screen_name]
    windows.get_log("browser")  # what earlier tests logged is theirs
    with screen(windows, width, height, mobile):
        for path in PAGES:
            windows.get(project.url + path)
            # A phone lays the page out at its own width only when the page asks for it.
            assert windows.execute_script("return window.innerWidth;") == width, path
            if windows.find_elements("id", "message"):  # the echo and the chat room: a long message
                wait_open(windows)
                windows.find_element("id", "message").send_keys(UNBREAKABLE + "\n")
                wait_for(windows, lambda d: any(UNBREAKABLE in t for t in texts(d, "#log li")), "the long message")
            elif path == "/search/":
                wait_open(windows)
                windows.find_element("id", "query").send_keys("django")
                wait_for(windows, lambda d: texts(d, "#results .title"), "the search results")
            assert layout_problems(windows) == [], f"{path} on a {screen_name}"
    errors = [entry for entry in windows.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors


# --- WebSocketLiveServerTestCase with a browser ------------------------------------------------------


@pytest.fixture(scope="class")
def class_browser(request, browser):
    request.cls.browser = browser


@pytest.mark.usefixtures("class_browser")
@override_settings(ROOT_URLCONF="tests.testing_urls", STATIC_URL="/static/")
class LiveServerBrowserTests(WebSocketLiveServerTestCase):
    """What a project's own browser tests look like: the live server, in the test process."""

    def test_page_talks_to_its_view(self):
        self.browser.get(self.live_server_url + "/testing/echo-page")
        deadline = time.monotonic() + WAIT
        while self.browser.find_element("id", "reply").text != "hello from the browser":
            self.assertLess(time.monotonic(), deadline, "no echo in the browser")
            time.sleep(0.05)
        self.assertEqual(self.browser.find_element("id", "state").text, "open")
