/** The SDK against the real gateway (`meshguard serve`), one agent per test. */

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";

import {
  AuthenticationError,
  GatewayUnavailableError,
  MeshGuardClient,
  MeshGuardError,
  PolicyDeniedError,
  RateLimitError,
  governed,
  type PolicyDecision,
} from "@meshguard/sdk";

import { CannedAnswer } from "./support/canned.js";
import { AUTOGPT_POLICY, Gateway, type AgentIdentity } from "./support/gateway.js";

const TAGS = ["autogpt", "autonomous"];
const T = { timeout: 30_000 };

function field(event: Record<string, unknown>, name: string): unknown {
  return event[name];
}

describe("against the real gateway", () => {
  const gateway = new Gateway();
  let agent: AgentIdentity;

  before(async () => {
    await gateway.start();
    await gateway.admin().applyPolicy(AUTOGPT_POLICY);
  });
  after(() => gateway.dispose());

  const freshAgent = async (): Promise<AgentIdentity> => {
    agent = await gateway.createAgent("autogpt", TAGS);
    return agent;
  };

  test("check allows what the policy allows", T, async () => {
    const client = gateway.client(await freshAgent());
    const decision = await client.check("read:workspace", { resource: "workspace/notes.txt" });
    assert.equal(decision.allowed, true);
    assert.deepEqual(
      [decision.decision, decision.code, decision.policy],
      ["allow", "allowed", "autogpt-policy"],
    );
    assert.ok(decision.auditId);
    assert.equal(decision.traceId, client.traceId);
    assert.equal(decision.enforced, true);
  });

  test("check reports the rule that denied", T, async () => {
    const decision = await gateway.client(await freshAgent()).check("execute:shell", {
      resource: "ls -la",
    });
    assert.equal(decision.allowed, false);
    assert.equal(decision.decision, "deny");
    assert.equal(decision.code, "denied_by_rule");
    assert.equal(decision.policy, "autogpt-policy");
    assert.equal(decision.rule, "rule-4");
    assert.equal(decision.resource, "ls -la");
    assert.equal(decision.requiresApproval, false);
    assert.match(decision.reason ?? "", /denied/);
  });

  test("enforce throws the denial with its reasons", T, async () => {
    const client = gateway.client(await freshAgent());
    assert.equal(
      (await client.enforce("search:web", { resource: "python tutorials" })).allowed,
      true,
    );
    const denied = await client
      .enforce("delete:workspace", { resource: "workspace/notes.txt" })
      .then(
        () => assert.fail("a denied action was allowed"),
        (error: unknown) => error,
      );
    assert.ok(denied instanceof PolicyDeniedError);
    assert.equal(denied.name, "PolicyDeniedError");
    assert.equal(denied.policy, "autogpt-policy");
    assert.equal(denied.code, "denied_by_rule");
    assert.equal(denied.decision?.allowed, false);
    assert.match(denied.message, /delete:workspace/);
  });

  test("an unknown action falls to the default deny", T, async () => {
    const decision = await gateway.client(await freshAgent()).check("execute:start_agent");
    assert.equal(decision.allowed, false);
    assert.equal(decision.code, "default_deny");
    assert.equal(decision.rule, null);
  });

  test("a rate limit is a policy denial with retryAfter", T, async () => {
    const client = gateway.client(await freshAgent());
    for (let index = 0; index < 30; index += 1) {
      // the policy allows 30 checks a minute
      assert.equal(
        (await client.check("browse:web", { resource: `https://example.com/${index}` })).allowed,
        true,
      );
    }
    const limited = await client
      .enforce("browse:web", { resource: "https://example.com/one-more" })
      .catch((error: unknown) => error);
    assert.ok(limited instanceof RateLimitError, String(limited));
    assert.ok(limited instanceof PolicyDeniedError);
    assert.ok((limited.retryAfter ?? 0) > 0);
    assert.match(limited.reason.toLowerCase(), /rate limit/);
  });

  test("a bad token is an authentication error", T, async () => {
    const client = new MeshGuardClient({ gatewayUrl: gateway.url, agentToken: "not-a-token" });
    await assert.rejects(client.check("read:workspace"), AuthenticationError);
    const none = new MeshGuardClient({ gatewayUrl: gateway.url, agentToken: "" });
    await assert.rejects(none.enforce("read:workspace"), AuthenticationError);
  });

  test("a revoked agent is refused at its next request", T, async () => {
    const identity = await freshAgent();
    const client = gateway.client(identity);
    assert.equal((await client.check("read:workspace")).allowed, true);
    await gateway.cli("agent", "revoke", identity.name);
    await assert.rejects(client.check("read:workspace"), AuthenticationError);
    let ran = false;
    await assert.rejects(
      client.govern("read:workspace", () => {
        ran = true;
      }),
      AuthenticationError,
    );
    assert.equal(ran, false);
  });

  test("a body over the limit is never an allow", T, async () => {
    const client = gateway.client(await freshAgent());
    await assert.rejects(
      client.check("read:workspace", { resource: "x".repeat(70 * 1024) }),
      (error) => {
        assert.equal((error as Error).name, "MeshGuardError");
        assert.match((error as Error).message, /413/);
        return true;
      },
    );
  });

  test("govern runs the function only when allowed and records it", T, async () => {
    const trace = `sdk-ts-${randomUUID()}`;
    const client = gateway.client(await freshAgent(), { traceId: trace });
    const ran: string[] = [];
    let seen: PolicyDecision | undefined;
    const value = await client.govern(
      "write:workspace",
      async (decision) => {
        seen = decision;
        ran.push("write");
        return { bytes: 12 };
      },
      { resource: "workspace/notes.txt" },
    );
    assert.deepEqual(value, { bytes: 12 });
    assert.equal(seen?.allowed, true);
    await assert.rejects(
      client.govern("execute:shell", () => ran.push("shell"), { resource: "rm -rf /" }),
      PolicyDeniedError,
    );
    const failure = new Error("disk full");
    await assert.rejects(
      client.govern(
        "write:workspace",
        () => {
          throw failure;
        },
        { resource: "workspace/big.bin" },
      ),
      (error) => error === failure,
    );
    assert.deepEqual(ran, ["write"]);
    const events = await gateway.audit({ traceId: trace });
    const kinds = events
      .map((event) => `${String(field(event, "kind"))} ${String(field(event, "action"))}`)
      .sort();
    assert.deepEqual(kinds, [
      "check execute:shell",
      "check write:workspace",
      "check write:workspace",
      "record write:workspace",
      "record write:workspace",
    ]);
    const records = events.filter((event) => event["kind"] === "record");
    const byStatus = Object.fromEntries(records.map((event) => [event["status"], event]));
    assert.equal(byStatus["success"]?.["result"], '{"bytes":12}');
    assert.equal(byStatus["error"]?.["result"], "disk full");
    const context = byStatus["success"]?.["context"] as Record<string, unknown>;
    assert.equal(context["check_audit_id"], seen?.auditId);
    assert.equal(typeof context["duration_ms"], "number");
  });

  test("governed checks each call with its resource", T, async () => {
    const trace = `sdk-ts-${randomUUID()}`;
    const client = gateway.client(await freshAgent(), { traceId: trace });
    const written: string[] = [];
    const save = governed(
      "write:workspace",
      (path: string, text: string) => {
        written.push(path);
        return text.length;
      },
      { client, resource: (path) => path },
    );
    assert.equal(await save("workspace/a.txt", "abc"), 3);
    assert.deepEqual(written, ["workspace/a.txt"]);
    const checks = await gateway.audit({ traceId: trace, kind: "check" });
    assert.deepEqual(
      checks.map((event) => event["resource"]),
      ["workspace/a.txt"],
    );
  });

  test("record links the outcome to its check under the same trace id", T, async () => {
    const trace = `sdk-ts-${randomUUID()}`;
    const client = gateway.client(await freshAgent(), { traceId: trace });
    const decision = await client.check("read:workspace", {
      resource: "workspace/notes.txt",
      context: { step: 1 },
    });
    const auditId = await client.record("read:workspace", {
      resource: "workspace/notes.txt",
      status: "error",
      result: "file not found",
      auditId: decision.auditId,
      durationMs: 3.7,
    });
    assert.ok(auditId);
    const records = await gateway.audit({ traceId: trace, kind: "record" });
    assert.equal(records.length, 1);
    assert.equal(records[0]?.["id"], auditId);
    assert.equal(records[0]?.["trace_id"], trace);
    assert.equal(records[0]?.["status"], "error");
    assert.equal(records[0]?.["result"], "file not found");
    const context = records[0]?.["context"] as Record<string, unknown>;
    assert.equal(context["check_audit_id"], decision.auditId);
    assert.equal(context["duration_ms"], 3);
  });

  test("a trace id given to one call is the trace of that call only", T, async () => {
    const client = gateway.client(await freshAgent());
    const trace = `sdk-ts-${randomUUID()}`;
    const decision = await client.check("read:workspace", { traceId: trace });
    assert.equal(decision.traceId, trace);
    assert.equal((await gateway.audit({ traceId: trace })).length, 1);
    assert.notEqual((await client.check("read:workspace")).traceId, trace);
  });

  test("admin calls", T, async () => {
    const identity = await freshAgent();
    const admin = gateway.admin();
    const names = new Map((await admin.listAgents()).map((listed) => [listed.name, listed]));
    assert.equal(names.get(identity.name)?.id, identity.id);
    assert.equal(names.get(identity.name)?.trustTier, "verified");
    assert.deepEqual(new Set(names.get(identity.name)?.tags), new Set(TAGS));
    const created = await admin.createAgent(`sdk-${randomUUID().slice(0, 8)}`, {
      trustTier: "trusted",
      tags: ["sdk"],
      description: "made by the TypeScript tests",
    });
    assert.ok(created.token);
    const fetched = await admin.getAgent(created.id);
    assert.equal(fetched.trustTier, "trusted");
    assert.equal(fetched.description, "made by the TypeScript tests");
    assert.ok((await admin.listPolicies()).some((policy) => policy["name"] === "autogpt-policy"));
    assert.equal((await admin.getPolicy("autogpt-policy"))["name"], "autogpt-policy");
    await admin.revokeAgent(identity.name);
    assert.equal((await admin.getAgent(identity.name)).status, "revoked");
    await admin.restoreAgent(identity.name);
    assert.equal((await admin.getAgent(identity.name)).status, "active");
    const rotated = await admin.issueToken(identity.name, { rotate: true });
    await assert.rejects(gateway.client(identity).check("read:workspace"), AuthenticationError);
    assert.equal(
      (await gateway.client({ ...identity, token: rotated }).check("read:workspace")).allowed,
      true,
    );
    assert.ok((await admin.getAuditLog({ limit: 5 })).length > 0);
    assert.equal((await admin.getAuditLog({ limit: 3, kind: "admin" })).length, 3);
    await assert.rejects(
      new MeshGuardClient({ gatewayUrl: gateway.url, adminToken: "wrong" }).listAgents(),
      AuthenticationError,
    );
    // An agent token never works on the admin API.
    await assert.rejects(
      new MeshGuardClient({ gatewayUrl: gateway.url, adminToken: identity.token }).listAgents(),
      AuthenticationError,
    );
  });

  test("applying and deleting a policy", T, async () => {
    const admin = gateway.admin();
    const name = `ts-${randomUUID().slice(0, 8)}`;
    const applied = await admin.applyPolicy(
      `name: ${name}\nversion: "1"\nappliesTo: {tags: [nobody]}\nrules:\n  - effect: allow\n    actions: ["read:*"]\n`,
    );
    assert.equal(applied["name"], name);
    await assert.rejects(admin.applyPolicy(`name: ${name}\nversion: "1"\nrules: 5\n`), (error) => {
      assert.equal((error as Error).name, "MeshGuardError");
      assert.match((error as Error).message, /422/);
      return true;
    });
    await admin.deletePolicy(name);
    await assert.rejects(admin.getPolicy(name), /404/);
  });

  test("health", T, async () => {
    const client = new MeshGuardClient({ gatewayUrl: gateway.url });
    assert.equal((await client.health())["status"], "healthy");
    assert.equal(await client.isHealthy(), true);
  });
});

