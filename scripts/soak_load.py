#!/usr/bin/env python3
"""Load, upstream and verdict of the soak run (scripts/soak.sh drives it; standard library only).

    soak_load.py upstream PORT                  the reverse proxy's upstream: answers every request
                                                200 and counts what reached it (GET /__soak/stats)
    soak_load.py setup --gateway URL            applies the soak policy and creates the agent;
                                                prints the agent token
    soak_load.py run --gateways A,B ...         mixed load for --seconds, every answer recorded
    soak_load.py verify --results FILE ...      the assertions and the summary table; exit 1 on
                                                any failure

Every loop is bounded by the run's deadline and every request by a timeout. Times are
`time.time()` on both sides (this script and the fault log soak.sh writes), one clock.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

REQUEST_TIMEOUT = 10.0
"""Seconds any single request may take before it counts as a transport error."""

ADMIN_HEADER = "X-Admin-Token"

SOAK_POLICY = """\
name: soak
version: "1"
description: the soak run's policy (scripts/soak.sh)
appliesTo:
  tags: [soak]
rules:
  - name: web
    effect: allow
    actions: ["browse:web", "read:upstream/*"]
  - name: search
    effect: allow
    actions: ["search:web"]
    conditions:
      rateLimit: {requestsPerMinute: 600}
  - name: dangerous
    effect: deny
    actions: ["execute:shell", "delete:*", "write:upstream/admin/*"]
  - name: upstream-writes
    effect: allow
    actions: ["write:upstream/*"]
defaultEffect: deny
humanInTheLoop:
  requireApproval: ["send:email"]
"""

CHECK_MIX = [
    # (action, resource, needs Redis: a rate limit applies to it)
    ("browse:web", "https://example.org/", False),
    ("browse:web", "https://example.org/", False),
    ("search:web", "meshguard soak", True),
    ("search:web", "meshguard soak", True),
    ("execute:shell", "rm -rf /", False),
    ("launch:rocket", "*", False),
]

REVOKE_BOUND = 2.0
"""Seconds after an acknowledged revoke from which no gateway may admit the agent (SPEC 7: 1 s)."""


# ---------------------------------------------------------------------------------------------
# HTTP


@dataclass
class Answer:
    """One request and what came back (status 0: no answer, `error` says why)."""

    kind: str
    gateway: str
    sent: float
    received: float
    status: int = 0
    decision: str | None = None
    code: str | None = None
    audit_id: str | None = None
    trace_id: str | None = None
    needs_redis: bool = False
    error: str | None = None
    approval_id: str | None = None


def request(
    base: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = REQUEST_TIMEOUT,
) -> tuple[int, dict[str, str], bytes, str | None]:
    """One request on a fresh connection: (status, lower-cased headers, body, transport error)."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data, None
    except (OSError, http.client.HTTPException) as err:
        return 0, {}, b"", f"{type(err).__name__}: {err}"
    finally:
        conn.close()


def json_body(data: bytes) -> dict[str, Any]:
    """The body as a JSON object, or {} when it is not one."""
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def admin(
    base: str,
    token: str,
    method: str,
    path: str,
    payload: Any = None,
    content_type: str = "application/json",
) -> tuple[int, dict[str, Any]]:
    """One admin API call: (status, JSON body)."""
    body = None
    if payload is not None:
        body = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
    status, _, data, _ = request(
        base, method, path, body, {ADMIN_HEADER: token, "Content-Type": content_type}
    )
    return status, json_body(data)


def check(
    base: str,
    token: str,
    action: str,
    resource: str,
    kind: str,
    needs_redis: bool,
    approval_id: str | None = None,
) -> Answer:
    """One `POST /proxy/governance/check` with a fresh trace id."""
    trace = f"soak-{uuid.uuid4()}"
    payload: dict[str, Any] = {"action": action, "resource": resource, "context": {}}
    if approval_id:
        payload["approval_id"] = approval_id
    sent = time.time()
    status, _, data, error = request(
        base,
        "POST",
        "/proxy/governance/check",
        json.dumps(payload).encode(),
        {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "X-Trace-ID": trace,
        },
    )
    body = json_body(data)
    return Answer(
        kind,
        base,
        sent,
        time.time(),
        status,
        body.get("decision"),
        body.get("code"),
        body.get("audit_id"),
        body.get("trace_id") or trace,
        needs_redis,
        error,
        body.get("approval_id"),
    )


# ---------------------------------------------------------------------------------------------
# upstream


