"""Browser test: the admin console (`/admin/ui/`) served by the real `tether`
binary, driven by Selenium 4 in headless Chromium (the Debian `chromium` and
`chromium-driver` packages).

Peer: admin-console. One gateway federating a legacy demo upstream, with an
admin token from the environment. The test checks the page's security headers
and that it carries no inline script, handler or style; signs in with a wrong
token and then the right one (which never shows up in the URL); sees the
upstream healthy, a client session (opened with plain JSON-RPC over HTTP) with
the upstream it uses, evicts it from the page (the gateway then answers 404
for its id), sees the request rate chart move, and adds, edits and deletes an
upstream through the form. A second test manages virtual servers from the
page: a config file's one is read-only, one added through the form serves
its selection at /v/<name>/mcp (a client session there is listed with that
endpoint), an edit switches it to progressive discovery for that very
session, bad shapes JSON is refused in the form, and Delete ends its
endpoint (404). A third runs the console on one node of a three-node cluster
(PostgreSQL, cluster.py) and checks its cluster view.

With `CONSOLE_SCREENSHOTS=<dir>`, it saves console-overview.png,
console-upstreams.png, console-sessions.png (with a session shown) and
console-virtual-servers.png there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from checks import http, plain_session, post_jsonrpc, reporter, session_headers
from cluster import Cluster
from conftest import toml_tables

try:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError as e:  # reported by the `browser` fixture: a failure, not a skip
    webdriver = None
    SELENIUM_IMPORT_ERROR = e

msg = reporter("admin-console")

TOKEN = "console-test-admin-token-5d1c"
WRONG_TOKEN = "not-the-admin-token"
WAIT_S = 15.0
SHOTS = os.environ.get("CONSOLE_SCREENSHOTS")


# --------------------------------------------------------------------------
# Plumbing: the browser, plain HTTP, waiting on the page
# --------------------------------------------------------------------------


@pytest.fixture
def browser():
    """Headless Chromium at 1280x800 through chromedriver; fails (never skips) when either is missing."""
    if webdriver is None:
        pytest.fail(f"the selenium package is not installed in this interpreter ({SELENIUM_IMPORT_ERROR})")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not chromium or not chromedriver:
        pytest.fail(
            "admin console test needs Chromium and its driver on PATH "
            f"(chromium: {chromium or 'missing'}, chromedriver: {chromedriver or 'missing'}); "
            "on Debian: apt-get install chromium chromium-driver"
        )
    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,800"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    except WebDriverException as e:
        pytest.fail(f"could not start headless Chromium ({chromium}) through {chromedriver}: {e.msg}")
    try:
        # The page area itself 1280x800, for the screenshots.
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False}
        )
        yield driver
    finally:
        driver.quit()


def screenshot(driver, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(SHOTS) / name))


def admin(gateway, method: str, path: str, body=None):
    """(status, JSON) of an admin API call with the right token."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    status, _, raw = http(method, f"{gateway.base}/admin/{path}", body, headers)
    return status, json.loads(raw) if raw else None


def rpc(url: str, message: dict, session_id: str):
    """One JSON-RPC message in the session `session_id`: (status, headers, answer or None)."""
    return post_jsonrpc(url, message, session_headers(session_id))


def wait(driver, condition, what: str, timeout: float = WAIT_S):
    """WebDriverWait with a failure message that says what was awaited and what the page showed."""

    def check(d):
        try:
            return condition(d)
        except StaleElementReferenceException:
            return False  # a row was replaced while we looked: look again

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(check)
    except Exception as e:
        banner = driver.execute_script(
            "const b = document.getElementById('console-error'); return b && !b.hidden ? b.textContent : '';"
        )
        logs = [entry.get("message") for entry in driver.get_log("browser")][-10:]
        raise AssertionError(msg(what, f"within {timeout}s", {"error banner": banner, "browser log": logs, "exc": repr(e)})) from e


def visible(element_id: str):
    return lambda d: d.find_element(By.ID, element_id).is_displayed()


