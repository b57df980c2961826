"""The local console in a real headless browser, after a demo run on the shared cloud.

Drives the distribution's Chromium (``/usr/bin/chromium`` + ``/usr/bin/chromedriver``,
the Debian packages ``chromium`` and ``chromium-driver``) with selenium: the page loads
without console errors, its cost chart shows the demo's agents with non-zero cost (read
from the rendered SVG), and a screenshot is written to ``.stratus/artifacts/console.png``
(``.stratus/`` is git-ignored). The JSON endpoints are checked against the tables.
"""

from __future__ import annotations

import io
import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.local.cloud import LocalCloud
from infra.local.demo import Demo
from infra.paths import REPO_ROOT
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.xdist_group("local-cloud")

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACT = REPO_ROOT / ".stratus" / "artifacts" / "console.png"


@pytest.fixture(scope="module")
def cloud(shared_cloud: LocalCloud) -> LocalCloud:
    return shared_cloud


def get(url: str) -> tuple[int, Any]:
    started = time.monotonic()
    try:
        return _get(url)
    finally:
        print(f"GET {url.split('/', 3)[-1]}: {1000 * (time.monotonic() - started):.0f} ms")


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture(scope="module")
def demo(cloud: LocalCloud) -> Demo:
    """The demo's steps that spend on every execution model: sync, session, a job routed
    from triage to order_status, a producer's job for returns (and its poison message,
    for the DLQ panel), the workflow. Not its canary steps (they change the shared
    cloud's aliases) nor the sync calls of agents the jobs already pay for (CI time).
    The session is kept for the console."""
    assert cloud.facts is not None
    assert cloud.fake_model is not None
    cloud.fake_model.reset()
    walk = Demo(cloud.facts, io.StringIO(), keep_session=True)
    for title, step in [
        ("sync: triage", walk.triage),
        ("session", walk.session),
        ("job over HTTP", walk.http_job),
        ("job over SQS", walk.sqs_job),
        ("workflow", walk.workflow_job),
    ]:
        started = time.monotonic()
        walk.step(title, step)
        print(f"demo step {title}: {time.monotonic() - started:.1f} s")  # CI time budget
    return walk


@pytest.fixture(scope="module")
def console_url(cloud: LocalCloud, demo: Demo) -> str:
    assert cloud.facts is not None and cloud.facts.console_url
    return cloud.facts.console_url


def spent(demo: Demo) -> dict[str, float]:
    """Agents the demo paid for, with what they cost (its summary's rows are ``agent``,
    ``session:<agent>`` and ``job:<agent>``)."""
    paid: dict[str, float] = {}
    for key, row in demo.spend.items():
        agent = key.rpartition(":")[2]
        paid[agent] = paid.get(agent, 0.0) + row["cost_usd"]
    return {agent: cost for agent, cost in paid.items() if cost > 0}


def test_console_url_is_a_fact_and_the_api_answers(
    cloud: LocalCloud, console_url: str, demo: Demo
) -> None:
    assert cloud.console is not None and console_url == cloud.console.url
    status, body = get(f"{console_url}/api/status")
    assert status == 200
    assert body["fake_model"] is True
    assert "OFFLINE FAKE MODEL" in body["offline_warning"]
    assert body["fake_model_calls"] > 0

    status, agents = get(f"{console_url}/api/agents")
    assert status == 200
    costs = {a["agent"]: a["cost_today_usd"] for a in agents["agents"]}
    for agent in spent(demo):
        assert costs[agent] > 0, (agent, costs)

    status, budgets = get(f"{console_url}/api/budgets")
    assert status == 200
    tenant_day = [s for s in budgets["scopes"] if s["scope"] == "tenant_day"]
    assert tenant_day and all(s["limit_usd"] for s in tenant_day)
    assert any(s["burn_pct"] and s["burn_pct"] > 0 for s in tenant_day)
    assert {s["scope"] for s in budgets["scopes"]} >= {"agent_day", "tenant_day"}

    status, jobs = get(f"{console_url}/api/jobs")
    assert status == 200
    workflow = [j for j in jobs["jobs"] if j["agent"] == "researcher"]
    assert workflow and {s["name"] for s in workflow[0]["steps"]} >= {"plan", "review"}
    assert all(j["cost_usd"] >= 0 for j in jobs["jobs"])

    status, sessions = get(f"{console_url}/api/sessions")
    assert status == 200
    assert any(s["agent"] == "support" and s["turns"] >= 2 for s in sessions["sessions"])

    status, dlq = get(f"{console_url}/api/dlq")
    assert status == 200
    assert {q["queue"] for q in dlq["queues"]} >= {"ingest-dlq"}


def test_logs_filter_by_correlation_id(cloud: LocalCloud, console_url: str) -> None:
    lines = cloud.logs.query(limit=5000)
    cids = [line["correlation_id"] for line in lines if line.get("correlation_id")]
    assert cids, "no log line carries a correlation id"
    cid = cids[-1]
    status, body = get(f"{console_url}/api/logs?correlation_id={cid}&limit=1000")
    assert status == 200 and body["count"] > 0
    assert all(cid in line["line"] for line in body["lines"])
    status, body = get(f"{console_url}/api/logs?correlation_id=no%20spaces")
    assert status == 400 and body["error"]["code"] == "invalid_correlation_id"
    status, body = get(f"{console_url}/api/nothing")
    assert status == 404 and body["error"]["code"] == "not_found"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists() or shutil.which("chromium") is None:
        pytest.fail("Chromium is missing: apt-get install chromium chromium-driver (make test)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1440,2200",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_shows_the_demo_agents_with_cost_and_no_console_errors(
    browser: Any, console_url: str, demo: Demo
) -> None:
    from selenium.webdriver.common.by import By

    browser.get(console_url)
    wanted = spent(demo)
    assert wanted, (
        demo.out.getvalue() if isinstance(demo.out, io.StringIO) else "demo spent nothing"
    )

    def bars() -> dict[str, float] | None:
        found = {
            bar.get_attribute("data-agent"): float(bar.get_attribute("data-cost") or 0)
            for bar in browser.find_elements(By.CSS_SELECTOR, "#cost-chart g.bar")
        }
        return found if all(found.get(agent, 0) > 0 for agent in wanted) else None

    shown = wait_for(bars, timeout=30)
    assert all(shown[agent] > 0 for agent in wanted), shown
    # The rendered bars are real shapes with a width, not just data attributes.
    for agent in wanted:
        rects = browser.find_elements(
            By.CSS_SELECTOR, f'#cost-chart g.bar[data-agent="{agent}"] rect'
        )
        assert len(rects) == 2 and float(rects[1].get_attribute("width")) > 0
    assert browser.find_elements(By.CSS_SELECTOR, "#budget-bars g.budget")
    assert browser.find_element(By.ID, "offline-warning").is_displayed()
    assert "OFFLINE FAKE MODEL" in browser.find_element(By.ID, "offline-warning").text
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#jobs-table tbody tr[data-job]"))
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#agent-charts svg polyline"))
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#log-lines .log"))

    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACT))
    print(f"console screenshot: {ARTIFACT}")

    errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert errors == [], errors