class UpstreamHandler(BaseHTTPRequestHandler):
    """Answers 200 to everything; counts (method, first path segment) of what reached it and
    keeps the `soak_trace` query parameter of each request (the trace id the load gave it)."""

    counts: ClassVar[dict[str, int]] = {}
    traces: ClassVar[list[str]] = []
    lock = threading.Lock()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(min(length, 1 << 20))
        if self.path == "/__soak/stats":
            with self.lock:
                data = json.dumps({"counts": self.counts, "traces": self.traces}).encode()
        else:
            path, _, query = self.path.partition("?")
            key = f"{self.command} {'/'.join(path.split('/')[:2])}"
            with self.lock:
                self.counts[key] = self.counts.get(key, 0) + 1
                self.traces += parse_qs(query).get("soak_trace", [])
            data = b'{"upstream": "ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the soak reads the counts, not a log line per request."""


def upstream_main(args: argparse.Namespace) -> int:
    """`upstream PORT`: serves until killed."""
    server = ThreadingHTTPServer(("127.0.0.1", args.port), UpstreamHandler)
    server.daemon_threads = True
    server.serve_forever()
    return 0


# ---------------------------------------------------------------------------------------------
# setup


def setup_main(args: argparse.Namespace) -> int:
    """`setup`: the soak policy and agent, through the admin API; prints the agent token."""
    token = os.environ["MESHGUARD_ADMIN_TOKEN"]
    status, body = admin(
        args.gateway, token, "PUT", "/admin/policies/soak", SOAK_POLICY, "application/yaml"
    )
    if status not in (200, 201):
        print(f"applying the soak policy answered {status}: {body}", file=sys.stderr)
        return 1
    status, body = admin(
        args.gateway,
        token,
        "POST",
        "/admin/agents",
        {"name": "soak-agent", "trustTier": "verified", "tags": ["soak"]},
    )
    if status not in (200, 201) or "token" not in body:
        print(f"creating the soak agent answered {status}: {body}", file=sys.stderr)
        return 1
    print(body["token"])
    return 0


# ---------------------------------------------------------------------------------------------
# load


@dataclass
class Stream:
    """One connection of an audit follower: when it was open and which event ids it received."""

    gateway: str
    connected: float
    ended: float = 0.0
    dropped: bool = False
    lagged: int = 0
    ids: list[str] = field(default_factory=list)


@dataclass
class Run:
    """Everything the load saw; written as JSON for `verify`."""

    gateways: list[str]
    agent_token: str
    started: float
    ended: float = 0.0
    answers: list[Answer] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    rss: list[tuple[float, str, int, int]] = field(default_factory=list)
    streams: list[Stream] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()

    def add(self, answer: Answer) -> None:
        """Records one answer."""
        with self.lock:
            self.answers.append(answer)

    def count(self, key: str, n: int = 1) -> None:
        """Adds to a named counter."""
        with self.lock:
            self.counters[key] = self.counters.get(key, 0) + n

    def violation(self, text: str) -> None:
        """Records a broken promise seen during the run."""
        with self.lock:
            self.violations.append(text)

    def to_json(self) -> dict[str, Any]:
        """The run as `verify` reads it."""
        with self.lock:
            return {
                "gateways": self.gateways,
                "agent_token": self.agent_token,
                "started": self.started,
                "ended": self.ended,
                "answers": [asdict(a) for a in self.answers],
                "violations": list(self.violations),
                "counters": dict(self.counters),
                "rss": list(self.rss),
                "streams": [asdict(st) for st in self.streams],
            }


