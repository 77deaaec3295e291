"""The status page in a real browser: Debian's chromium, headless, through Selenium and
the system chromedriver (nothing is downloaded: both paths are given explicitly).

Set MONITOR_SCREENSHOTS to a directory to keep the screenshots taken on the way."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from daemon import Daemon
from history import Past, probe, write_history
from servers import HttpServer, ServerThread

from monitor.model import Failure

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TOKEN = "browser-test-token"

webdriver = pytest.importorskip("selenium.webdriver")
if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    pytest.skip("needs Debian's chromium and chromium-driver", allow_module_level=True)

from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not fetch anything
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1200,900", "--disable-gpu"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: Any, tmp_path: Path, name: str) -> Path:
    height = driver.execute_script("return document.documentElement.scrollHeight")
    width = driver.execute_script("return window.innerWidth")
    driver.set_window_size(max(width, 375), min(height + 150, 5000))
    path = tmp_path / name
    driver.save_screenshot(str(path))
    keep = os.environ.get("MONITOR_SCREENSHOTS")
    if keep:
        shutil.copy(path, Path(keep) / name)
    return path


def open_page(driver: Any, url: str, css: str) -> None:
    driver.get(url)
    WebDriverWait(driver, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, css))


def loaded(image_id: str) -> Callable[[Any], bool]:
    """A wait condition: the image has loaded and has a size."""
    def check(driver: Any) -> bool:
        return bool(driver.execute_script(
            "const i = document.getElementById(arguments[0]);"
            "return i.complete && i.naturalWidth > 0;", image_id))
    return check


def ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "monitor.yaml"
    path.write_text(f"""\
location: lab
server: {{token: {TOKEN}, public_status: true}}
store: {{path: monitor.db}}
targets:
  - {{name: site, url: '{url}', interval: 1s, timeout: 500ms}}
  - {{name: other, url: '{url}', interval: 1s, timeout: 500ms}}
