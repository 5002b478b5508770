/**
 * Answers the real gateway gives rarely (store down, a misrouted URL, a dead or silent socket):
 * none of them may ever read as an allow. The same cases as the Python SDK's
 * test_fail_closed.py; a local server stands for each rare answer.
 */

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  ApprovalRequiredError,
  AuthenticationError,
  GatewayUnavailableError,
  MeshGuardClient,
  MeshGuardError,
  PolicyDeniedError,
  RateLimitError,
} from "@meshguard/sdk";

import { CannedAnswer, RawServer, deadUrl } from "./support/canned.js";

const UNAVAILABLE = {
  allowed: false,
  decision: "deny",
  code: "unavailable",
  reason: "the store cannot be reached",
};
const T = { timeout: 15_000 };

function clientFor(url: string, timeoutMs = 5_000): MeshGuardClient {
  return new MeshGuardClient({ gatewayUrl: url, agentToken: "token", timeoutMs });
}

/** Asserts that `promise` rejects with exactly the class `expected` (not a subclass of it). */
async function rejectsExactly(
  promise: Promise<unknown>,
  expected: new (...args: never[]) => Error,
) {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof expected, `expected ${expected.name}, got ${String(error)}`);
    assert.equal(
      (error as Error).constructor,
      expected,
      `expected ${expected.name}, got ${String(error)}`,
    );
    return true;
  });
}

const CASES: [number, unknown, new (...args: never[]) => Error][] = [
  [503, UNAVAILABLE, GatewayUnavailableError],
  [502, Buffer.from("<html>bad gateway</html>"), GatewayUnavailableError],
  [504, Buffer.from(""), GatewayUnavailableError],
  [500, { error: "internal", message: "internal error" }, MeshGuardError],
  [413, { error: "payload_too_large", message: "body over 65536 bytes" }, MeshGuardError],
  [400, { error: "bad_request", message: "action: expected a string" }, MeshGuardError],
  [408, { error: "request_timeout", message: "the body did not arrive" }, MeshGuardError],
  [401, { error: "unauthorized", message: "agent revoked" }, AuthenticationError],
  [200, { status: "ok" }, MeshGuardError], // a 200 that is not a decision
  [200, { ...UNAVAILABLE, allowed: "true" }, MeshGuardError], // "true" is not true
  [200, [{ allowed: true }], MeshGuardError], // JSON, but not an object
  [200, Buffer.from("<html>welcome</html>"), MeshGuardError],
  [200, Buffer.from('{"allowed": true'), MeshGuardError], // cut short
  [204, Buffer.from(""), MeshGuardError],
  [302, Buffer.from(""), MeshGuardError],
];

describe("no other answer than a 200 allow lets an action run", () => {
  for (const [status, body, expected] of CASES) {
    const shown = Buffer.isBuffer(body) ? body.toString() : JSON.stringify(body);
    test(`${status} ${shown.slice(0, 40)} -> ${expected.name}`, T, async () => {
      const server = new CannedAnswer(status, body);
      const url = await server.start();
      try {
        const client = clientFor(url);
        await rejectsExactly(
          client.check("write:workspace", { resource: "workspace/notes.txt" }),
          expected,
        );
        await assert.rejects(
          client.enforce("write:workspace", { resource: "workspace/notes.txt" }),
          MeshGuardError,
        );
        const ran: string[] = [];
        await assert.rejects(
          client.govern("write:workspace", () => ran.push("block")),
          MeshGuardError,
        );
        assert.deepEqual(ran, []);
      } finally {
        await server.close();
      }
    });
  }
});

test("a 200 that says not allowed is not an allow", T, async () => {
  const server = new CannedAnswer(200, UNAVAILABLE);
  const url = await server.start();
  try {
    await assert.rejects(clientFor(url).check("write:workspace"), MeshGuardError);
  } finally {
    await server.close();
  }
});

