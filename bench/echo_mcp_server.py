"""The upstream for bench/gateway.py: an MCP server over streamable HTTP (the official SDK's MCPServer) with
one read-only tool that answers at once, so what is measured is the path to it, not the tool."""

from __future__ import annotations

import sys

from mcp.server import MCPServer

server = MCPServer("echo")


@server.tool(annotations={"readOnlyHint": True})
def echo(text: str) -> dict[str, str]:
    """Return the text."""
    return {"text": text}


if __name__ == "__main__":
    server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]), stateless_http=True, json_response=True)
