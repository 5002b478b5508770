/**
 * The real `meshguard` binary on a free loopback port with its own temporary data dir, as the
 * Python suites run it (python/gateway_process.py). Nothing here fakes the gateway.
 */

import { spawn, execFile, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { randomUUID } from "node:crypto";

import { MeshGuardClient } from "@meshguard/sdk";

const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000;
const CLI_TIMEOUT_MS = 30_000;

/** The repository root: the first ancestor holding Cargo.toml and examples/policies. */
export const REPO_ROOT = ((): string => {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, "Cargo.toml")) && existsSync(join(dir, "examples", "policies"))) {
      return dir;
    }
    const parent = dirname(dir);
    if (parent === dir) throw new Error("the repository root was not found above the tests");
    dir = parent;
  }
})();

/** The example policy the Python suites use too. */
export const AUTOGPT_POLICY = readFileSync(
  join(REPO_ROOT, "examples", "policies", "autogpt.yaml"),
  "utf8",
);

/** The binary under test: `MESHGUARD_BIN`, else `${CARGO_TARGET_DIR:-target}/debug/meshguard`. */
export function meshguardBinary(): string {
  const configured = process.env["MESHGUARD_BIN"];
  const binary = configured
    ? resolve(configured)
    : join(resolve(REPO_ROOT, process.env["CARGO_TARGET_DIR"] ?? "target"), "debug", "meshguard");
  if (!existsSync(binary)) {
    throw new Error(
      `the meshguard binary is missing at ${binary}: run \`cargo build -p meshguard --bin meshguard\``,
    );
  }
  return binary;
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      const port = typeof address === "object" && address ? address.port : 0;
      probe.close(() => resolvePort(port));
    });
  });
}

/** The environment of a child: this one without any MeshGuard setting that could leak in. */
function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  const documented = new Set([
    "PORT",
    "HOST",
    "MODE",
    "ADMIN_TOKEN",
    "POLICIES_DIR",
    "DB_PATH",
    "PROXY_TARGET",
    "ALERT_ON",
    "ALERT_WEBHOOK_URL",
    "ALERT_WEBHOOK_SECRET",
    "ALERT_SLACK_WEBHOOK",
  ]);
  for (const [key, value] of Object.entries(process.env)) {
    if (key.startsWith("MESHGUARD_") || documented.has(key)) continue;
    env[key] = value;
  }
  return { ...env, ...extra };
}

/** An agent created for one test, with its token (shown once). */
export interface AgentIdentity {
  name: string;
  id: string;
  token: string;
}

const running = new Set<ChildProcess>();
process.on("exit", () => {
  // A test that failed before its cleanup must not leave a gateway behind.
  for (const child of running) child.kill("SIGKILL");
});

/** One `meshguard serve` process with its data dir. */
export class Gateway {
  readonly binary = meshguardBinary();
  readonly home = mkdtempSync(join(tmpdir(), "meshguard-ts-"));
  readonly dataDir = join(this.home, "data");
  readonly logPath = join(this.home, "gateway.log");
  port = 0;
  private child: ChildProcess | undefined;

  constructor(private readonly env: Record<string, string> = {}) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** The admin token the gateway wrote on first start. */
  get adminToken(): string {
    return readFileSync(join(this.dataDir, "admin.token"), "utf8").trim();
  }

  /** A client with the admin token. */
  admin(): MeshGuardClient {
    return new MeshGuardClient({ gatewayUrl: this.url, adminToken: this.adminToken });
  }

  /** A client for `agent`. */
  client(
    agent: AgentIdentity,
    options: { traceId?: string; timeoutMs?: number } = {},
  ): MeshGuardClient {
    return new MeshGuardClient({ gatewayUrl: this.url, agentToken: agent.token, ...options });
  }