test("a redirect is never followed", T, async () => {
  const elsewhere = new CannedAnswer(200, { allowed: true, decision: "allow", code: "allowed" });
  const target = await elsewhere.start();
  const server = new CannedAnswer(302, Buffer.from(""), {
    Location: `${target}/proxy/governance/check`,
  });
  const url = await server.start();
  try {
    await rejectsExactly(clientFor(url).check("write:workspace"), MeshGuardError);
    assert.equal(elsewhere.seen.length, 0);
  } finally {
    await server.close();
    await elsewhere.close();
  }
});

test("a 429 from a check is a rate-limit denial with Retry-After", T, async () => {
  const body = { allowed: false, decision: "deny", code: "rate_limited", reason: "rate limit" };
  const server = new CannedAnswer(429, body, { "Retry-After": "7" });
  const url = await server.start();
  try {
    const client = clientFor(url);
    const decision = await client.check("browse:web");
    assert.equal(decision.allowed, false);
    assert.equal(decision.code, "rate_limited");
    assert.equal(decision.retryAfterSeconds, 7);
    const limited = await client.enforce("browse:web").catch((error: unknown) => error);
    assert.ok(limited instanceof RateLimitError);
    assert.equal(limited.retryAfter, 7);
  } finally {
    await server.close();
  }
});

test("a 429 without a decision body is still a rate-limit denial", T, async () => {
  const server = new CannedAnswer(429, Buffer.from("slow down"), { "Retry-After": "3" });
  const url = await server.start();
  try {
    const decision = await clientFor(url).check("browse:web");
    assert.equal(decision.allowed, false);
    assert.equal(decision.code, "rate_limited");
    assert.equal(decision.reason, "slow down");
    assert.equal(decision.retryAfterSeconds, 3);
  } finally {
    await server.close();
  }
});

test("a 403 from something in front of the gateway is a denial", T, async () => {
  const server = new CannedAnswer(403, Buffer.from("<html>forbidden</html>"));
  const url = await server.start();
  try {
    const decision = await clientFor(url).check("browse:web");
    assert.equal(decision.allowed, false);
    assert.equal(decision.decision, "deny");
    await rejectsExactly(clientFor(url).enforce("browse:web"), PolicyDeniedError);
  } finally {
    await server.close();
  }
});

test("a record over the agent's budget is a rate limit with retryAfter", T, async () => {
  const body = {
    error: "rate_limited",
    code: "rate_limited",
    message: "this agent's budget of 600 records per minute is spent; retry in 7 s",
    retry_after_seconds: 7,
  };
  const server = new CannedAnswer(429, body, { "Retry-After": "7" });
  const url = await server.start();
  try {
    const raised = await clientFor(url)
      .record("browse:web")
      .catch((error: unknown) => error);
    assert.ok(raised instanceof RateLimitError);
    assert.equal(raised.retryAfter, 7);
    assert.match(raised.message, /records per minute/);
  } finally {
    await server.close();
  }
});

test("a record answered with anything but 201 is an error", T, async () => {
  for (const [status, body, expected] of [
    [403, { error: "forbidden", message: "another agent's check" }, MeshGuardError],
    [404, { error: "not_found", message: "no such event" }, MeshGuardError],
    [503, { error: "unavailable", message: "store unavailable" }, GatewayUnavailableError],
    [201, Buffer.from("not json"), MeshGuardError],
  ] as const) {
    const server = new CannedAnswer(status, body);
    const url = await server.start();
    try {
      await rejectsExactly(clientFor(url).record("read:workspace"), expected);
    } finally {
      await server.close();
    }
  }
});

test("an approval answered with anything but a 200 is an error, never approved", T, async () => {
  for (const [status, body, expected] of [
    [404, { error: "not_found", message: "unknown approval" }, MeshGuardError],
    [503, { error: "unavailable", message: "store unavailable" }, GatewayUnavailableError],
    [200, [], MeshGuardError],
  ] as const) {
    const server = new CannedAnswer(status, body);
    const url = await server.start();
    try {
      await rejectsExactly(clientFor(url).waitForApproval("apr_1", { timeoutMs: 1_000 }), expected);
    } finally {
      await server.close();
    }
  }
  // A body without a status is pending, never approved.
  const server = new CannedAnswer(200, { approval_id: "apr_1" });
  const url = await server.start();
  try {
    const approval = await clientFor(url).getApproval("apr_1");
    assert.equal(approval.pending, true);
    assert.equal(approval.approved, false);
  } finally {
    await server.close();
  }
});