""")
    return path


async def history(tmp_path: Path) -> float:
    """Five days of a run: three outages of `site`, and a day of latency (a slow hour)."""
    now = time.time()
    latency = [probe(name, now - m * 60, ms=(40 if name == "site" else 15) + (m % 7) * 3
                     + (400 if 300 < m < 360 else 0))
               for m in range(1, 1440, 5) for name in ("site", "other")]
    await write_history(tmp_path / "monitor.db", "lab", ["site", "other"],
                        since=now - 5 * 86400, until=now - 1, latency=latency, outages=[
                            Past("site", now - 3 * 86400, now - 3 * 86400 + 1200),
                            Past("site", now - 20 * 3600, now - 19 * 3600, Failure.TIMEOUT,
                                 "timed out after 10s during processing"),
                            Past("site", now - 6 * 3600, now - 5.5 * 3600, Failure.HTTP,
                                 "HTTP 503, expected 200-399"),
                        ])
    return now


async def test_recorded_outages_are_drawn_where_they_happened_and_the_api_stays_locked(
        tmp_path: Path, threaded_http_server: ServerThread[HttpServer], browser: Any
) -> None:
    await history(tmp_path)
    async with Daemon(config(tmp_path, threaded_http_server.server.url("/ok"))) as daemon:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        import aiohttp
        async with aiohttp.ClientSession(headers=auth) as s, \
                s.get(f"{daemon.base}/api/v1/outages?target=site") as r:
            outages = (await r.json())["outages"]
        # The browser has no token: the API refuses it, the page does not.
        browser.get(f"{daemon.base}/api/v1/targets")
        assert "a bearer token is required" in browser.find_element(By.TAG_NAME, "body").text
        open_page(browser, f"{daemon.base}/", "article[data-target=site] svg.timeline rect")
        marks = browser.execute_script("""
            const svg = document.querySelector('article[data-target=site] svg.timeline');
            const box = svg.getBoundingClientRect();
            const out = {start: +svg.dataset.start, end: +svg.dataset.end, spans: {}};
            for (const r of svg.querySelectorAll('rect[data-outage]')) {
              const b = r.getBoundingClientRect();
              out.spans[r.dataset.outage] = {left: (b.left - box.left) / box.width,
                width: b.width / box.width, title: r.querySelector('title').textContent};
            }
            out.known = 0;
            for (const r of svg.querySelectorAll('rect.span.up'))
              out.known += r.getBoundingClientRect().width / box.width;
            const bars = {};
            for (const r of document.querySelectorAll('article[data-target=site] svg.days rect'))
              bars[r.dataset.day] = {down: +r.dataset.down,
                                     title: r.querySelector('title').textContent};
            out.bars = bars;
            return out;""")
        screenshot(browser, tmp_path, "status-outages.png")
    assert len(outages) == 3
    span = marks["end"] - marks["start"]
    assert span == pytest.approx(86400, abs=1)
    assert marks["known"] == pytest.approx(1.0, abs=0.01)  # the monitor ran all day
    in_day = [o for o in outages if ts(o["ended_at"]) > marks["start"]]
    assert {str(o["id"]) for o in in_day} == set(marks["spans"])  # only the last 24 h
    for o in in_day:
        drawn = marks["spans"][str(o["id"])]
        start, end = ts(o["started_at"]), ts(o["ended_at"])
        assert drawn["left"] == pytest.approx((start - marks["start"]) / span, abs=0.003)
        assert drawn["width"] == pytest.approx((end - start) / span, abs=0.003)
        assert o["started_at"][:16].replace("T", " ") in drawn["title"]
        assert o["cause"] in drawn["title"] and o["message"] in drawn["title"]
    for o in outages:  # each outage is listed in its day's bar
        bar = marks["bars"][o["started_at"][:10]]
        assert bar["down"] == pytest.approx(o["duration_seconds"], abs=1)
        assert o["started_at"][11:16] in bar["title"] and o["cause"] in bar["title"]
    clean = [b for day, b in marks["bars"].items()
             if day not in {o["started_at"][:10] for o in outages}]
    assert len(clean) == 87 and all(b["down"] == 0 for b in clean)


async def test_badges_render_and_the_page_fits_a_phone_in_light_and_dark(
        tmp_path: Path, threaded_http_server: ServerThread[HttpServer], browser: Any
) -> None:
    await history(tmp_path)
    async with Daemon(config(tmp_path, threaded_http_server.server.url("/ok"))) as daemon:
        open_page(browser, f"{daemon.base}/", "article[data-target=site]")
        sizes = {}
        for kind in ("status", "uptime", "response"):
            url = f"/badge/site/{kind}.svg"
            browser.execute_script(
                "const i = new Image(); i.id = arguments[1]; i.src = arguments[0];"
                "document.body.append(i);", url, f"badge-{kind}")
            WebDriverWait(browser, 20).until(loaded(f"badge-{kind}"))
            sizes[kind] = browser.execute_script(
                "const i = document.getElementById(arguments[0]);"
                "return [i.naturalWidth, i.naturalHeight];", f"badge-{kind}")
        open_page(browser, f"{daemon.base}/badge/site/status.svg", "svg")
        badge_text = browser.find_element(By.TAG_NAME, "svg").get_attribute("textContent")
        badge_width = browser.find_element(By.TAG_NAME, "svg").get_attribute("width")

        browser.set_window_size(375, 800)
        overflow = {}
        for path in ("/", "/target/site"):
            open_page(browser, f"{daemon.base}{path}", "article[data-target=site]")
            overflow[path] = browser.execute_script(
                "return [document.documentElement.scrollWidth,"
                " document.documentElement.clientWidth];")
        screenshot(browser, tmp_path, "status-phone-target.png")
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {
            "features": [{"name": "prefers-color-scheme", "value": "dark"}]})
        open_page(browser, f"{daemon.base}/", "article[data-target=site]")
        dark = browser.execute_script(
            "return getComputedStyle(document.body).backgroundColor")
        screenshot(browser, tmp_path, "status-phone-dark.png")
    assert all(h == 20 and w > 40 for w, h in sizes.values()), sizes
    assert "site" in badge_text and "up" in badge_text
    assert sizes["status"][0] == int(badge_width)
    for path, (scroll, client) in overflow.items():
        assert scroll <= client, f"{path} scrolls sideways at 375 px: {scroll} > {client}"
    assert dark == "rgb(18, 18, 18)"
