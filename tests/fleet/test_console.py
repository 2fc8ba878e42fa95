"""The fleet console in a real browser: Debian's headless Chromium driven by Playwright, against
a fleet server process, a real Mosquitto and simulated devices running the real device sync.

The tests run in order on one server (each builds on what the previous one left: releases,
rollouts, an experiment) to stay within a minute and a half. They write a screenshot of each
page to ``docs/`` (shown in the README).
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from edgeserve.agent.sync.simulator import SimulatedDevice, SimulatedFleet
from edgeserve.fleet_server.releases import prepare_release
from playwright.sync_api import Browser, Page, expect, sync_playwright
from support.broker import Mosquitto
from support.fleet import (
    TOKEN,
    FleetServerProcess,
    device_settings,
    register_devices,
    signed_tar,
    wait_for,
)
from support.models import make_linear_bundle

from edgeserve.protocol import Telemetry, encode, topics
from edgeserve.trust import SigningKey

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
DOCS = Path(__file__).resolve().parents[2] / "docs"
N = 6  # simulated devices (hw=rpi5)
FLEET_SIZE = 1000  # registered devices for the page-load measurement
TIMEOUT_MS = 60_000
# the shape of a manifest's `validation` after `edgeserve convert` (an int8 conversion)
CONVERTER_FIGURES: dict[str, object] = {
    "original": {"size_bytes": 40_000, "latency_ms": {"p50_ms": 2.0, "p95_ms": 2.4}},
    "converted": {"size_bytes": 10_000, "latency_ms": {"p50_ms": 1.2, "p95_ms": 1.5}},
    "accuracy_drop_points": 0.4,
}


class Env:
    """What the tests share: the server, its devices, a signed-in browser page."""

    def __init__(self, server: FleetServerProcess, fleet: SimulatedFleet, tmp: Path) -> None:
        self.server = server
        self.fleet = fleet
        self.tmp = tmp
        self.page: Page | None = None
        self.errors: list[str] = []  # the browser's console errors
        self.failed: list[tuple[int, str]] = []  # responses >= 400 the browser got
        self.ui = f"{server.url}/ui"

    def release(
        self, version: int, validation: dict[str, object] | None = None, **kw: object
    ) -> None:
        assert self.server.keys is not None
        if validation is None:
            tar = signed_tar(self.tmp / "releases", self.server.keys, version=version, **kw)
        else:  # a manifest carrying the converter's figures, as `edgeserve convert` writes them
            bundle = make_linear_bundle(
                self.tmp / f"bundle-{version}", name="digits", version=version,
                seed=version, validation=validation,
            )  # fmt: skip
            key = SigningKey.load(self.server.keys / "release.key")
            (self.tmp / "releases").mkdir(exist_ok=True)
            tar = prepare_release(bundle.path, key, self.tmp / "releases")
        with self.server.client() as client:
            client.upload_release(tar)

    def cli(self, *args: str) -> str:
        """``edgeserve fleet ...`` as the operator runs it."""
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                "from edgeserve.cli import main; main()",
                "fleet",
                "--server",
                self.server.url,
                "--token",
                TOKEN,
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def shot(self, name: str, full_page: bool = True) -> None:
        assert self.page is not None
        DOCS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(DOCS / f"console-{name}.png"), full_page=full_page)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, fleet_keys: Path) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("console")
    broker = Mosquitto(tmp / "mosquitto").start()
    server = FleetServerProcess(tmp / "server", broker.url, keys=fleet_keys).start()
    creds = register_devices(server, [f"pi-{i:02d}" for i in range(N)], {"hw": "rpi5"})
    fleet = SimulatedFleet(
        [SimulatedDevice(d, p) for d, p in creds],
        tmp / "devices",
        device_settings(server, broker.url),
        workers=4,
    )
    fleet.start()
    fleet.wait_connected(30)
    try:
        yield Env(server, fleet, tmp)
    finally:
        fleet.stop()
        server.stop()
        broker.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():  # scripts/test installs it; a bare pytest run says what is missing
        pytest.fail(f"{CHROMIUM} is missing: run scripts/test (it installs Debian's chromium)")
    with sync_playwright() as pw:
        # Debian's Chromium, no browser download; as root it needs --no-sandbox
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def page(env: Env, browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(TIMEOUT_MS)
    p = context.new_page()
    # a script error or a Content-Security-Policy violation shows up in the console log;
    # failed requests are kept with their URL
    p.on(
        "console",
        lambda m: (
            env.errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    p.on("pageerror", lambda e: env.errors.append(str(e)))
    p.on(
        "response",
        lambda r: (
            env.failed.append((r.status, r.url.removeprefix(env.ui))) if r.status >= 400 else None
        ),
    )
    env.page = p
    yield p
    context.close()


def test_requests_without_session_or_with_wrong_csrf_are_refused(env: Env) -> None:
    with httpx.Client(base_url=env.ui, timeout=10) as anon:
        r = anon.get("/rollouts")
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")
        assert anon.get("/experiments/1/series.json").status_code == 303
        live = anon.get("/fleet/panel", headers={"HX-Request": "true"})
        assert live.status_code == 401 and live.headers["hx-redirect"] == "/ui/login"
        assert anon.post("/rollouts/1/pause", data={"csrf": "x"}).status_code == 401
        bad = anon.post("/login", data={"token": "wrong"})
        assert bad.status_code == 401 and "edgeserve_console" not in bad.headers.get(
            "set-cookie", ""
        )
        forged = {"Cookie": "edgeserve_console=e30=.x.y"}  # {} with a made-up signature
        assert anon.get("/rollouts", headers=forged).status_code == 303
    with httpx.Client(base_url=env.ui, timeout=10) as client:
        login = client.post("/login", data={"token": TOKEN})
        assert login.status_code == 303
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie
        csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/").text).group(1)
        assert client.get("/rollouts").status_code == 200
        # a signed-in session without the right CSRF token cannot act
        assert client.post("/rollouts/1/pause").status_code == 403
        assert client.post("/rollouts/1/pause", data={"csrf": "wrong"}).status_code == 403
        assert client.post("/experiments/1/promote", data={"csrf": csrf[:-1]}).status_code == 403
        # with it, the request reaches the operator API (no such rollout yet)
        r = client.post("/rollouts/1/pause", data={"csrf": csrf})
        assert r.status_code == 404 and "no rollout 1" in r.text
        # the console cannot be framed, loads nothing from elsewhere, and is never cached
        page = client.get("/")
        assert page.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.headers["cache-control"] == "no-store"
        # a session cookie is for the console only: the JSON API still wants the bearer token
        session = {"Cookie": f"edgeserve_console={client.cookies['edgeserve_console']}"}
        api = httpx.get(f"{env.server.url}/api/v1/rollouts", headers=session)
        assert api.status_code == 401
        # signing out ends the session
        assert client.post("/logout", data={"csrf": csrf}).status_code == 303
        assert client.get("/rollouts").status_code == 303


def test_sign_in_and_the_fleet_page_lists_the_devices(env: Env, page: Page) -> None:
    page.goto(f"{env.ui}/")
    expect(page).to_have_url(re.compile(r"/ui/login"))
    page.fill("#token", "not the token")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_have_text("wrong operator token")
    page.fill("#token", TOKEN)
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{env.ui}/")
    rows = page.locator("#devices tbody tr")
    expect(rows).to_have_count(N)
    expect(page.locator("#devices")).to_contain_text("pi-00")
    expect(page.locator("#devices tbody tr").filter(has_text="online")).to_have_count(N)
    # filters: by tag, then by a state no device is in
    page.fill("#tag", "hw=jetson")
    page.click("text=Filter")
    expect(page.locator("#devices tbody")).to_contain_text("no devices match")
    page.goto(f"{env.ui}/?tag=hw%3Drpi5&state=online")
    expect(rows).to_have_count(N)
    # keyboard: a focused link keeps the focus while the table refreshes under it
    page.locator("#dl-pi-01").focus()
    with page.expect_response(lambda r: "/ui/fleet/panel" in r.url):
        pass
    page.wait_for_timeout(300)  # the swap settles
    assert page.evaluate("document.activeElement.id") == "dl-pi-01"
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{env.ui}/devices/pi-01")


def test_a_rollout_started_from_the_cli_completes_on_the_page(env: Env, page: Page) -> None:
    env.release(1, validation=CONVERTER_FIGURES)
    page.goto(f"{env.ui}/rollouts")
    expect(page.locator("#rollouts")).to_contain_text("no rollouts yet")
    page.evaluate("window.__sameDocument = true")
    out = env.cli(
        "rollout", "start", "--model", "digits", "--version", "1", "--selector", "hw=rpi5",
        "--phases", "34,100", "--soak", "1s",
    )  # fmt: skip
    assert "rollout 1" in out
    row = page.locator("#rollout-1")
    expect(row).to_be_visible()
    expect(row).to_contain_text("completed", timeout=TIMEOUT_MS)
    assert page.evaluate("window.__sameDocument") is True  # updated in place, never reloaded
    page.goto(f"{env.ui}/rollouts/1")
    expect(page.locator("#counts")).to_contain_text(f"active {N}")
    env.shot("rollout")


def test_a_failing_canary_shows_device_reason_code_and_error(env: Env, page: Page) -> None:
    env.release(2, simulate="fail_health")
    page.goto(f"{env.ui}/rollouts")
    with env.server.client() as client:
        rid = client.start_rollout(
            {"model": "digits", "version": 2, "phases": [50, 100], "max_failure_pct": 0}
        )
    page.goto(f"{env.ui}/rollouts/{rid}")
    devices = page.locator("#rollout-devices")
    expect(devices.locator(".reason-code").first).to_have_text("health_check")
    expect(devices).to_contain_text("simulated health check failure")
    expect(page.locator("#status")).to_contain_text("paused")
    failed = devices.locator("tr", has=page.locator(".reason-code")).first
    device = failed.locator("td").first.inner_text()
    assert device.startswith("pi-")
    env.shot("rollout-failed")
    page.click(f"text={device}")
    expect(page.locator("#failures")).to_contain_text("health_check")
    expect(page.locator("#failures")).to_contain_text("simulated health check failure")
    expect(page.locator("#installs")).to_contain_text("v1 → v2")
    env.shot("device")
    env.cli("rollout", "abort", str(rid))


def test_pause_from_the_page_pauses_the_rollout(env: Env, page: Page) -> None:
    env.release(3)
    with env.server.client() as client:
        rid = client.start_rollout(
            {"model": "digits", "version": 3, "phases": [50, 100], "soak": "10m"}
        )
    page.goto(f"{env.ui}/rollouts/{rid}")
    expect(page.locator("#status")).to_contain_text("running")
    page.get_by_role("link", name="Pause").click()
    expect(page.locator("h1")).to_have_text(f"Pause rollout {rid}?")
    page.fill("#reason", "checking the canaries")
    page.get_by_role("button", name="Pause").click()
    expect(page).to_have_url(f"{env.ui}/rollouts/{rid}")
    expect(page.locator("#status")).to_contain_text("paused")
    expect(page.locator("#rollout-audit")).to_contain_text("checking the canaries")
    assert "paused" in env.cli("rollout", "status", str(rid))
    # an action that is not allowed now answers on the page, and changes nothing
    page.goto(f"{env.ui}/rollouts/{rid}/pause")
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("alert")).to_contain_text("it is paused")
    env.cli("rollout", "abort", str(rid))


WINDOWS = 6


def _telemetry(env: Env, since: float) -> None:
    """Each device reports what it served over 6 one-second windows after ``since`` (when the
    experiment started, so they all count): v3 is faster."""
    time.sleep(max(0.0, since + WINDOWS + 0.2 - time.time()))
    now = time.time()
    for device, sync in env.fleet.devices.items():
        version = env.fleet.installers[device].active_version("digits")
        assert version is not None
        base = 6.0 if version == 3 else 9.0
        summaries = tuple(
            {
                "kind": "summary",
                "model": "digits",
                "version": version,
                "window_start": now - (k + 1),
                "window_end": now - k,
                "requests": 200,
                "errors": {},
                "error_count": k % 2,
                "latency_ms": {"p50": base + 0.3 * (k % 3), "p95": base * 2, "p99": base * 3},
            }
            for k in range(WINDOWS)
        )
        sync.mqtt.publish(
            topics("es/", "test", device).telemetry, encode(Telemetry(device, "now", summaries))
        )


def test_the_experiment_page_draws_its_chart_and_verdict(env: Env, page: Page) -> None:
    out = env.cli(
        "experiment", "start", "--model", "digits", "--a", "1", "--b", "3", "--split", "50"
    )
    eid = int(re.search(r"experiment (\d+) started", out).group(1))
    wait_for(lambda: set(env.fleet.active_versions("digits").values()) == {1, 3}, 60, "both arms")
    page.goto(f"{env.ui}/experiments/{eid}")
    expect(page.locator("#verdict")).to_have_text("no difference yet")
    with env.server.client() as client:
        created = next(e for e in client.experiments() if e["id"] == eid)["created"]
    _telemetry(env, created)
    expect(page.locator("#verdict")).to_have_text("b better")  # live: no reload
    chart = page.locator("#chart")
    expect(chart.locator("canvas")).to_have_count(1)
    # (polled from here: the page's CSP forbids the eval a wait_for_function would need)
    wait_for(
        lambda: int(chart.get_attribute("data-points") or 0) >= 2 * WINDOWS, 30, "chart points"
    )
    box = chart.locator("canvas").bounding_box()
    assert box is not None and box["width"] > 200 and box["height"] > 100
    expect(page.locator("#intervals")).to_contain_text("p50 latency: -")
    expect(page.locator("#arms")).to_contain_text("v3")
    env.shot("experiment")
    page.get_by_role("link", name="Promote the winner").click()
    page.get_by_role("button", name="Promote").click()
    expect(page).to_have_url(re.compile(r"/ui/rollouts/\d+$"))
    expect(page.locator("h1")).to_contain_text("digits v3")
    expect(page.locator("#status")).to_contain_text("completed")


def test_fleet_releases_and_audit_pages(env: Env, page: Page) -> None:
    page.goto(f"{env.ui}/?state=ACTIVE")  # the install state the devices report
    expect(page.locator("#devices tbody tr")).to_have_count(N)
    expect(page.locator("#devices")).to_contain_text("digits v3")
    page.goto(f"{env.ui}/")
    expect(page.locator("#devices tbody tr")).to_have_count(N)
    env.shot("fleet")
    page.goto(f"{env.ui}/releases")
    rows = page.locator("#releases tbody tr")
    expect(rows).to_have_count(3)
    assert env.server.keys is not None
    keyid = SigningKey.load(env.server.keys / "release.key").keyid
    expect(rows.first).to_contain_text(keyid[:12])  # the signer
    expect(rows.first).to_contain_text("fp32")
    first = rows.filter(has_text="v1")
    expect(first).to_contain_text("×0.25")  # size
    expect(first).to_contain_text("×0.60")  # p50 latency
    expect(first).to_contain_text("0.40 pts")
    env.shot("releases")
    page.goto(f"{env.ui}/audit")
    page.fill("#action", "rollout.pause")
    page.click("text=Filter")
    entries = page.locator("#audit tbody tr")
    expect(entries).to_have_count(1)
    expect(entries).to_contain_text("checking the canaries")
    page.goto(f"{env.ui}/audit")
    expect(page.locator("#audit")).to_contain_text("experiment.promote")
    env.shot("audit", full_page=False)


def test_pages_load_fast_with_a_thousand_devices(env: Env, page: Page) -> None:
    with httpx.Client(
        base_url=env.server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    ) as client:
        for i in range(FLEET_SIZE - N):
            r = client.post("/api/v1/devices", json={"id": f"dev-{i:04d}", "tags": {"hw": "x"}})
            assert r.status_code == 201, r.text
    pages = ["/", "/rollouts", "/rollouts/1", "/releases", "/experiments", "/experiments/1",
             "/audit", "/devices/pi-00"]  # fmt: skip
    results: dict[str, tuple[float, float]] = {}
    for path in pages:
        load, server = [], []
        for _ in range(5):
            page.goto(f"{env.ui}{path}")
            nav = page.evaluate(
                "(() => { const n = performance.getEntriesByType('navigation')[0];"
                " return [n.loadEventEnd - n.startTime, n.responseStart - n.requestStart]; })()"
            )
            load.append(nav[0])
            server.append(nav[1])
        results[path] = (statistics.median(load), statistics.median(server))
    print(f"\nconsole pages with {FLEET_SIZE} devices, median of 5 loads (ms):")
    print(f"  {'page':<20} {'load':>7} {'server':>7}")
    for path, (ms, srv) in results.items():
        print(f"  {path:<20} {ms:7.1f} {srv:7.1f}")
    page.goto(f"{env.ui}/")
    expect(page.locator("#device-count")).to_have_text(str(FLEET_SIZE))
    expect(page.locator("#devices tbody tr")).to_have_count(100)  # one page of the table
    page.click("#next-page")
    expect(page.locator("#shown")).to_contain_text("showing 101–200")
    # the target is 300 ms; the bound here only catches a page gone badly wrong on a busy CI
    assert max(ms for ms, _ in results.values()) < 5000, results
    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    page.goto(f"{env.ui}/rollouts/1")
    env.shot("phone")


def test_a_live_page_whose_session_ends_goes_to_sign_in(env: Env, page: Page) -> None:
    page.goto(f"{env.ui}/rollouts")
    page.context.clear_cookies()  # the session is gone (expired, or the token changed)
    expect(page).to_have_url(re.compile(r"/ui/login"))  # the next refresh sends it there
    expect(page.locator("#token")).to_be_visible()
    assert env.errors == []  # no script error or CSP violation on any page
    # the only failed requests are the refusals the tests asked for
    assert sorted(set(env.failed)) == [
        (400, "/rollouts/3/pause"),
        (401, "/login"),
        (401, "/rollouts/panel"),
    ]
