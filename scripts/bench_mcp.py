"""Added latency per MCP tool call: the same call of the reference everything server's `echo`
tool, made directly over each transport (the client starts the stdio server; the same server
listens for streamable HTTP on its own port), through `meshguard mcp run` (stdio proxy), and
through the gateway-hosted endpoint `/mcp/everything` (streamable HTTP), in one run on one
machine, against one release `meshguard serve` with durable audit (SQLite). Each MeshGuard
surface is compared with the direct call over the same transport.

Each surface: one session, 30 warm-up calls, then CALLS timed calls one after the other; the
median and 95th percentile of each, and the median added to the direct call. Run by
scripts/bench-mcp.sh, which builds the binary and prepares the client and servers.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Awaitable, Callable, Dict, List

import anyio
import httpx2
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

ROOT = Path(__file__).resolve().parent.parent
EVERYTHING = ROOT / "tests" / "mcp" / "node_modules" / ".bin" / "mcp-server-everything"
POLICY = """
name: mcp-bench
version: "1"
appliesTo:
  tags: [mcp-bench]
rules:
  - name: everything-open
    effect: allow
    actions: ["mcp:everything/*"]
defaultEffect: deny
"""
WARMUP = 30


def free_port() -> int:
    """A free loopback port for the gateway."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def timed_calls(session: ClientSession, calls: int) -> List[float]:
    """Milliseconds of each of ``calls`` sequential ``echo`` calls, after the warm-up."""
    for _ in range(WARMUP):
        await session.call_tool("echo", {"message": "warm"})
    samples = []
    for i in range(calls):
        started = time.perf_counter()
        result = await session.call_tool("echo", {"message": f"call {i}"})
        samples.append((time.perf_counter() - started) * 1000)
        assert not result.is_error, result
    return samples


async def over_stdio(params: StdioServerParameters, calls: int) -> List[float]:
    """The timed calls in a session with a stdio server the client starts."""
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return await timed_calls(session, calls)


async def over_http(url: str, token: str, calls: int) -> List[float]:
    """The timed calls in a streamable-HTTP session with the agent's token (none: no header)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=120)) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await timed_calls(session, calls)


def main() -> None:
    """Starts the gateway, measures every surface, prints the table."""
    binary = Path(sys.argv[1])
    calls = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    work = Path(tempfile.mkdtemp(prefix="meshguard-bench-mcp-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = work / "gateway.toml"
    durability = os.environ.get("AUDIT_DURABILITY", "sync")
    config.write_text(
        f'[audit]\ndurability = "{durability}"\n\n'
        f'[mcp.servers.everything]\ncommand = ["{EVERYTHING}", "stdio"]\n'
    )
    data = work / "data"
    servers: List[subprocess.Popen[bytes]] = []
    log = open(work / "gateway.log", "wb")
    gateway = subprocess.Popen(
        [str(binary), "--data-dir", str(data), "serve", "--addr", f"127.0.0.1:{port}"]
        + ["--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "RUST_LOG": "warn"},
    )

    def cli(*args: str) -> str:
        done = subprocess.run(
            [str(binary), "--url", url, "--data-dir", str(data), *args],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout

    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the gateway did not start") from None
                time.sleep(0.1)
        (work / "policy.yaml").write_text(POLICY)
        cli("policy", "apply", str(work / "policy.yaml"))
        created = json.loads(
            cli("agent", "create", "bench", "--trust", "verified", "--tags", "mcp-bench", "--json")
        )
        token = str(created["token"])
        env = {"PATH": os.environ.get("PATH", "")}
        direct = StdioServerParameters(command=str(EVERYTHING), args=["stdio"], env=env)
        proxied = StdioServerParameters(
            command=str(binary),
            args=["mcp", "run", "--server", "everything", "--", str(EVERYTHING), "stdio"],
            env={**env, "MESHGUARD_TOKEN": token, "MESHGUARD_URL": url},
        )
        # The same server over streamable HTTP, with no MeshGuard in between.
        http_port = free_port()
        plain = subprocess.Popen(
            [str(EVERYTHING), "streamableHttp"],
            env={**env, "PORT": str(http_port)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        servers.append(plain)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", http_port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the streamable-HTTP server did not start") from None
                time.sleep(0.1)
        stdio_base = "direct (stdio, no MeshGuard)"
        http_base = "direct (streamable HTTP, no MeshGuard)"
        surfaces: Dict[str, Callable[[], Awaitable[List[float]]]] = {
            stdio_base: lambda: over_stdio(direct, calls),
            "meshguard mcp run (stdio proxy)": lambda: over_stdio(proxied, calls),
            http_base: lambda: over_http(f"http://127.0.0.1:{http_port}/mcp", "", calls),
            "gateway-hosted /mcp/everything (streamable HTTP)": lambda: over_http(
                f"{url}/mcp/everything", token, calls
            ),
        }
        bases = {
            stdio_base: stdio_base,
            "meshguard mcp run (stdio proxy)": stdio_base,
            http_base: http_base,
            "gateway-hosted /mcp/everything (streamable HTTP)": http_base,
        }
        results: Dict[str, List[float]] = {}
        for name, run in surfaces.items():
            results[name] = anyio.run(run)
        print(
            f"{calls} calls of `echo` per surface, after {WARMUP} warm-up calls; "
            f"audit durability {durability}\n"
        )
        print("| surface | median | p95 | added to direct, same transport (median) | / direct |")
        print("|---|---:|---:|---:|---:|")
        for name, samples in results.items():
            base = statistics.median(results[bases[name]])
            median = statistics.median(samples)
            p95 = statistics.quantiles(samples, n=20)[18]
            print(
                f"| {name} | {median:.3f} ms | {p95:.3f} ms | {median - base:+.3f} ms "
                f"| {median / base:.2f}x |"
            )
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=20)
        gateway.terminate()
        gateway.wait(timeout=20)
        log.close()


if __name__ == "__main__":
    main()
