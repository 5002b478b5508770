"""A local MCP server over stdio for the tests: `read_file` and `delete_file`.

Each call it receives is appended to the file named by ``FILES_SERVER_LOG``, so that a test can
tell which calls reached the server.
"""

from __future__ import annotations

import os

from mcp.server.mcpserver import MCPServer

server = MCPServer("files")


def _log(line: str) -> None:
    with open(os.environ["FILES_SERVER_LOG"], "a", encoding="utf-8") as log:
        log.write(line + "\n")


@server.tool()
def read_file(path: str) -> str:
    """Reads a file."""
    _log(f"read_file {path}")
    return f"contents of {path}"


@server.tool()
def delete_file(path: str) -> str:
    """Deletes a file."""
    _log(f"delete_file {path}")
    return f"deleted {path}"


if __name__ == "__main__":
    server.run("stdio")