class Load:
    """The load's threads, one method each, all stopping at the deadline."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.gateways: list[str] = args.gateways.split(",")
        self.admin_token = os.environ["MESHGUARD_ADMIN_TOKEN"]
        self.token: str = args.agent_token
        self.deadline = time.time() + args.seconds
        self.stop = threading.Event()
        self.pid_files: list[str] = args.pid_files.split(",")
        self.slow_clients: int = args.slow_clients
        self.run = Run(self.gateways, self.token, time.time())

    def live(self) -> bool:
        """Whether the run goes on."""
        return not self.stop.is_set() and time.time() < self.deadline

    def pause(self, seconds: float) -> None:
        """Sleeps, but never past the deadline or a stop."""
        self.stop.wait(min(seconds, max(0.0, self.deadline - time.time())))

    def gateway(self, n: int) -> str:
        """Round robin over the gateways."""
        return self.gateways[n % len(self.gateways)]

    # -- checks ---------------------------------------------------------------------------------

    def checks(self, worker: int) -> None:
        """Checks of CHECK_MIX, back to back, alternating gateways."""
        n = worker
        while self.live():
            action, resource, needs_redis = CHECK_MIX[n % len(CHECK_MIX)]
            self.run.add(
                check(self.gateway(n), self.token, action, resource, f"check {action}", needs_redis)
            )
            n += 1
            self.pause(0.05)

    # -- approvals ------------------------------------------------------------------------------

    def approval_flows(self) -> None:
        """Asks for `send:email`, waits for the human (the `approver` thread), uses the answer."""
        n = 0
        while self.live():
            n += 1
            gw, other = self.gateway(n), self.gateway(n + 1)
            resource = f"mailto:soak-{n}-{uuid.uuid4().hex[:8]}@example.org"
            first = check(gw, self.token, "send:email", resource, "approval request", False)
            self.run.add(first)
            body_id = first.approval_id if first.code == "approval_required" else None
            if not body_id:
                self.pause(0.5)
                continue
            status, _, data, _ = request(
                other,
                "GET",
                f"/proxy/governance/approvals/{body_id}?wait=8",
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=12,
            )
            state = json_body(data).get("status") if status == 200 else None
            self.run.count(f"approval decided {state or 'unknown'}")
            if state not in ("approved", "denied"):
                continue
            used = check(
                gw,
                self.token,
                "send:email",
                resource,
                f"approval use ({state})",
                False,
                approval_id=body_id,
            )
            self.run.add(used)
            if state == "denied" and used.status == 200:
                self.run.violation(
                    f"approval {body_id} was denied, yet its check answered 200 "
                    f"on {gw} (trace {used.trace_id})"
                )
            if state == "approved" and used.status == 200:
                again = check(
                    other,
                    self.token,
                    "send:email",
                    resource,
                    "approval reuse",
                    False,
                    approval_id=body_id,
                )
                self.run.add(again)
                if again.status == 200:
                    self.run.violation(
                        f"approval {body_id} allowed twice (trace "
                        f"{used.trace_id} on {gw}, {again.trace_id} on {other})"
                    )

    def approver(self) -> None:
        """The human: approves every other pending approval and denies the rest."""
        n = 0
        while self.live():
            n += 1
            gw = self.gateway(n)
            status, body = admin(gw, self.admin_token, "GET", "/admin/approvals?status=pending")
            for item in body.get("approvals", []) if status == 200 else []:
                n += 1
                verb = "approve" if n % 2 else "deny"
                code, _ = admin(
                    gw,
                    self.admin_token,
                    "POST",
                    f"/admin/approvals/{item.get('id')}/{verb}",
                    {"reason": "soak"},
                )
                self.run.count(f"admin {verb} {code}")
            self.pause(0.3)

    # -- admin changes --------------------------------------------------------------------------

    def admin_churn(self) -> None:
        """Creates an agent on one gateway, uses it on the other, revokes it, and checks that no
        gateway admits it more than REVOKE_BOUND seconds after the revoke was acknowledged;
        applies a policy revision every round."""
        n = 0
        while self.live():
            n += 1
            here, there = self.gateway(n), self.gateway(n + 1)
            code, _ = admin(
                here,
                self.admin_token,
                "PUT",
                "/admin/policies/soak-churn",
                SOAK_POLICY.replace("name: soak", "name: soak-churn")
                .replace('version: "1"', f'version: "{n}"')
                .replace("tags: [soak]", "tags: [soak-churn]"),
                "application/yaml",
            )
            self.run.count(f"admin policy apply {code}")
            name = f"soak-churn-{n}-{uuid.uuid4().hex[:6]}"
            code, body = admin(
                here,
                self.admin_token,
                "POST",
                "/admin/agents",
                {"name": name, "trustTier": "verified", "tags": ["soak"]},
            )
            self.run.count(f"admin agent create {code}")
            token = body.get("token")
            if code not in (200, 201) or not token:
                self.pause(1.0)
                continue
            for _ in range(20):
                seen = check(there, token, "browse:web", "*", "churn agent check", False)
                self.run.add(seen)
                if seen.status == 200 or not self.live():
                    break
                self.pause(0.1)
            code, _ = admin(there, self.admin_token, "POST", f"/admin/agents/{name}/revoke")
            self.run.count(f"admin agent revoke {code}")
            if code != 200:
                self.pause(1.0)
                continue
            revoked_at = time.time()
            while self.live() and time.time() < revoked_at + REVOKE_BOUND + 1.0:
                for gw in self.gateways:
                    after = check(gw, token, "browse:web", "*", "revoked agent check", False)
                    self.run.count(f"revoked agent check {after.status}")
                    if after.status == 200 and after.sent > revoked_at + REVOKE_BOUND:
                        self.run.violation(
                            f"agent {name} revoked at {revoked_at:.3f} was allowed on {gw} at "
                            f"{after.sent:.3f} (trace {after.trace_id})"
                        )
                self.pause(0.2)
            self.pause(0.5)

    # -- reverse proxy --------------------------------------------------------------------------

    def proxy(self, worker: int) -> None:
        """Reverse-proxy requests: allowed reads and writes, denied deletes and admin writes."""
        n = worker
        mix = [
            ("GET", "/proxy/upstream/items/{n}", "proxy read"),
            ("POST", "/proxy/upstream/items", "proxy write"),
            ("DELETE", "/proxy/upstream/items/{n}", "proxy delete (denied)"),
            ("POST", "/proxy/upstream/admin/users", "proxy admin write (denied)"),
        ]
        while self.live():
            method, path, kind = mix[n % len(mix)]
            gw = self.gateway(n)
            trace = f"soak-{uuid.uuid4()}"
            sent = time.time()
            status, headers, data, error = request(
                gw,
                method,
                f"{path.format(n=n)}?soak_trace={trace}",
                b'{"soak": true}' if method == "POST" else None,
                {
                    "Authorization": f"Bearer {self.token}",
                    "Content-Type": "application/json",
                    "X-Trace-ID": trace,
                },
            )
            body = json_body(data)
            decision = headers.get("x-meshguard-decision") or body.get("decision")
            self.run.add(
                Answer(
                    kind,
                    gw,
                    sent,
                    time.time(),
                    status,
                    decision,
                    body.get("code"),
                    body.get("audit_id"),
                    headers.get("x-meshguard-trace-id", trace),
                    False,
                    error,
                )
            )
            n += 1
            self.pause(0.05)

    # -- audit follow ---------------------------------------------------------------------------

    def follower(self, gw: str) -> None:
        """`GET /admin/audit/stream`, reconnected whenever it drops, until the deadline; keeps
        the id of every event each connection received."""
        parts = urlsplit(gw)
        while self.live():
            conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=20)
            stream = Stream(gw, time.time())
            try:
                conn.request("GET", "/admin/audit/stream", headers={ADMIN_HEADER: self.admin_token})
                resp = conn.getresponse()
                if resp.status != 200:
                    self.run.count(f"follow {gw} status {resp.status}")
                    self.pause(1.0)
                    continue
                stream.connected = time.time()
                with self.run.lock:
                    self.run.streams.append(stream)
                while self.live():
                    line = resp.readline()
                    if not line:
                        stream.dropped = True
                        break
                    if line.startswith(b"id: "):
                        stream.ids.append(line[4:].strip().decode())
                    elif line.startswith(b"event: lagged"):
                        stream.lagged += 1
            except (OSError, http.client.HTTPException):
                stream.dropped = True
                self.pause(1.0)
            finally:
                stream.ended = time.time()
                conn.close()

    # -- slow clients ---------------------------------------------------------------------------

    def slow(self) -> None:
        """Holds `slow_clients` connections per gateway that send a request head one header line
        every 5 s and never finish it; a closed one is counted and reopened (at most once a
        second per slot)."""
        slots: list[dict[str, Any]] = [
            {"gw": gw, "sock": None, "next": 0.0, "fed": 0.0}
            for gw in self.gateways
            for _ in range(self.slow_clients)
        ]
        while self.live():
            now = time.time()
            for slot in slots:
                sock = slot["sock"]
                if sock is None and now >= slot["next"]:
                    parts = urlsplit(slot["gw"])
                    try:
                        sock = socket.create_connection((parts.hostname, parts.port), timeout=2)
                        sock.sendall(b"POST /proxy/governance/check HTTP/1.1\r\nHost: soak\r\n")
                        sock.setblocking(False)
                        slot.update(sock=sock, fed=now)
                        self.run.count("slow opened")
                    except OSError:
                        slot["next"] = now + 1.0
                        self.run.count("slow refused")
                elif sock is not None and now - slot["fed"] >= 5.0:
                    try:
                        sock.send(b"X-Slow: 1\r\n")
                        slot["fed"] = now
                    except OSError:
                        self._close_slow(slot, now)
            open_socks = [s["sock"] for s in slots if s["sock"] is not None]
            readable = select.select(open_socks, [], [], 0.5)[0] if open_socks else []
            if not open_socks:
                self.pause(0.5)
            for slot in slots:
                if slot["sock"] is not None and slot["sock"] in readable:
                    try:
                        data = slot["sock"].recv(4096)
                    except OSError:
                        data = b""
                    if not data:
                        self._close_slow(slot, time.time())
                    else:
                        self.run.count("slow answered")
        for slot in slots:
            if slot["sock"] is not None:
                slot["sock"].close()

    def _close_slow(self, slot: dict[str, Any], now: float) -> None:
        slot["sock"].close()
        slot.update(sock=None, next=now + 1.0)
        self.run.count("slow closed by gateway")

    # -- memory ---------------------------------------------------------------------------------

    def sample_rss(self) -> None:
        """VmRSS of each gateway's current process (from its pid file) every 2 s."""
        while self.live():
            for gw, pid_file in zip(self.gateways, self.pid_files):
                try:
                    with open(pid_file) as f:
                        pid = int(f.read().strip())
                    with open(f"/proc/{pid}/status") as f:
                        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
                except (OSError, ValueError, StopIteration):
                    continue
                with self.run.lock:
                    self.run.rss.append((time.time(), gw, pid, rss))
            self.pause(2.0)

    def start(self, workers: int) -> Run:
        """Runs every thread until the deadline; returns what they saw."""
        threads = [
            threading.Thread(target=self.checks, args=(i,), daemon=True) for i in range(workers)
        ]
        threads += [threading.Thread(target=self.proxy, args=(i,), daemon=True) for i in range(2)]
        threads += [
            threading.Thread(target=self.follower, args=(gw,), daemon=True) for gw in self.gateways
        ]
        threads += [
            threading.Thread(target=t, daemon=True)
            for t in (
                self.approval_flows,
                self.approver,
                self.admin_churn,
                self.slow,
                self.sample_rss,
            )
        ]
        for t in threads:
            t.start()
        while time.time() < self.deadline:
            time.sleep(min(1.0, max(0.0, self.deadline - time.time())))
        self.stop.set()
        give_up = time.time() + REQUEST_TIMEOUT + 5
        for t in threads:
            t.join(timeout=max(0.0, give_up - time.time()))
        self.run.ended = time.time()
        return self.run