  /** Starts the gateway on a free port and waits until `/health` answers 200. */
  async start(): Promise<this> {
    let lastError = "not started";
    for (let attempt = 0; attempt < 3; attempt += 1) {
      // A port taken between probe and bind: try another one.
      this.port = await freePort();
      const log = openSync(this.logPath, "a");
      const child = spawn(
        this.binary,
        ["--data-dir", this.dataDir, "serve", "--addr", `127.0.0.1:${this.port}`],
        {
          stdio: ["ignore", log, log],
          env: cleanEnv({ MESHGUARD_HOME: this.dataDir, RUST_LOG: "warn", ...this.env }),
        },
      );
      closeSync(log);
      this.child = child;
      running.add(child);
      const deadline = Date.now() + START_TIMEOUT_MS;
      while (Date.now() < deadline && child.exitCode === null && child.signalCode === null) {
        try {
          const answer = await fetch(`${this.url}/health`, { signal: AbortSignal.timeout(1000) });
          await answer.arrayBuffer();
          if (answer.status === 200) return this;
          lastError = `health answered ${answer.status}`;
        } catch (error) {
          lastError = String(error);
        }
        await new Promise((done) => setTimeout(done, 100));
      }
      await this.stop();
    }
    throw new Error(`meshguard serve did not become healthy (${lastError}):\n${this.logTail()}`);
  }

  /** Stops the gateway (SIGTERM, then SIGKILL after 10 s). */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child) return;
    this.child = undefined;
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((done) => child.once("exit", () => done()));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(timer);
    }
    running.delete(child);
  }

  /** Stops the gateway and removes its data dir. */
  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.home, { recursive: true, force: true });
  }

  /** The end of the gateway's log, for failure messages. */
  logTail(lines = 40): string {
    if (!existsSync(this.logPath)) return "";
    return readFileSync(this.logPath, "utf8").split("\n").slice(-lines).join("\n");
  }

  /** Runs `meshguard --url … --data-dir … ARGS` against this gateway. */
  cli(...args: string[]): Promise<{ stdout: string; stderr: string }> {
    return new Promise((done, fail) => {
      execFile(
        this.binary,
        ["--url", this.url, "--data-dir", this.dataDir, ...args],
        {
          timeout: CLI_TIMEOUT_MS,
          env: cleanEnv({ MESHGUARD_HOME: this.dataDir, NO_COLOR: "1" }),
        },
        (error, stdout, stderr) => {
          if (error) {
            fail(
              new Error(
                `meshguard ${args.join(" ")} failed: ${error.message}\n${stdout}\n${stderr}`,
              ),
            );
          } else {
            done({ stdout, stderr });
          }
        },
      );
    });
  }

  /** Creates an agent through the admin API, with a unique name. */
  async createAgent(
    prefix: string,
    tags: string[],
    trustTier = "verified",
  ): Promise<AgentIdentity> {
    const name = `${prefix}-${randomUUID().slice(0, 10)}`;
    const created = await this.admin().createAgent(name, { trustTier, tags });
    return { name, id: created.id, token: created.token };
  }

  /** Every audit event matching `filters` (e.g. `traceId`), read with a plain HTTP call. */
  async audit(filters: Record<string, string>): Promise<Record<string, unknown>[]> {
    const entries: Record<string, unknown>[] = [];
    const query = new URLSearchParams({ limit: "500", ...filters });
    for (let page = 0; page < 50; page += 1) {
      const answer = await fetch(`${this.url}/admin/audit?${query}`, {
        headers: { "X-Admin-Token": this.adminToken },
        signal: AbortSignal.timeout(10_000),
      });
      const body = (await answer.json()) as {
        entries?: Record<string, unknown>[];
        nextCursor?: string | null;
      };
      if (answer.status !== 200)
        throw new Error(`audit answered ${answer.status}: ${JSON.stringify(body)}`);
      entries.push(...(body.entries ?? []));
      if (!body.nextCursor) break;
      query.set("cursor", body.nextCursor);
    }
    return entries;
  }
}

/** Polls `predicate` until it returns something truthy (bounded), and returns it. */
export async function waitUntil<T>(
  predicate: () => Promise<T> | T,
  timeoutMs = 15_000,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value || Date.now() > deadline) return value;
    await new Promise((done) => setTimeout(done, intervalMs));
  }
}