test("a gateway that never answers times out into an error", T, async () => {
  const silent = new RawServer("silent");
  const url = await silent.start();
  try {
    const started = performance.now();
    await assert.rejects(clientFor(url, 500).check("execute:python"), (error: unknown) => {
      assert.ok(error instanceof GatewayUnavailableError, String(error));
      assert.match(error.message, /did not answer/);
      return true;
    });
    assert.ok(performance.now() - started < 3_000);
    let ran = false;
    await assert.rejects(
      clientFor(url, 300).govern("execute:python", () => {
        ran = true;
      }),
      GatewayUnavailableError,
    );
    assert.equal(ran, false);
  } finally {
    await silent.close();
  }
});

test("an answer broken off half-way is an error", T, async () => {
  const broken = new RawServer("broken");
  const url = await broken.start();
  try {
    await rejectsExactly(clientFor(url).check("read:workspace"), GatewayUnavailableError);
  } finally {
    await broken.close();
  }
});

test("an unreachable gateway is an error, never an allow", T, async () => {
  const client = clientFor(await deadUrl());
  await assert.rejects(client.check("read:workspace"), (error: unknown) => {
    assert.ok(error instanceof GatewayUnavailableError);
    assert.match(error.message, /unreachable/);
    return true;
  });
  assert.equal(await client.isHealthy(), false);
  await assert.rejects(client.record("read:workspace"), MeshGuardError);
  await assert.rejects(
    client.waitForApproval("apr_1", { timeoutMs: 500 }),
    GatewayUnavailableError,
  );
  const bad = new MeshGuardClient({ gatewayUrl: "not a url", agentToken: "token" });
  await assert.rejects(bad.check("read:workspace"), GatewayUnavailableError);
});

test("an aborted call is an error, never an allow", T, async () => {
  const silent = new RawServer("silent");
  const url = await silent.start();
  try {
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 100);
    await rejectsExactly(
      clientFor(url).check("read:workspace", { signal: controller.signal }),
      MeshGuardError,
    );
    await rejectsExactly(
      clientFor(url).check("read:workspace", { signal: AbortSignal.abort() }),
      MeshGuardError,
    );
  } finally {
    await silent.close();
  }
});

test("admin calls without the admin token fail before sending", T, async () => {
  const server = new CannedAnswer(200, { agents: [] });
  const url = await server.start();
  try {
    const client = new MeshGuardClient({ gatewayUrl: url, agentToken: "token", adminToken: "" });
    const saved = process.env["MESHGUARD_ADMIN_TOKEN"];
    delete process.env["MESHGUARD_ADMIN_TOKEN"];
    try {
      const noAdmin = new MeshGuardClient({ gatewayUrl: url });
      await rejectsExactly(noAdmin.listAgents(), AuthenticationError);
      await rejectsExactly(client.approve("apr_1"), AuthenticationError);
    } finally {
      if (saved !== undefined) process.env["MESHGUARD_ADMIN_TOKEN"] = saved;
    }
    assert.equal(server.seen.length, 0);
  } finally {
    await server.close();
  }
});

test("every denial is caught as PolicyDeniedError, and nothing else is", () => {
  const denied = new PolicyDeniedError("pay:card", { policy: "p", rule: "r", reason: "no" });
  assert.equal(denied.message, "Action 'pay:card' denied by policy 'p' (rule: r): no");
  assert.ok(new ApprovalRequiredError("send:email") instanceof PolicyDeniedError);
  assert.ok(new RateLimitError("browse:web") instanceof PolicyDeniedError);
  assert.equal(new RateLimitError().reason, "Rate limit exceeded");
  assert.ok(new GatewayUnavailableError("x") instanceof MeshGuardError);
  assert.ok(!(new GatewayUnavailableError("x") instanceof PolicyDeniedError));
  assert.ok(new AuthenticationError("x") instanceof MeshGuardError);
  assert.ok(!(new AuthenticationError("x") instanceof PolicyDeniedError));
  assert.ok(new MeshGuardError("x") instanceof Error);
});