def run_main(args: argparse.Namespace) -> int:
    """`run`: the load, written to --out."""
    load = Load(args)
    result = load.start(args.workers)
    with open(args.out, "w") as f:
        json.dump(result.to_json(), f)
    print(
        f"load: {len(result.answers)} answers in {result.ended - result.started:.0f} s",
        file=sys.stderr,
    )
    return 0


# ---------------------------------------------------------------------------------------------
# verify


@dataclass
class Fault:
    """One injected fault from soak.sh's log: `what` is `postgres`, `redis` or `gateway-X`."""

    what: str
    how: str
    start: float
    end: float


def read_faults(path: str) -> list[Fault]:
    """The faults in soak.sh's log of `<epoch> down|up|kill|restarted <what> [how]` lines: for a
    dependency, from the moment it was stopped to the moment it was started again; for a
    gateway, from its kill to its answering /health again."""
    faults: list[Fault] = []
    opened: dict[str, tuple[float, str]] = {}
    with open(path) as f:
        for line in f:
            stamp, event, what, *how = line.split()
            if event in ("down", "kill"):
                opened[what] = (
                    float(stamp),
                    " ".join(how) or ("kill -9" if event == "kill" else ""),
                )
            elif event in ("up", "restarted") and what in opened:
                start, label = opened.pop(what)
                faults.append(Fault(what, label, start, float(stamp)))
    return faults