def row(driver, tbody_id: str, key: str, value: str):
    """The row of `tbody_id` whose data-<key> is `value` (compared in the page, no selector quoting), or None."""
    return driver.execute_script(
        "return Array.from(document.getElementById(arguments[0]).rows)"
        ".find((r) => r.dataset[arguments[1]] === arguments[2]) || null;",
        tbody_id,
        key,
        value,
    )


def sign_in(driver, page: str) -> None:
    """Opens the console at `page` and signs in with the admin token."""
    driver.get(page)
    wait(driver, visible("login-token"), "the sign-in form")
    driver.find_element(By.ID, "login-token").send_keys(TOKEN)
    driver.find_element(By.ID, "login-submit").click()
    wait(driver, visible("console"), "the console after signing in")


def show_view(driver, view: str) -> None:
    driver.find_element(By.ID, f"tab-{view}").click()
    wait(driver, visible(f"view-{view}"), f"view {view} shown after clicking its tab")


# --------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------


def test_admin_console_in_a_browser(launcher, browser):
    legacy = launcher.upstream("legacy")
    gateway = launcher.gateway({"demo": legacy.url}, env={"TETHER_ADMIN__TOKEN": TOKEN})
    page = f"{gateway.base}/admin/ui/"
    driver = browser

    # -- 1. The page: strict CSP, nothing inline ---------------------------------------
    status, headers, raw = http("GET", page)
    html = raw.decode()
    csp = headers.get("Content-Security-Policy") or ""
    assert status == 200 and "script-src 'self'" in csp, msg(
        "GET /admin/ui/", "200 with a Content-Security-Policy allowing only 'self' scripts", (status, csp)
    )
    assert headers.get("X-Content-Type-Options") == "nosniff", msg("GET /admin/ui/", "X-Content-Type-Options: nosniff", dict(headers))
    inline_scripts = re.findall(r"<script\b(?![^>]*\bsrc=)[^>]*>", html, re.I)
    handlers = re.findall(r"\son\w+\s*=", html, re.I)
    styles = re.findall(r"\sstyle\s*=", html, re.I)
    assert not inline_scripts and not handlers and not styles, msg(
        "index.html", "no inline <script>, on*= handler or style= attribute",
        {"scripts": inline_scripts, "handlers": handlers, "styles": styles},
    )
    for asset in ("app.js", "app.css"):
        status, headers, _ = http("GET", page + asset)
        assert status == 200 and "script-src 'self'" in (headers.get("Content-Security-Policy") or ""), msg(
            f"GET /admin/ui/{asset}", "200 with the console's CSP", (status, dict(headers))
        )

    # -- 2. Sign in: a wrong token is refused, the right one opens the console ----------
    driver.get(page)
    wait(driver, visible("login-token"), "the sign-in form")
    driver.find_element(By.ID, "login-token").send_keys(WRONG_TOKEN)
    driver.find_element(By.ID, "login-submit").click()
    wait(driver, visible("login-error"), "an error after signing in with a wrong token")
    error = driver.find_element(By.ID, "login-error").text
    assert "wrong token" in error.lower(), msg("sign in with a wrong token", "'Wrong token'", error)
    assert not driver.find_element(By.ID, "console").is_displayed(), msg(
        "sign in with a wrong token", "the console still hidden", "it is shown"
    )

    field = driver.find_element(By.ID, "login-token")
    field.clear()
    field.send_keys(TOKEN)
    driver.find_element(By.ID, "login-submit").click()
    wait(driver, visible("console"), "the console after signing in with the right token")
    assert not driver.find_element(By.ID, "login").is_displayed(), msg("sign in", "the sign-in form hidden", "it is shown")
    for url in (driver.current_url, driver.execute_script("return location.href")):
        assert TOKEN not in url and WRONG_TOKEN not in url, msg("sign in", "no token in the page URL", url)

    # -- 3. The upstream, healthy ----------------------------------------------------------
    show_view(driver, "upstreams")
    demo = wait(
        driver,
        lambda d: (r := row(d, "upstreams-body", "name", "demo")) is not None and r.get_attribute("data-healthy") == "true" and r,
        "upstream 'demo' listed as healthy in the upstreams table",
    )
    assert "demo" in demo.text and "healthy" in demo.text and "config" in demo.text, msg(
        "upstreams table", "a row naming demo, config, healthy", demo.text
    )

    # -- 4. A client session that uses the upstream; the request rate moves -------------
    sid = plain_session(gateway.url, msg)
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "demo__echo", "arguments": {"text": "hi"}}}
    status, _, reply = rpc(gateway.url, call, sid)
    assert status == 200 and reply and "result" in reply, msg("tools/call demo__echo via tether /mcp", "a result", (status, reply))

    show_view(driver, "overview")
    pings = iter(range(3, 10_000))

    def rate_moves(d):
        # Keep traffic flowing while the page polls /admin/stats every 2 s.
        rpc(gateway.url, {"jsonrpc": "2.0", "id": next(pings), "method": "ping"}, sid)
        value = d.find_element(By.ID, "chart-requests").get_attribute("data-last")
        return bool(value) and float(value) > 0 and value

    rate = wait(driver, rate_moves, "a non-zero request rate on the request chart (canvas data-last)", timeout=20)
    shown = driver.find_element(By.ID, "stat-req-rate").text
    assert float(rate) > 0 and shown not in ("", "–", "0"), msg("overview", "a non-zero req/s figure", (rate, shown))
    wait(driver, lambda d: d.find_element(By.ID, "stat-sessions").text not in ("", "–", "0"), "client sessions count >= 1")
    if SHOTS:  # a few points on the charts first
        wait(
            driver,
            lambda d: rate_moves(d) and int(d.find_element(By.ID, "chart-requests").get_attribute("data-samples") or 0) >= 5,
            "five samples on the charts (for the screenshot)",
            timeout=30,
        )
    screenshot(driver, "console-overview.png")

    show_view(driver, "sessions")
    session_row = wait(
        driver,
        lambda d: (r := row(d, "sessions-body", "sessionId", sid)) is not None and "demo" in (r.get_attribute("data-upstreams") or "").split() and r,
        f"session {sid} listed with upstream demo in the sessions table",
    )
    assert "demo" in session_row.text and "legacy" in session_row.text, msg(
        "sessions table", "the session's upstream demo (legacy era)", session_row.text
    )
    screenshot(driver, "console-sessions.png")

    # -- 5. Evict it: gone from the table and from the gateway --------------------------
    session_row.find_element(By.CSS_SELECTOR, "button[data-action='evict']").click()
    wait(driver, lambda d: row(d, "sessions-body", "sessionId", sid) is None, f"session {sid} gone from the table after Evict")
    status, _, reply = rpc(gateway.url, {"jsonrpc": "2.0", "id": 99, "method": "ping"}, sid)
    assert status == 404, msg("ping with the evicted session's Mcp-Session-Id", "HTTP 404", (status, reply))
    status, listed = admin(gateway, "GET", "sessions")
    assert status == 200 and sid not in [s["id"] for s in listed["sessions"]], msg(
        "GET /admin/sessions after Evict", "the session gone", listed
    )

    # -- 6. Add an upstream through the form, edit it, delete it --------------------------
    modern = launcher.upstream("modern")
    show_view(driver, "upstreams")
    driver.find_element(By.ID, "up-name").send_keys("extra")
    driver.find_element(By.ID, "up-url").send_keys(modern.url)
    Select(driver.find_element(By.ID, "up-transport")).select_by_value("streamable-http")
    Select(driver.find_element(By.ID, "up-era")).select_by_value("modern")
    driver.find_element(By.ID, "up-description").send_keys("added from the console")
    driver.find_element(By.ID, "up-submit").click()
    extra = wait(
        driver,
        lambda d: (r := row(d, "upstreams-body", "name", "extra")) is not None and r.get_attribute("data-source") == "api" and r,
        "upstream 'extra' listed with source api after submitting the form",
    )
    assert "added from the console" in extra.text, msg("upstreams table", "the new upstream's description", extra.text)
    status, shown_def = admin(gateway, "GET", "upstreams/extra")
    want = {"name": "extra", "url": modern.url, "transport": "streamable-http", "era": "modern", "description": "added from the console"}
    got = {k: (shown_def or {}).get("definition", {}).get(k) for k in want}
    assert status == 200 and got == want, msg("GET /admin/upstreams/extra after the form", want, (status, shown_def))
    wait(
        driver,
        lambda d: (r := row(d, "upstreams-body", "name", "extra")) is not None and r.get_attribute("data-healthy") == "true",
        "upstream 'extra' running and healthy",
    )
    screenshot(driver, "console-upstreams.png")

    row(driver, "upstreams-body", "name", "extra").find_element(By.CSS_SELECTOR, "button[data-action='edit']").click()
    wait(driver, lambda d: d.find_element(By.ID, "up-name").get_attribute("value") == "extra", "the form filled for editing 'extra'")
    description = driver.find_element(By.ID, "up-description")
    description.clear()
    description.send_keys("edited from the console")
    driver.find_element(By.ID, "up-submit").click()
    wait(
        driver,
        lambda d: (r := row(d, "upstreams-body", "name", "extra")) is not None and "edited from the console" in r.text,
        "upstream 'extra' shown with its edited description",
    )
    status, shown_def = admin(gateway, "GET", "upstreams/extra")
    definition = (shown_def or {}).get("definition", {})
    assert definition.get("description") == "edited from the console" and definition.get("era") == "modern", msg(
        "GET /admin/upstreams/extra after Edit", "the new description, the rest kept", shown_def
    )

    row(driver, "upstreams-body", "name", "extra").find_element(By.CSS_SELECTOR, "button[data-action='delete']").click()
    WebDriverWait(driver, WAIT_S).until(EC.alert_is_present())
    driver.switch_to.alert.accept()
    wait(driver, lambda d: row(d, "upstreams-body", "name", "extra") is None, "upstream 'extra' gone from the table after Delete")
    status, listed = admin(gateway, "GET", "upstreams")
    assert [u["definition"]["name"] for u in listed["upstreams"]] == ["demo"], msg(
        "GET /admin/upstreams after Delete", "only demo left", listed
    )
    # The config file's upstream offers no Edit or Delete.
    assert not row(driver, "upstreams-body", "name", "demo").find_elements(By.CSS_SELECTOR, "button"), msg(
        "upstreams table", "no buttons on the config file's upstream", "buttons"
    )

    # -- 7. Not a cluster; sign out -------------------------------------------------------
    show_view(driver, "cluster")
    wait(driver, visible("cluster-single"), "'Single node (not a cluster)' on the cluster view")

    driver.find_element(By.ID, "sign-out").click()
    wait(driver, visible("login-token"), "the sign-in form after Sign out")
    stored = driver.execute_script("return sessionStorage.getItem('tether-admin-token');")
    assert stored is None, msg("sign out", "the token removed from sessionStorage", stored)

    # -- 8. Nothing the page did was blocked by its Content-Security-Policy ------------------
    blocked = [
        e.get("message")
        for e in driver.get_log("browser")
        if "Content Security Policy" in (e.get("message") or "") or "Refused to" in (e.get("message") or "")
    ]
    assert not blocked, msg("the browser console", "no Content-Security-Policy violations", blocked)