test("configuration comes from the environment", () => {
  const names = [
    "MESHGUARD_URL",
    "MESHGUARD_GATEWAY_URL",
    "MESHGUARD_TOKEN",
    "MESHGUARD_AGENT_TOKEN",
    "MESHGUARD_ADMIN_TOKEN",
    "MESHGUARD_TRACE_ID",
  ];
  const saved = Object.fromEntries(names.map((name) => [name, process.env[name]]));
  try {
    for (const name of names) delete process.env[name];
    process.env["MESHGUARD_GATEWAY_URL"] = "http://127.0.0.1:1/";
    process.env["MESHGUARD_AGENT_TOKEN"] = "old-name";
    process.env["MESHGUARD_TRACE_ID"] = "trace-from-env";
    process.env["MESHGUARD_ADMIN_TOKEN"] = "admin-from-env";
    let client = new MeshGuardClient();
    assert.deepEqual(
      [client.gatewayUrl, client.agentToken, client.traceId, client.adminToken],
      ["http://127.0.0.1:1", "old-name", "trace-from-env", "admin-from-env"],
    );
    process.env["MESHGUARD_URL"] = "http://127.0.0.1:2";
    process.env["MESHGUARD_TOKEN"] = "new-name";
    client = new MeshGuardClient();
    assert.deepEqual([client.gatewayUrl, client.agentToken], ["http://127.0.0.1:2", "new-name"]);
    client = new MeshGuardClient({ gatewayUrl: "http://127.0.0.1:3//", agentToken: "given" });
    assert.deepEqual([client.gatewayUrl, client.agentToken], ["http://127.0.0.1:3", "given"]);
    for (const name of names) delete process.env[name];
    client = new MeshGuardClient();
    assert.equal(client.gatewayUrl, "http://localhost:3100");
    assert.equal(client.agentToken, undefined);
    assert.match(client.traceId, /^[0-9a-f-]{36}$/);
    assert.notEqual(new MeshGuardClient().traceId, client.traceId);
    assert.equal(client.timeoutMs, 30_000);
  } finally {
    for (const name of names) {
      if (saved[name] === undefined) delete process.env[name];
      else process.env[name] = saved[name];
    }
  }
});

test("every request names its trace and agent, and admin calls the admin token", T, async () => {
  const server = new CannedAnswer(200, {
    allowed: true,
    decision: "allow",
    code: "allowed",
    audit_id: "a1",
  });
  const url = await server.start();
  try {
    const client = new MeshGuardClient({
      gatewayUrl: url,
      agentToken: "agent-token",
      adminToken: "admin-token",
      traceId: "trace-1",
    });
    const decision = await client.check("read:workspace", {
      context: { n: 1 },
      approvalId: "apr_9",
    });
    assert.equal(decision.allowed, true);
    assert.equal(decision.traceId, "trace-1");
    const [seen] = server.seen;
    assert.equal(seen?.method, "POST");
    assert.equal(seen?.path, "/proxy/governance/check");
    assert.equal(seen?.headers["authorization"], "Bearer agent-token");
    assert.equal(seen?.headers["x-meshguard-trace-id"], "trace-1");
    assert.equal(seen?.headers["x-admin-token"], undefined);
    assert.deepEqual(JSON.parse(seen?.body ?? ""), {
      action: "read:workspace",
      resource: "*",
      context: { n: 1 },
      approval_id: "apr_9",
    });
    await client.getApproval("apr/9", { waitMs: 90_000 }).catch(() => undefined);
    assert.equal(server.seen[1]?.path, "/proxy/governance/approvals/apr%2F9?wait=60");
    await client.listApprovals({ status: "pending" }).catch(() => undefined);
    assert.equal(server.seen[2]?.path, "/admin/approvals?status=pending&limit=1000");
    assert.equal(server.seen[2]?.headers["x-admin-token"], "admin-token");
    assert.equal(server.seen[2]?.headers["authorization"], undefined);
  } finally {
    await server.close();
  }
});