@dataclass
class Trail:
    """What `GET /admin/audit/export` returned: every event id (with its time, epoch seconds, and
    a short description) and every trace id."""

    events: dict[str, tuple[float, str]] = field(default_factory=dict)
    traces: dict[str, str] = field(default_factory=dict)


def epoch(ts: str) -> float:
    """An RFC 3339 UTC time as epoch seconds (fractions beyond microseconds dropped)."""
    head, _, frac = ts.rstrip("Z").partition(".")
    stamp = datetime.fromisoformat(head).replace(tzinfo=timezone.utc).timestamp()
    return stamp + (float(f"0.{frac[:6]}") if frac else 0.0)


def export_trail(gateway: str, token: str) -> Trail:
    """The whole trail, read through one gateway."""
    parts = urlsplit(gateway)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=120)
    trail = Trail()
    try:
        conn.request("GET", "/admin/audit/export", headers={ADMIN_HEADER: token})
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"export answered {resp.status}")
        for line in resp:
            if not line.strip():
                continue
            event = json.loads(line)
            what = f"{event.get('kind')} {event.get('action')} by {event.get('gateway')}"
            trail.events[event["id"]] = (epoch(event["ts"]), what)
            if event.get("trace_id"):
                trail.traces[event["trace_id"]] = (
                    f"{event['id']} (seq {event.get('seq')} of {event.get('gateway')}: "
                    f"{event.get('decision')} {event.get('code')})"
                )
    finally:
        conn.close()
    return trail