def tool_names(url: str, sid: str) -> list[str]:
    """The tool names `tools/list` shows the session `sid` on `url`."""
    status, _, reply = rpc(url, {"jsonrpc": "2.0", "id": 7, "method": "tools/list"}, sid)
    assert status == 200 and reply and "result" in reply, msg(f"tools/list via {url}", "a result", (status, reply))
    return sorted(t["name"] for t in reply["result"]["tools"])


def test_virtual_servers_in_the_console(launcher, browser):
    legacy = launcher.upstream("legacy")
    extra = toml_tables("virtual_servers", {"name": "support", "title": "Support", "tools": ["demo__echo"]})
    gateway = launcher.gateway({"demo": legacy.url}, env={"TETHER_ADMIN__TOKEN": TOKEN}, extra=extra)
    driver = browser
    sign_in(driver, f"{gateway.base}/admin/ui/")
    show_view(driver, "virtual-servers")

    # -- 1. The config file's virtual server: listed, read-only ----------------------------
    support = wait(driver, lambda d: row(d, "vs-body", "name", "support"), "virtual server 'support' listed")
    assert support.get_attribute("data-source") == "config" and "/v/support/mcp" in support.text, msg(
        "virtual servers table", "support, from the config file, at /v/support/mcp", support.text
    )
    assert "demo__echo" in support.text and not support.find_elements(By.CSS_SELECTOR, "button"), msg(
        "virtual servers table", "support's pattern shown, no Edit or Delete", support.get_attribute("outerHTML")
    )

    # -- 2. Bad shapes JSON is refused in the form; nothing is created ----------------------
    driver.find_element(By.ID, "vs-name").send_keys("desk")
    driver.find_element(By.ID, "vs-shape").send_keys("{not json")
    driver.find_element(By.ID, "vs-submit").click()
    wait(driver, visible("vs-error"), "an error under the form for shapes that are not JSON")
    assert "json" in driver.find_element(By.ID, "vs-error").text.lower(), msg(
        "submit with bad shapes", "an error naming JSON", driver.find_element(By.ID, "vs-error").text
    )
    status, _ = admin(gateway, "GET", "virtual-servers/desk")
    assert status == 404, msg("GET /admin/virtual-servers/desk after a refused form", 404, status)

    # -- 3. Add one through the form: it serves its selection at /v/desk/mcp ---------------
    driver.find_element(By.ID, "vs-shape").clear()
    driver.find_element(By.ID, "vs-shape").send_keys('{"demo__counter_get": {"alias": "count"}}')
    driver.find_element(By.ID, "vs-title").send_keys("Front desk")
    driver.find_element(By.ID, "vs-description").send_keys("added from the console")
    driver.find_element(By.ID, "vs-tools").send_keys("demo__counter_*\ndemo__echo")
    driver.find_element(By.ID, "vs-submit").click()
    desk = wait(
        driver,
        lambda d: (r := row(d, "vs-body", "name", "desk")) is not None and r.get_attribute("data-source") == "api" and r,
        "virtual server 'desk' listed with source api after submitting the form",
    )
    assert "added from the console" in desk.text and "1 tool shape" in desk.text, msg(
        "virtual servers table", "desk's description and its one shape", desk.text
    )
    status, shown = admin(gateway, "GET", "virtual-servers/desk")
    want = {
        "title": "Front desk",
        "tools": ["demo__counter_*", "demo__echo"],
        "shape": {"demo__counter_get": {"alias": "count"}},
    }
    got = {k: (shown or {}).get(k) for k in want}
    assert status == 200 and got == want, msg("GET /admin/virtual-servers/desk after the form", want, (status, shown))
    screenshot(driver, "console-virtual-servers.png")
    desk_url = f"{gateway.base}/v/desk/mcp"
    sid = plain_session(desk_url, msg)
    listed = tool_names(desk_url, sid)
    assert listed == ["count", "demo__counter_increment", "demo__echo"], msg(
        "tools/list on /v/desk/mcp", "exactly its selection, counter_get as count", listed
    )

    # -- 4. The session is listed with its endpoint --------------------------------------
    show_view(driver, "sessions")
    session_row = wait(driver, lambda d: row(d, "sessions-body", "sessionId", sid), f"session {sid} listed")
    endpoint = session_row.find_element(By.CSS_SELECTOR, "td[data-col='endpoint']").text
    assert endpoint == "/v/desk", msg("the sessions table", "the session's endpoint /v/desk", endpoint)

    # -- 5. Edit: progressive discovery, for the session already open ---------------------
    show_view(driver, "virtual-servers")
    row(driver, "vs-body", "name", "desk").find_element(By.CSS_SELECTOR, "button[data-action='edit']").click()
    wait(driver, lambda d: d.find_element(By.ID, "vs-name").get_attribute("value") == "desk", "the form filled for editing 'desk'")
    tools = driver.find_element(By.ID, "vs-tools")
    assert tools.get_attribute("value") == "demo__counter_*\ndemo__echo", msg(
        "the edit form", "desk's tool patterns, one per line", tools.get_attribute("value")
    )
    driver.find_element(By.ID, "vs-progressive").click()
    driver.find_element(By.ID, "vs-submit").click()
    wait(
        driver,
        lambda d: (r := row(d, "vs-body", "name", "desk")) is not None and r.get_attribute("data-listing") == "progressive",
        "virtual server 'desk' shown with progressive discovery",
    )
    status, shown = admin(gateway, "GET", "virtual-servers/desk")
    assert shown.get("progressive_discovery") is True and shown.get("shape") == want["shape"], msg(
        "GET /admin/virtual-servers/desk after Edit", "progressive discovery on, the shape kept", shown
    )
    listed = tool_names(desk_url, sid)
    assert listed == ["call_tool", "search_tools"], msg("tools/list on /v/desk/mcp after Edit", "the two meta-tools", listed)

    # -- 6. Delete: its endpoint ends -----------------------------------------------------
    row(driver, "vs-body", "name", "desk").find_element(By.CSS_SELECTOR, "button[data-action='delete']").click()
    WebDriverWait(driver, WAIT_S).until(EC.alert_is_present())
    driver.switch_to.alert.accept()
    wait(driver, lambda d: row(d, "vs-body", "name", "desk") is None, "virtual server 'desk' gone from the table after Delete")
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "plain", "version": "1"}}}
    status, _, _ = post_jsonrpc(desk_url, init)
    assert status == 404, msg("initialize on /v/desk/mcp after Delete", "HTTP 404", status)

    blocked = [
        e.get("message")
        for e in driver.get_log("browser")
        if "Content Security Policy" in (e.get("message") or "") or "Refused to" in (e.get("message") or "")
    ]
    assert not blocked, msg("the browser console", "no Content-Security-Policy violations", blocked)


