/** Human approvals end to end: asked by a check, decided through the admin API or the CLI. */

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { ApprovalRequiredError, MeshGuardError, PolicyDeniedError } from "@meshguard/sdk";

import { Gateway, waitUntil, type AgentIdentity } from "./support/gateway.js";

const APPROVALS_POLICY = `name: sdk-approvals
version: "1.0"
description: Agents that may send email once a human approves each message
appliesTo:
  tags: [sdk-approvals]
rules:
  - effect: allow
    actions: ["read:*"]
defaultEffect: deny
humanInTheLoop:
  requireApproval: ["send:email"]
  timeoutSeconds: 600
`;
const T = { timeout: 30_000 };

describe("approvals", () => {
  const gateway = new Gateway();

  before(async () => {
    await gateway.start();
    await gateway.admin().applyPolicy(APPROVALS_POLICY);
  });
  after(() => gateway.dispose());

  const mailer = (): Promise<AgentIdentity> => gateway.createAgent("mailer", ["sdk-approvals"]);

  test("an approval is requested, approved through the CLI, then used once", T, async () => {
    const client = gateway.client(await mailer());
    const first = await client.check("send:email", { resource: "ops@example.com" });
    assert.equal(first.allowed, false);
    assert.equal(first.decision, "require_approval");
    assert.equal(first.code, "approval_required");
    assert.equal(first.requiresApproval, true);
    const approvalId = first.approvalId;
    assert.ok(approvalId);
    const pending = await client
      .enforce("send:email", { resource: "ops@example.com" })
      .catch((e: unknown) => e);
    assert.ok(pending instanceof ApprovalRequiredError);
    assert.ok(pending instanceof PolicyDeniedError);
    assert.equal(pending.approvalId, approvalId);
    assert.equal(pending.code, "approval_pending");
    assert.equal((await client.getApproval(approvalId)).status, "pending");

    await gateway.cli("approval", "approve", approvalId);

    const approval = await client.waitForApproval(approvalId, { timeoutMs: 5_000 });
    assert.equal(approval.approved, true);
    assert.equal(approval.status, "approved");
    assert.ok(approval.decidedBy);
    const decision = await client.check("send:email", { resource: "ops@example.com", approvalId });
    assert.equal(decision.allowed, true);
    assert.equal(decision.code, "allowed_with_approval");
    // single use: the next email needs a new approval
    const again = await client.check("send:email", { resource: "ops@example.com" });
    assert.equal(again.requiresApproval, true);
    assert.notEqual(again.approvalId, approvalId);
    assert.equal((await client.getApproval(approvalId)).status, "used");
  });

  test("waitForApproval long-polls until the admin API approves", T, async () => {
    const client = gateway.client(await mailer());
    const admin = gateway.admin();
    const decision = await client.check("send:email", { resource: "team@example.com" });
    assert.ok(decision.approvalId);
    const approvalId = decision.approvalId;
    const started = performance.now();
    setTimeout(() => void admin.approve(approvalId), 700);
    const approval = await client.waitForApproval(approvalId, { timeoutMs: 15_000 });
    const waited = performance.now() - started;
    assert.equal(approval.status, "approved");
    // Answered when the human decided, not at the end of a poll step.
    assert.ok(waited >= 500 && waited < 5_000, `waited ${waited} ms`);
    assert.equal(
      (await client.check("send:email", { resource: "team@example.com", approvalId })).code,
      "allowed_with_approval",
    );
  });

  test("enforce waits for the human decision", T, async () => {
    const identity = await mailer();
    const client = gateway.client(identity);
    const admin = gateway.admin();
    const human = (async () => {
      const mine = await waitUntil(async () => {
        const pending = (await admin.listApprovals({ status: "pending" })).filter(
          (approval) => approval["agentId"] === identity.id,
        );
        return pending.length > 0 ? pending : undefined;
      });
      for (const approval of mine ?? []) await admin.approve(String(approval["id"]));
    })();
    const decision = await client.enforce("send:email", {
      resource: "ceo@example.com",
      approvalWaitMs: 20_000,
    });
    await human;
    assert.equal(decision.allowed, true);
    assert.equal(decision.code, "allowed_with_approval");
  });

  test("a denied approval stays denied", T, async () => {
    const client = gateway.client(await mailer());
    const admin = gateway.admin();
    const first = await client.check("send:email", { resource: "all@example.com" });
    assert.ok(first.approvalId);
    await admin.denyApproval(first.approvalId, "not to everyone");
    const approval = await client.waitForApproval(first.approvalId, { timeoutMs: 5_000 });
    assert.equal(approval.status, "denied");
    assert.equal(approval.approved, false);
    assert.equal(approval.reason, "not to everyone");
    const denied = await client
      .enforce("send:email", { resource: "all@example.com", approvalWaitMs: 2_000 })
      .catch((error: unknown) => error);
    assert.ok(denied instanceof PolicyDeniedError);
    assert.ok(!(denied instanceof ApprovalRequiredError));
    assert.equal(denied.code, "approval_denied");
  });

  test("nobody deciding in time leaves the approval pending, within the wait", T, async () => {
    const client = gateway.client(await mailer());
    const first = await client.check("send:email", { resource: "later@example.com" });
    assert.ok(first.approvalId);
    const started = performance.now();
    const approval = await client.waitForApproval(first.approvalId, { timeoutMs: 1_200 });
    const waited = performance.now() - started;
    assert.equal(approval.pending, true);
    assert.equal(approval.approved, false);
    assert.ok(waited >= 1_000 && waited < 4_000, `waited ${waited} ms`);
  });

  test("another agent's approval is unknown to this one", T, async () => {
    const owner = gateway.client(await mailer());
    const other = gateway.client(await mailer());
    const first = await owner.check("send:email", { resource: "x@example.com" });
    assert.ok(first.approvalId);
    await assert.rejects(other.getApproval(first.approvalId), (error) => {
      assert.ok(error instanceof MeshGuardError);
      assert.match(error.message, /unknown to this agent/);
      return true;
    });
  });
});