def wait_healthy(gateway: str, token: str, seconds: float) -> str | None:
    """None once the gateway answers /health 200 and allows a check; else what it last said."""
    give_up = time.time() + seconds
    last = "no answer"
    while time.time() < give_up:
        status, _, data, error = request(gateway, "GET", "/health", timeout=5)
        if status == 200:
            answer = check(gateway, token, "browse:web", "*", "recovery", False)
            if answer.status == 200:
                return None
            last = f"check answered {answer.status} {answer.code}"
        else:
            last = f"/health answered {status or error}: {data[:200]!r}"
        time.sleep(1.0)
    return last


def rss_report(
    samples: list[list[Any]], warmup: float, growth_mib: float, growth_pct: float
) -> tuple[list[list[str]], list[str]]:
    """Per gateway process: first, max and last RSS; a failure when the last sample exceeds the
    first sample after warm-up by more than max(growth_mib, growth_pct %)."""
    rows: list[list[str]] = []
    failures: list[str] = []
    series: dict[tuple[str, int], list[tuple[float, int]]] = {}
    for t, gw, pid, kb in samples:
        series.setdefault((gw, pid), []).append((t, kb))
    for (gw, pid), points in series.items():
        first_t = points[0][0]
        warm = [p for p in points if p[0] >= first_t + warmup]
        mib = [kb / 1024 for _, kb in points]
        verdict = "too short to judge"
        if len(warm) >= 5:
            base, last = warm[0][1] / 1024, warm[-1][1] / 1024
            bound = base + max(growth_mib, base * growth_pct / 100)
            verdict = f"after warm-up {base:.1f} → {last:.1f} MiB (bound {bound:.1f})"
            if last > bound:
                failures.append(
                    f"gateway {gw} (pid {pid}) grew from {base:.1f} MiB after "
                    f"warm-up to {last:.1f} MiB (bound {bound:.1f} MiB)"
                )
        rows.append(
            [
                f"{gw} pid {pid}",
                f"{len(points)}",
                f"{mib[0]:.1f}",
                f"{max(mib):.1f}",
                f"{mib[-1]:.1f}",
                verdict,
            ]
        )
    return rows, failures


def tally(answers: list[dict[str, Any]]) -> str:
    """`status code: count, …` of some answers, or `-`."""
    counts: dict[str, int] = {}
    for a in answers:
        detail = a["code"] or (a["decision"] if a["status"] else None)
        key = f"{a['status'] or 'no answer'}{' ' + detail if detail else ''}"
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "-"


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule] + [line(r) for r in rows])