def test_the_cluster_view_lists_every_node(launcher, browser):
    """Three nodes on PostgreSQL (cluster.py): the console on one of them
    lists all three, alive, and marks the node it is served by."""
    legacy = launcher.upstream("legacy")
    cluster = Cluster(launcher, {"demo": legacy.url}, extra_toml=f'[admin]\ntoken = "{TOKEN}"\n')
    try:
        driver = browser
        sign_in(driver, cluster.node_url(1, "/admin/ui/"))
        status, shown = admin(cluster.nodes[1], "GET", "cluster")
        assert status == 200 and len(shown["nodes"]) == 3, msg("GET /admin/cluster on node 1", "three nodes", shown)
        show_view(driver, "cluster")
        for node in shown["nodes"]:
            wait(driver, lambda d, n=node["id"]: row(d, "cluster-body", "node", n) is not None, f"node {node['id']} listed")
            state = row(driver, "cluster-body", "node", node["id"]).find_element(By.CSS_SELECTOR, "td[data-col='state']").text
            assert state == "alive", msg(f"node {node['id']} in the cluster view", "alive", state)
        mine = row(driver, "cluster-body", "node", shown["node"])
        assert "self" in (mine.get_attribute("class") or ""), msg(
            "the cluster view", f"node {shown['node']} (the one serving the page) marked as this node", mine.get_attribute("outerHTML")
        )
        assert not driver.find_element(By.ID, "cluster-single").is_displayed(), msg(
            "the cluster view of a cluster", "no 'single node' notice", "it is shown"
        )
    finally:
        cluster.close()
