"""The web console in a real browser: Playwright for Python driving Debian's chromium against the
real ``meshguard serve`` on a free port with a temporary data dir. Each test signs in with the
admin token, as an operator would, and checks what the operator sees and what the agents get.

With ``MESHGUARD_CONSOLE_SCREENSHOTS`` set to a directory (``docs/console``), the tests also save a
screenshot of each page there.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parent.parent.parent
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = os.environ.get("MESHGUARD_CONSOLE_SCREENSHOTS")

POLICY = """
name: console-demo
version: "1"
appliesTo:
  tags: [demo]
rules:
  - name: no-shell
    effect: deny
    actions: ["execute:shell"]
    reason: "no shell for demo agents"
  - name: reads
    effect: allow
    actions: ["read:*"]
humanInTheLoop:
  requireApproval: ["send:email"]
defaultEffect: deny
"""


def binary() -> Path:
    configured = os.environ.get("MESHGUARD_BIN")
    path = Path(configured) if configured else ROOT / "target" / "debug" / "meshguard"
    if not path.is_file():
        pytest.fail(f"the meshguard binary is missing at {path}: run `cargo build -p meshguard`")
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Gateway:
    """One ``meshguard serve`` with its own data dir."""

    def __init__(self, root: Path) -> None:
        self.binary = binary()
        self.data_dir = root / "data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log = open(root / "gateway.log", "ab")
        self.process = subprocess.Popen(
            [str(self.binary), "--data-dir", str(self.data_dir), "serve", "--addr"]
            + [f"127.0.0.1:{self.port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": "warn"},
        )
        log.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "meshguard serve did not become healthy"
                time.sleep(0.1)
        policy = root / "policy.yaml"
        policy.write_text(POLICY)
        self.cli("policy", "apply", str(policy))

    @property
    def admin_token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [str(self.binary), "--url", self.url, "--data-dir", str(self.data_dir), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, f"meshguard {' '.join(args)}: {done.stdout}{done.stderr}"
        return done.stdout

    def operator(self, name: str, role: str, password: str) -> None:
        done = subprocess.run(
            [str(self.binary), "--url", self.url, "--data-dir", str(self.data_dir)]
            + ["operator", "create", name, "--role", role, "--password-stdin"],
            input=password + "\n",
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stdout + done.stderr

    def agent(self, name: str) -> str:
        created = json.loads(
            self.cli("agent", "create", name, "--trust", "verified", "--tags", "demo", "--json")
        )
        return str(created["token"])

    def check(self, token: str, action: str, resource: str = "*") -> Tuple[int, Dict[str, Any]]:
        request = urllib.request.Request(
            f"{self.url}/proxy/governance/check",
            data=json.dumps({"action": action, "resource": resource}).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, dict(json.load(answer))
        except urllib.error.HTTPError as refused:
            return refused.code, dict(json.loads(refused.read() or b"{}"))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    gw = Gateway(tmp_path)
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/tools.sh installs Debian's chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    yield opened
    context.close()


def sign_in(page: Page, gateway: Gateway, operator: str = "", password: str = "") -> None:
    page.goto(f"{gateway.url}/console")
    expect(page).to_have_url(f"{gateway.url}/console/login")
    if operator:
        page.fill("#operator", operator)
        page.fill("#token", password)
    else:
        page.fill("#token", gateway.admin_token)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{gateway.url}/console")
    expect(page.locator("h1")).to_have_text("Overview")


def screenshot(page: Page, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)


def test_sign_in_takes_the_admin_token_and_refuses_anything_else(
    page: Page, gateway: Gateway
) -> None:
    page.goto(f"{gateway.url}/console/login")
    screenshot(page, "login")
    page.fill("#token", "not-the-token")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_have_text("That is not the admin token.")
    sign_in(page, gateway)
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["mg_console"]
    assert session["httpOnly"] and session["sameSite"] == "Strict", session
    answer = page.request.get(f"{gateway.url}/console")
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    assert answer.headers["x-frame-options"] == "DENY"
    # Both attempts are in the audit trail.
    events = gateway.cli("audit", "export")
    assert "console.sign_in_refused" in events and '"console.sign_in"' in events


def test_a_denied_check_appears_in_the_live_audit_without_a_reload(
    page: Page, gateway: Gateway
) -> None:
    token = gateway.agent("tail-agent")
    gateway.check(token, "read:notes")
    sign_in(page, gateway)
    page.goto(f"{gateway.url}/console/audit")
    expect(page.locator("#live-state")).to_contain_text("Live")
    page.wait_for_timeout(300)  # the EventSource connects
    status, body = gateway.check(token, "execute:shell", "rm -rf /")
    assert status == 403 and body["code"] == "denied_by_rule"
    row = page.locator("#events tr", has_text="execute:shell").first
    expect(row).to_be_visible(timeout=10_000)
    expect(row).to_contain_text("deny")
    expect(row).to_contain_text("denied_by_rule")
    expect(row).to_contain_text("tail-agent")
    screenshot(page, "audit")


def test_approving_in_the_console_ends_the_agent_s_long_poll_approved(
    page: Page, gateway: Gateway
) -> None:
    token = gateway.agent("mailer")
    status, body = gateway.check(token, "send:email", "ceo@example.com")
    assert status == 403 and body["code"] == "approval_required", body
    approval = body["approval_id"]
    polled: List[Dict[str, Any]] = []

    def long_poll() -> None:
        request = urllib.request.Request(
            f"{gateway.url}/proxy/governance/approvals/{approval}?wait=30",
            headers={"Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(request, timeout=40) as answer:
            polled.append(dict(json.load(answer)))

    poller = threading.Thread(target=long_poll)
    poller.start()
    sign_in(page, gateway)
    page.goto(f"{gateway.url}/console/approvals")
    card = page.locator(f"#approval-{approval}")
    expect(card).to_contain_text("mailer")
    expect(card).to_contain_text("send:email")
    expect(card).to_contain_text("console-demo")
    screenshot(page, "approvals")
    card.locator("input[name=note]").fill("looks fine")
    card.locator("button.approve").click()
    expect(page.locator(f"#approval-{approval}")).to_have_count(0)
    poller.join(timeout=40)
    assert polled and polled[0]["status"] == "approved", polled
    assert polled[0]["decided_by"] == "admin"
    expect(page.locator("table")).to_contain_text("approved")


def test_a_new_request_appears_in_the_queue_without_a_reload(page: Page, gateway: Gateway) -> None:
    token = gateway.agent("late-mailer")
    sign_in(page, gateway)
    page.goto(f"{gateway.url}/console/approvals")
    expect(page.locator(".empty")).to_be_visible()
    page.wait_for_timeout(300)  # the EventSource connects
    _, body = gateway.check(token, "send:email", "team@example.com")
    assert body["code"] == "approval_required", body
    expect(page.locator(f"#approval-{body['approval_id']}")).to_be_visible(timeout=10_000)


def test_revoking_an_agent_refuses_its_next_check(page: Page, gateway: Gateway) -> None:
    token = gateway.agent("rogue")
    assert gateway.check(token, "read:notes")[0] == 200
    sign_in(page, gateway)
    page.goto(f"{gateway.url}/console/agents")
    screenshot(page, "agents")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#agent-rogue button", has_text="Revoke").click()
    expect(page.locator("#agent-rogue")).to_contain_text("revoked")
    assert gateway.check(token, "read:notes")[0] == 401
    page.locator("#agent-rogue button", has_text="Restore").click()
    expect(page.locator("#agent-rogue")).to_contain_text("active")
    assert gateway.check(token, "read:notes")[0] == 200


def test_a_form_posted_without_its_csrf_token_is_refused(page: Page, gateway: Gateway) -> None:
    token = gateway.agent("csrf-mailer")
    _, body = gateway.check(token, "send:email", "all@example.com")
    approval = body["approval_id"]
    sign_in(page, gateway)
    refused = page.request.post(
        f"{gateway.url}/console/approvals/{approval}/decide",
        form={"verdict": "approve"},
    )
    assert refused.status == 403
    wrong = page.request.post(
        f"{gateway.url}/console/approvals/{approval}/decide",
        form={"verdict": "approve", "csrf": "0" * 64},
    )
    assert wrong.status == 403
    listed = json.loads(gateway.cli("approval", "list", "--status", "pending", "--json"))
    assert approval in [a["id"] for a in listed["approvals"]]


def test_agent_controlled_text_is_shown_as_text_and_runs_nothing(
    page: Page, gateway: Gateway
) -> None:
    token = gateway.agent("sneaky")
    dialogs: List[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    payload = "<script>alert(1)</script>"
    status, _ = gateway.check(token, payload, "<img src=x onerror=alert(2)>")
    assert status == 403
    sign_in(page, gateway)
    page.goto(f"{gateway.url}/console/audit")
    row = page.locator("#events tr", has_text=payload).first
    expect(row).to_be_visible()
    expect(row).to_contain_text("<img src=x onerror=alert(2)>")
    # And live: the same text arriving over SSE is still text.
    page.wait_for_timeout(300)
    gateway.check(token, payload, "live")
    expect(page.locator("#events tr", has_text="live").first).to_be_visible(timeout=10_000)
    page.wait_for_timeout(500)
    assert dialogs == [], dialogs
    assert page.locator("#events img").count() == 0


def test_the_overview_shows_the_hour_and_the_gateway(page: Page, gateway: Gateway) -> None:
    token = gateway.agent("busy")
    for _ in range(3):
        gateway.check(token, "read:notes")
    gateway.check(token, "execute:shell", "ls")
    sign_in(page, gateway)
    page.reload()
    expect(page.locator(".cards")).to_contain_text("4 checks in the last hour")
    expect(page.locator("svg.chart rect.allow")).not_to_have_count(0)
    expect(page.locator("dl.health")).to_contain_text("ok")
    expect(page.locator("dl.health")).to_contain_text("0 from policy files")
    expect(page.locator("dl.health")).to_contain_text("no receiver configured")
    page.goto(f"{gateway.url}/console/agents")
    expect(page.locator("#agent-busy")).to_contain_text("ago")
    page.goto(f"{gateway.url}/console")
    screenshot(page, "overview")
    # Phone width: the approvals page stays usable.
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{gateway.url}/console/approvals")
    expect(page.locator("h1")).to_have_text("Approvals")


def test_sign_out_ends_the_session(page: Page, gateway: Gateway) -> None:
    sign_in(page, gateway)
    page.click("header.top button[type=submit]")
    expect(page).to_have_url(f"{gateway.url}/console/login")
    page.goto(f"{gateway.url}/console/agents")
    expect(page).to_have_url(f"{gateway.url}/console/login")


def test_a_viewer_cannot_approve_and_an_approver_can(page: Page, gateway: Gateway) -> None:
    gateway.operator("vera", "viewer", "viewer-password-1")
    gateway.operator("arno", "approver", "approver-password-1")
    token = gateway.agent("asker")
    _, body = gateway.check(token, "send:email", "board@example.com")
    approval = body["approval_id"]

    sign_in(page, gateway, "vera", "viewer-password-1")
    expect(page.locator("header.top .who")).to_have_text("vera (viewer)")
    page.goto(f"{gateway.url}/console/approvals")
    card = page.locator(f"#approval-{approval}")
    expect(card).to_be_visible()
    expect(card.locator("button")).to_have_count(0)
    csrf = page.locator("header.top input[name=csrf]").get_attribute("value") or ""
    refused = page.request.post(
        f"{gateway.url}/console/approvals/{approval}/decide",
        form={"verdict": "approve", "csrf": csrf},
    )
    assert refused.status == 403
    listed = json.loads(gateway.cli("approval", "list", "--status", "pending", "--json"))
    assert approval in [a["id"] for a in listed["approvals"]]
    # A viewer cannot revoke either: no buttons on the agents page.
    page.goto(f"{gateway.url}/console/agents")
    expect(page.locator("#agent-asker button")).to_have_count(0)
    page.click("header.top button[type=submit]")

    # A wrong password is refused like an unknown operator.
    page.fill("#operator", "arno")
    page.fill("#token", "not-the-password")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_have_text("Unknown operator or wrong password.")
    sign_in(page, gateway, "arno", "approver-password-1")
    page.goto(f"{gateway.url}/console/approvals")
    page.locator(f"#approval-{approval} button.approve").click()
    expect(page.locator(f"#approval-{approval}")).to_have_count(0)
    approved = json.loads(gateway.cli("approval", "list", "--status", "approved", "--json"))
    assert [a["decidedBy"] for a in approved["approvals"]] == ["arno"], approved


def test_an_agent_created_in_the_console_gets_its_token_once_and_rotation_replaces_it(
    page: Page, gateway: Gateway
) -> None:
    sign_in(page, gateway)
    page.goto(f"{gateway.url}/console/agents")
    page.fill("form.create input[name=name]", "console-made")
    page.fill("form.create input[name=tags]", "demo, extra")
    page.click("form.create button[type=submit]")
    expect(page.locator("h1")).to_have_text("Agent created")
    token = page.locator("#token").inner_text().strip()
    screenshot(page, "agent-token")
    assert gateway.check(token, "read:notes")[0] == 200
    # The detail page shows what the policies let it do.
    page.goto(f"{gateway.url}/console/agents")
    page.click("text=console-made")
    expect(page.locator("h1")).to_contain_text("console-made")
    expect(page.locator("main")).to_contain_text("read:*")
    expect(page.locator("main")).to_contain_text("send:email")
    expect(page.locator("main")).to_contain_text("execute:shell")
    screenshot(page, "agent")
    # Rotation: a new token, and the old one no longer works.
    page.goto(f"{gateway.url}/console/agents")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#agent-console-made button", has_text="Rotate token").click()
    expect(page.locator("h1")).to_have_text("Token rotated")
    rotated = page.locator("#token").inner_text().strip()
    assert rotated != token
    assert gateway.check(token, "read:notes")[0] == 401
    assert gateway.check(rotated, "read:notes")[0] == 200


def test_policies_show_their_source_answer_a_test_and_validate_a_draft_before_applying_it(
    page: Page, gateway: Gateway
) -> None:
    gateway.agent("tester")
    sign_in(page, gateway)
    page.goto(f"{gateway.url}/console/policies")
    page.click("text=console-demo")
    expect(page.locator("pre.source")).to_contain_text("no shell for demo agents")
    expect(page.locator("table")).to_contain_text("1")
    screenshot(page, "policy")

    page.goto(f"{gateway.url}/console/policies")
    page.select_option("select[name=agent]", "tester")
    page.fill("input[name=action]", "execute:shell")
    page.fill("input[name=resource]", "ls")
    page.click("text=Decide")
    expect(page.locator(".result")).to_contain_text("denied_by_rule")
    expect(page.locator(".result")).to_contain_text("no-shell")

    page.goto(f"{gateway.url}/console/policies")
    broken = 'name: draft\nversion: "1"\nappliesTo: {tags: [demo]}\nrules:\n  - effect: alow\n'
    page.fill("textarea[name=source]", broken)
    page.click("button:has-text('Validate and apply')")
    expect(page.locator(".errors")).to_contain_text("5:13")
    expect(page.locator(".notice")).to_contain_text("nothing was applied")
    good = broken.replace("alow", "allow") + '    actions: ["write:notes"]\n'
    page.goto(f"{gateway.url}/console/policies")
    page.fill("textarea[name=source]", good)
    page.click("button:has-text('Validate and apply')")
    expect(page.locator(".notice")).to_contain_text("applied")
    listed = json.loads(gateway.cli("policy", "list", "--json"))
    assert "draft" in [p["name"] for p in listed["policies"]]


def test_an_audit_event_shows_its_place_in_the_chain(page: Page, gateway: Gateway) -> None:
    token = gateway.agent("chained")
    gateway.check(token, "read:chapter-one")
    sign_in(page, gateway)
    page.goto(f"{gateway.url}/console/audit")
    page.locator("#events tr", has_text="read:chapter-one").locator("a").first.click()
    expect(page.locator("h1")).to_have_text("Audit event")
    table = page.locator("table.event")
    expect(table).to_contain_text("prev_hash")
    expect(table).to_contain_text("hash")
    expect(table).to_contain_text("read:chapter-one")


def test_the_audit_page_filters_by_code_and_action(page: Page, gateway: Gateway) -> None:
    token = gateway.agent("filtered")
    gateway.check(token, "read:a")
    gateway.check(token, "execute:shell", "ls")
    gateway.check(token, "launch:rocket")
    sign_in(page, gateway)
    page.goto(f"{gateway.url}/console/audit?code=denied_by_rule")
    rows = page.locator("#events tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("execute:shell")
    expect(page.locator("#live-state")).to_contain_text("not live")
    page.goto(f"{gateway.url}/console/audit?action=read:*")
    expect(page.locator("#events tr", has_text="read:a")).to_have_count(1)
    expect(page.locator("#events tr", has_text="launch:rocket")).to_have_count(0)


def test_the_audit_chain_is_verified_from_the_overview(page: Page, gateway: Gateway) -> None:
    token = gateway.agent("verifier")
    gateway.check(token, "read:notes")
    sign_in(page, gateway)
    expect(page.locator("dl.health")).to_contain_text("not verified")
    page.click("text=verify now")
    expect(page.locator(".notice")).to_contain_text("Every chain verifies")
    page.goto(f"{gateway.url}/console")
    expect(page.locator("dl.health")).to_contain_text("intact")