describe("a gateway of its own", () => {
  test("listings follow the gateway's pages", T, async () => {
    const gateway = await new Gateway().start();
    try {
      class SmallPages extends MeshGuardClient {
        protected override pageSize = 2;
      }
      const admin = new SmallPages({ gatewayUrl: gateway.url, adminToken: gateway.adminToken });
      const names = [0, 1, 2, 3, 4].map((n) => `paged-${n}`);
      for (const name of [...names].reverse()) await admin.createAgent(name);
      assert.deepEqual(
        (await admin.listAgents()).map((listed) => listed.name),
        names,
      );
      // Each creation is audited: five events, read two at a time, newest first.
      const events = await admin.getAuditLog({ limit: 5, kind: "admin" });
      assert.deepEqual(
        events.map((event) => event["resource"]),
        names,
      );
      assert.equal((await admin.getAuditLog({ limit: 3, kind: "admin" })).length, 3);
    } finally {
      await gateway.dispose();
    }
  });

  test("a gateway that went down is an error, never an allow", T, async () => {
    const gateway = await new Gateway().start();
    try {
      await gateway.admin().applyPolicy(AUTOGPT_POLICY);
      const client = gateway.client(await gateway.createAgent("autogpt", TAGS));
      assert.equal((await client.check("read:workspace")).allowed, true);
      await gateway.stop();
      await assert.rejects(client.check("read:workspace"), GatewayUnavailableError);
      let ran = false;
      await assert.rejects(
        client.govern("read:workspace", () => {
          ran = true;
        }),
        MeshGuardError,
      );
      assert.equal(ran, false);
      assert.equal(await client.isHealthy(), false);
    } finally {
      await gateway.dispose();
    }
  });

  test("the proxy forwards only what is allowed", T, async () => {
    const upstream = new CannedAnswer(200, { users: ["ada"] });
    const upstreamUrl = await upstream.start();
    const gateway = await new Gateway({ PROXY_TARGET: upstreamUrl }).start();
    try {
      await gateway.admin().applyPolicy(AUTOGPT_POLICY);
      const client = gateway.client(await gateway.createAgent("autogpt", TAGS));
      const answer = await client.get("api/users", "read:api/users");
      assert.equal(answer.status, 200);
      assert.deepEqual(await answer.json(), { users: ["ada"] });
      await assert.rejects(
        client.post("api/run", "execute:shell", { json: { cmd: "ls" } }),
        PolicyDeniedError,
      );
    } finally {
      await gateway.dispose();
      await upstream.close();
    }
    assert.deepEqual(
      upstream.seen.map((seen) => [seen.method, seen.path]),
      [["GET", "/api/users"]],
    );
    // The agent's token stays at the gateway.
    assert.equal(upstream.seen[0]?.headers["authorization"], undefined);
  });
});