def verify_main(args: argparse.Namespace) -> int:
    """`verify`: every assertion of the soak, then the summary; 1 when any failed."""
    token = os.environ["MESHGUARD_ADMIN_TOKEN"]
    with open(args.results) as f:
        run = json.load(f)
    answers: list[dict[str, Any]] = run["answers"]
    faults = read_faults(args.faults)
    failures: list[str] = list(run["violations"])
    out: list[str] = []

    # 1. Both gateways recovered from every fault.
    for gw in run["gateways"]:
        problem = wait_healthy(gw, run["agent_token"], 60)
        if problem:
            failures.append(f"gateway {gw} did not recover within 60 s: {problem}")

    # 2. Requests by kind and status, with the latency of the answered ones.
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for a in answers:
        by_kind.setdefault(a["kind"], []).append(a)
    rows = []
    for kind, group in sorted(by_kind.items()):
        ms = [1000 * (a["received"] - a["sent"]) for a in group if a["status"]] or [0.0]
        rows.append(
            [
                kind,
                str(len(group)),
                tally(group),
                f"{percentile(ms, 50):.1f}",
                f"{percentile(ms, 99):.1f}",
                f"{max(ms):.0f}",
            ]
        )
    out.append(f"Requests ({len(answers)} in {run['ended'] - run['started']:.0f} s):\n")
    out.append(table(["kind", "total", "answers", "p50 ms", "p99 ms", "max ms"], rows))
    other = sorted(run["counters"].items())
    out.append("\nOther counts: " + ", ".join(f"{k}: {v}" for k, v in other))

    # 3. Faults injected.
    out.append("\nFaults:\n")
    out.append(
        table(
            ["fault", "at (s into the run)", "lasted"],
            [
                [
                    f"{f.what} {'stopped' if f.what in ('postgres', 'redis') else 'killed'}"
                    + (f" ({f.how})" if f.how else ""),
                    f"{f.start - run['started']:.1f}",
                    f"{f.end - f.start:.1f} s",
                ]
                for f in faults
            ],
        )
    )

    # 4. No allow while a dependency the decision needed was down; what was answered instead.
    # Only requests sent after the dependency was stopped and answered before it was started
    # again count: a request in flight at either edge may rightly have been decided with it up.
    rows = []
    for f in faults:
        if f.what not in ("postgres", "redis"):
            continue
        inside = [a for a in answers if a["sent"] >= f.start and a["received"] <= f.end]
        needing = [a for a in inside if f.what == "postgres" or a["needs_redis"]]
        for a in needing:
            if a["status"] == 200 and a["decision"] == "allow":
                failures.append(
                    f"{a['kind']} answered allow on {a['gateway']} while {f.what} was "
                    f"down (sent {a['sent'] - f.start:.2f} s into the outage, trace "
                    f"{a['trace_id']})"
                )
        others = [a for a in inside if a not in needing]
        rows.append(
            [
                f"{f.what} at {f.start - run['started']:.0f} s",
                "every request" if f.what == "postgres" else "rate-limited checks",
                tally(needing),
                tally(others),
            ]
        )
    out.append(
        "\nAnswered while a dependency was down (sent after it stopped, answered before "
        "it started):\n"
    )
    out.append(table(["outage", "needing it", "their answers", "other requests"], rows))

    # 5. Every acknowledged decision is in the trail.
    trail = export_trail(run["gateways"][0], token)
    acked = [
        a
        for a in answers
        if a["status"] in (200, 403, 429) and (a["audit_id"] or a["kind"].startswith("proxy"))
    ]
    missing = [
        a
        for a in acked
        if (
            a["audit_id"] not in trail.events
            if a["audit_id"]
            else a["trace_id"] not in trail.traces
        )
    ]
    out.append(
        f"\nAudit trail: {len(trail.events)} events exported; {len(acked)} acknowledged decisions "
        f"(200/403/429 with an audit id, or a proxied answer by trace id), "
        f"{len(acked) - len(missing)} found, {len(missing)} missing"
    )
    for a in missing[:10]:
        failures.append(
            f"acknowledged {a['kind']} ({a['status']} {a['code']}) on {a['gateway']} "
            f"is not in the trail: audit id {a['audit_id']}, trace {a['trace_id']}"
        )
    if len(missing) > 10:
        failures.append(f"... and {len(missing) - 10} more acknowledged decisions missing")

    # 5a. SPEC 6: a 503 `unavailable` goes out without an event. An event for the trace of a
    # 503 means the trail and the answer disagree (and, when the event is an allow, the trail
    # records an allow that the agent never received).
    unavailable = [a for a in answers if a["status"] == 503]
    recorded = [a for a in unavailable if a["trace_id"] in trail.traces]
    out.append(
        f"503 answers: {len(unavailable)}, of which {len(recorded)} have an event in the trail"
    )
    for a in recorded[:10]:
        failures.append(
            f"{a['kind']} was answered 503 unavailable on {a['gateway']} "
            f"{a['received'] - run['started']:.2f} s into the run, yet the trail holds event "
            f"{trail.traces[a['trace_id']]} for its trace {a['trace_id']}"
        )

    # 5b. Each audit follower connection received every event committed while it was open,
    # or was told it lagged (SPEC: `event: lagged`); the edges get a margin for the peers' delay.
    rows = []
    for st in run["streams"]:
        seen = set(st["ids"])
        expected = [
            (t, i, what)
            for i, (t, what) in trail.events.items()
            if st["connected"] + 1.0 <= t <= st["ended"] - 2.0
        ]
        unseen = sorted(e for e in expected if e[1] not in seen)
        rows.append(
            [
                st["gateway"],
                f"{st['connected'] - run['started']:.0f}-{st['ended'] - run['started']:.0f} s"
                + (" (dropped)" if st["dropped"] else ""),
                str(len(seen)),
                str(len(expected)),
                str(len(unseen)),
                str(st["lagged"]),
            ]
        )
        if unseen and not st["lagged"]:
            t, i, what = unseen[0]
            failures.append(
                f"the audit stream of {st['gateway']} silently missed {len(unseen)} of the "
                f"{len(expected)} events committed while it was connected (no `lagged`), "
                f"the first {i} ({what}) at {t - run['started']:.2f} s into the run"
            )
    out.append("\nAudit followers (`GET /admin/audit/stream`), one row per connection:\n")
    out.append(
        table(["gateway", "connected", "received", "committed meanwhile", "missed", "lagged"], rows)
    )

    # 6. Every chain verifies, through each gateway.
    for gw in run["gateways"]:
        proc = subprocess.run(
            [args.meshguard, "--url", gw, "--json", "audit", "verify"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        report = json_body(proc.stdout.encode())
        chains = report.get("chains", [])
        out.append(
            f"audit verify through {gw}: exit {proc.returncode}, "
            f"{report.get('eventsChecked')} events, "
            + ", ".join(
                f"{c.get('gateway')} seq {c.get('anchorSeq')}..{c.get('headSeq')}"
                f" {'ok' if not c.get('broken') else 'BROKEN ' + json.dumps(c['broken'])}"
                for c in chains
            )
        )
        if proc.returncode != 0 or not report.get("ok"):
            failures.append(
                f"audit verify through {gw} failed (exit {proc.returncode}): "
                f"{proc.stdout.strip()[:500]} {proc.stderr.strip()[:500]}"
            )

    # 7. Denied proxy requests never reached the upstream, and every request that did is in
    # the trail (the query string carries the trace id the load gave it).
    _, _, data, _ = request(args.upstream, "GET", "/__soak/stats")
    upstream = json_body(data)
    counts: dict[str, int] = upstream.get("counts", {})
    reached: list[str] = upstream.get("traces", [])
    unaudited = [t for t in reached if t not in trail.traces]
    out.append(
        f"\nupstream received: {json.dumps(counts, sort_keys=True)}; "
        f"{len(reached) - len(unaudited)} of {len(reached)} in the trail by trace id"
    )
    for key, n in counts.items():
        if key.startswith("DELETE ") or key.startswith("POST /admin"):
            failures.append(f"the upstream received {n} x `{key}`, which the policy denies")
    if unaudited:
        failures.append(
            f"the upstream received {len(unaudited)} proxied requests that have no audit event "
            f"(first trace {unaudited[0]})"
        )

    # 8. Memory.
    rows, rss_failures = rss_report(
        run["rss"], args.rss_warmup, args.rss_growth_mib, args.rss_growth_pct
    )
    out.append(f"\nRSS (MiB, sampled every 2 s; warm-up {args.rss_warmup:.0f} s):\n")
    out.append(table(["gateway process", "samples", "first", "max", "last", "growth"], rows))
    failures += rss_failures

    print("\n".join(out))
    if failures:
        print(f"\nSOAK FAILED ({len(failures)}):", file=sys.stderr)
        for text in failures:
            print(f"  - {text}", file=sys.stderr)
        return 1
    print(
        "\nsoak passed: every acknowledged decision is in the trail, every chain verifies, "
        "no allow while a dependency it needed was down, memory flat"
    )
    return 0


def main() -> int:
    """Dispatches the subcommand."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("upstream")
    p.add_argument("port", type=int)
    p.set_defaults(main=upstream_main)
    p = sub.add_parser("setup")
    p.add_argument("--gateway", required=True)
    p.set_defaults(main=setup_main)
    p = sub.add_parser("run")
    p.add_argument("--gateways", required=True, help="comma-separated gateway URLs")
    p.add_argument("--pid-files", required=True, help="comma-separated, one per gateway")
    p.add_argument("--agent-token", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--workers", type=int, default=8, help="check threads")
    p.add_argument("--slow-clients", type=int, default=64, help="per gateway")
    p.add_argument("--out", required=True)
    p.set_defaults(main=run_main)
    p = sub.add_parser("verify")
    p.add_argument("--results", required=True)
    p.add_argument("--faults", required=True)
    p.add_argument("--upstream", required=True)
    p.add_argument("--meshguard", required=True)
    p.add_argument("--rss-warmup", type=float, default=30.0)
    p.add_argument("--rss-growth-mib", type=float, default=32.0)
    p.add_argument("--rss-growth-pct", type=float, default=50.0)
    p.set_defaults(main=verify_main)
    args = parser.parse_args()
    return int(args.main(args))


if __name__ == "__main__":
    sys.exit(main())
