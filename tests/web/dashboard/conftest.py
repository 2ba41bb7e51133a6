"""The dashboard in a real headless Chromium: Debian's ``chromium`` and
``chromium-driver`` through selenium, one browser for the session.

pxed runs in the test process, on the reactor (tests/conftest.py's
``server``); selenium's calls block, so each test's browser part is a
plain function run in a thread (``in_browser``) while the reactor serves,
and what that part needs from the server's side (a machine, the management
OS's reports) it asks the reactor for (``Dashboard.call``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, reactor, threads

from tests.helpers import missing, require_tool

A11Y = Path(__file__).with_name("a11y.js").read_text()
WAIT = 20.0  # seconds a page has to show what a step expects


@pytest.fixture(scope="session")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing("selenium is not installed: pip install -e '.[test]'")
    chromium = require_tool("chromium", "chromium")
    chromedriver = require_tool("chromedriver", "chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # as root
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
    ):
        options.add_argument(argument)
    # The console, for the CSP test (violations are logged there).
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(chromedriver))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


async def in_browser(steps: Callable[..., Any], *args: Any) -> Any:
    """Runs *steps* (blocking selenium calls) in a thread while the reactor
    serves pxed."""
    return await threads.deferToThread(steps, *args)


class Dashboard:
    """The browser on one server's dashboard, from a thread (in_browser)."""

    def __init__(self, driver, server, out: Path) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver = driver
        self.server = server
        self.url = server.url
        self.out = out
        self.By = By
        self._wait = WebDriverWait
        # Cookies are per host, not per port: the previous test's server's
        # session must not follow.
        driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
        driver.get("about:blank")
        driver.get_log("browser")  # what earlier tests logged

    @property
    def admin_token(self) -> str:
        return (Path(self.server.config.data_dir) / "admin.token").read_text().strip()

    # -- the server's side, from the browser's thread ------------------------

    def call(self, coroutine_function: Callable[..., Any], *args: Any) -> Any:
        """Runs an async helper on the reactor and waits for its result."""
        return threads.blockingCallFromThread(
            reactor, lambda: defer.ensureDeferred(coroutine_function(*args))
        )

    # -- the page ---------------------------------------------------------------

    def open(self, route: str = "") -> None:
        """A fresh load of the dashboard at #/route."""
        self.driver.get("about:blank")
        self.driver.get(f"{self.url}/#/{route}")

    def go(self, route: str) -> None:
        """Following a link within the page (no reload)."""
        self.driver.execute_script("location.hash = arguments[0]", f"#/{route}")

    def until(self, check: Callable[[], Any], timeout: float = WAIT, what: str = "") -> Any:
        from selenium.common.exceptions import StaleElementReferenceException, TimeoutException

        def attempt(_driver):
            try:
                return check()
            except StaleElementReferenceException:
                return False

        try:
            return self._wait(self.driver, timeout, poll_frequency=0.05).until(attempt)
        except TimeoutException:
            raise AssertionError(
                f"waited {timeout} s for {what or check}; status: {self.status()!r}"
            ) from None

    def find(self, css: str):
        return self.driver.find_element(self.By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list:
        return self.driver.find_elements(self.By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        found = self.find_all(css)
        return found[0].text if found else ""

    def wait_text(self, css: str, expected: str, timeout: float = WAIT) -> None:
        self.until(lambda: expected in self.text(css), timeout, f"{expected!r} in {css}")

    def wait_heading(self, expected: str) -> None:
        self.wait_text("main h1", expected)

    def status(self) -> str:
        try:
            return self.driver.execute_script(
                "return (document.querySelector('#status') || {}).textContent || ''"
            )
        except Exception:
            return ""

    def fill(self, css: str, value: str) -> None:
        field = self.find(css)
        field.clear()
        field.send_keys(value)

    def select(self, css: str, visible_text: str) -> None:
        from selenium.webdriver.support.ui import Select

        Select(self.find(css)).select_by_visible_text(visible_text)

    def click(self, css: str) -> None:
        self.find(css).click()

    def button(self, label: str):
        """The visible button whose text is *label* (once there is one)."""

        def find():
            for b in self.find_all("button"):
                if b.is_displayed() and b.text.strip() == label:
                    return b
            return None

        return self.until(find, what=f"a button {label!r}")

    def sign_in(self, token: str | None = None) -> None:
        self.open()
        self.until(lambda: self.find_all("#signin input[name=token]"), what="the sign-in form")
        self.fill("#signin input[name=token]", token or self.admin_token)
        self.click("#signin button[type=submit]")
        self.until(lambda: self.find("#nav").is_displayed(), what="signed in")
        self.wait_heading("Machines")

    def screenshot(self, name: str) -> Path:
        path = self.out / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    # -- accessibility -----------------------------------------------------------

    def check_accessibility(self, name: str) -> None:
        """The page's screenshot, then: every field labelled, text contrast
        at least 4.5:1, and Tab from the top reaching every link, button and
        field with a visible outline on each."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.keys import Keys

        self.screenshot(name)
        problems = self.js(A11Y + "\nreturn pxedA11y.unlabelled().concat(pxedA11y.lowContrast());")
        assert problems == [], f"{name}: {json.dumps(problems, indent=1)}"
        count = self.js(A11Y + "\nreturn pxedA11y.markFocusables();")
        assert count > 0
        reached: set[str] = set()
        for _ in range(count + 3):
            ActionChains(self.driver).send_keys(Keys.TAB).perform()
            focused = self.js(A11Y + "\nreturn pxedA11y.focused();")
            if focused["mark"] is None:
                continue
            assert focused["outlined"], f"{name}: no visible focus on {focused['what']}"
            reached.add(focused["mark"])
        missed = self.js(
            "return [...document.querySelectorAll('[data-a11y]')]"
            ".filter(e => !arguments[0].includes(e.dataset.a11y))"
            ".map(e => e.outerHTML.slice(0, 80))",
            sorted(reached),
        )
        assert missed == [], f"{name}: Tab does not reach {missed}"
        self.js("document.activeElement.blur()")


@pytest.fixture
def dashboard(browser, server, tmp_path) -> Dashboard:
    """The browser, cleared, on a fresh server's dashboard (not signed in);
    screenshots go to the test's tmp_path."""
    return Dashboard(browser, server, tmp_path)
