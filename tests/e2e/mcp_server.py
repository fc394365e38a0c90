"""A real MCP server of the reference scenario, for the end-to-end tests.

Built on the MCP Python SDK 2.x (`mcp.server.mcpserver.MCPServer`), served over
streamable HTTP (`/mcp`) by uvicorn on 127.0.0.1. Two servers of the CorpAssist
scenario (see policies/):

- `--server docs`: tools `search_documents`, `get_document`, `summarize_document`,
  `delete_document`; resources `docs://titan/q1-strategy`, `docs://finance/budget-2026`;
  prompt `executive_summary`.
- `--server projects`: tools `find_project`, `get_project_lead`, `list_issues`, `update_issue`.

Every result is deterministic text, so a test can compare it exactly. Document ids are
`titan/q1-strategy`, `finance/budget-2026` and `hr/onboarding-guide` (the policies'
`document_id like "finance/*"` condition applies to them); projects are `titan`
(led by Dana Whitfield) and `atlas`.

Usage:
    python mcp_server.py --server docs [--port 0] [--request-log FILE] [--json-response]
                         [--extra-tools N] [--exit-on-stdin-eof]

`--extra-tools N` registers N more tools, `extra_tool_001` ... `extra_tool_N` (three
digits at least), each with a description of about 200 characters and one required
String argument `item`; each returns `extra_tool_NNN: <item>`. It makes a `tools/list`
answer as long as a large server's (200 tools: about 100 KB), which Envoy receives in
several body chunks (the ext_proc tests and bench/ext_proc.sh use it).

Port 0 (the default) lets the kernel pick a free port: the socket is bound before
uvicorn starts, and once uvicorn serves, the server prints ONE line to stdout,

    {"event": "listening", "server": "docs", "host": "127.0.0.1", "port": 41234, "url": "http://127.0.0.1:41234/mcp"}

and nothing else on stdout (logs go to stderr). `GET /healthz` answers 200 `ok`.

Request log (`--request-log FILE`): one JSON object per HTTP request that reaches
the server, appended and flushed as soon as the request's body has been read
(before the SDK handles it), so a test can prove that a request did, or did not,
reach the server:

    {"seq": 3, "http_method": "POST", "path": "/mcp", "jsonrpc_method": "tools/call",
     "jsonrpc_id": 2, "name": "get_project_lead", "headers": {...}, "body_bytes": 131}

- `jsonrpc_method` / `jsonrpc_id` / `name` (tool or prompt name, resource uri) are
  set when the body is one JSON-RPC message; for a batch, `batch` holds one
  `{jsonrpc_method, jsonrpc_id, name}` per element; a body that is not JSON has
  `body_error`.
- `headers` holds the headers a test may want to check: the `x-mcp-authz-*` headers
  added by ext_authz, the MCP headers (`mcp-method`, `mcp-name`,
  `mcp-protocol-version`, `mcp-session-id`), `content-type`, `x-envoy-auth-partial-body`,
  and `authorization` reduced to its scheme (`"Bearer"`): never a token.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import threading
from datetime import datetime, timezone
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import PlainTextResponse

# ---------------------------------------------------------------------------
# The data of the scenario.

DOCUMENTS = {
    "titan/q1-strategy": (
        "Project Titan Q1 strategy",
        "Project Titan Q1 strategy: ship the MCP gateway to every business unit, "
        "cut integration time by half, and put every tool call under policy.",
    ),
    "finance/budget-2026": (
        "Budget 2026",
        "Budget 2026: engineering 12.4M, sales 8.1M, operations 3.3M (confidential).",
    ),
    "hr/onboarding-guide": (
        "Onboarding guide",
        "Onboarding guide: request access through the service desk; never share tokens.",
    ),
}

# When every document above last changed (`search_documents`' `since` compares to it).
DOCUMENTS_CHANGED = datetime(2026, 1, 5, tzinfo=timezone.utc)

PROJECTS = {
    "titan": {"name": "Project Titan", "lead": "Dana Whitfield", "issues": ["TITAN-1", "TITAN-2", "TITAN-7"]},
    "atlas": {"name": "Project Atlas", "lead": "Omar Reyes", "issues": ["ATLAS-3"]},
}


def build_docs(log_level: str) -> MCPServer:
    server = MCPServer(
        "docs", instructions="Document repository of the CorpAssist scenario.", log_level=log_level
    )

    @server.tool()
    def search_documents(
        query: str, max_results: int = 10, since: datetime = datetime(1970, 1, 1, tzinfo=timezone.utc)
    ) -> str:
        """Search the document repository; returns matching document ids (changed at or after `since`)."""
        words = query.lower().split()
        hits = [
            doc_id
            for doc_id, (title, text) in sorted(DOCUMENTS.items())
            if any(w in doc_id or w in title.lower() or w in text.lower() for w in words)
            and DOCUMENTS_CHANGED >= since
        ][: max(0, max_results)]
        return f"{len(hits)} result(s) for {query!r}: {', '.join(hits) if hits else '(none)'}"

    @server.tool()
    def get_document(document_id: str) -> str:
        """Get the full text of a document by id."""
        if document_id not in DOCUMENTS:
            return f"No document {document_id!r}"
        return DOCUMENTS[document_id][1]

    @server.tool()
    def summarize_document(document_id: str) -> str:
        """Summarize a document."""
        if document_id not in DOCUMENTS:
            return f"No document {document_id!r}"
        title, text = DOCUMENTS[document_id]
        return f"Summary of {title}: {text.split(':', 1)[1].strip().split(',')[0]}."

    @server.tool()
    def delete_document(document_id: str) -> str:
        """Delete a document (nothing is really deleted: this is a test server)."""
        return f"Deleted document {document_id!r}"

    @server.resource("docs://titan/q1-strategy", mime_type="text/plain")
    def titan_q1_strategy() -> str:
        """The Q1 strategy of Project Titan."""
        return DOCUMENTS["titan/q1-strategy"][1]

    @server.resource("docs://finance/budget-2026", mime_type="text/plain")
    def finance_budget_2026() -> str:
        """The 2026 budget (finance only)."""
        return DOCUMENTS["finance/budget-2026"][1]

    @server.prompt()
    def executive_summary(audience: str) -> str:
        """Ask for an executive summary of the Titan strategy for an audience."""
        return f"Write an executive summary of the Project Titan Q1 strategy for {audience}."

    return server


def build_projects(log_level: str) -> MCPServer:
    server = MCPServer(
        "projects", instructions="Project management server of the CorpAssist scenario.", log_level=log_level
    )

    def project(key: str) -> dict[str, Any] | None:
        return PROJECTS.get(key.lower().removeprefix("project ").strip())

    @server.tool()
    def find_project(name: str) -> str:
        """Find a project by name."""
        p = project(name)
        return f"Found {p['name']} (key {name.lower().removeprefix('project ').strip()})" if p else f"No project {name!r}"

    @server.tool()
    def get_project_lead(project: str) -> str:
        """Who leads a project."""
        p = PROJECTS.get(project.lower())
        return f"{p['name']} is led by {p['lead']}" if p else f"No project {project!r}"

    @server.tool()
    def list_issues(project: str, since: int = 30) -> str:
        """List the open issues of a project updated in the last `since` days."""
        p = PROJECTS.get(project.lower())
        return f"{p['name']} open issues: {', '.join(p['issues'])}" if p else f"No project {project!r}"

    @server.tool()
    def update_issue(issue_id: str, status: str) -> str:
        """Set the status of an issue."""
        return f"Issue {issue_id} is now {status}"

    return server


SERVERS = {"docs": build_docs, "projects": build_projects}


def add_extra_tools(server: MCPServer, count: int) -> None:
    """Register `count` tools `extra_tool_001` ... (see the module's docstring)."""
    width = max(3, len(str(count)))
    for i in range(1, count + 1):
        name = f"extra_tool_{i:0{width}d}"

        def make(tool: str) -> Any:
            def extra(item: str) -> str:
                return f"{tool}: {item}"

            return extra

        description = (
            f"Extra tool number {i} of {count}, registered with --extra-tools so that tools/list is as long "
            "as a large server's: it echoes its one argument, prefixed with its own name, and does nothing else."
        )
        server.add_tool(make(name), name=name, description=description)

# ---------------------------------------------------------------------------
# The request log.

LOGGED_HEADERS = (
    "content-type",
    "accept",
    "mcp-method",
    "mcp-name",
    "mcp-protocol-version",
    "mcp-session-id",
    "x-envoy-auth-partial-body",
    "x-mcp-authz-decision-id",
    "x-mcp-authz-would-be",
    "x-mcp-authz-user",
    "x-mcp-authz-application",
    "x-mcp-authz-server",
)


def describe_message(msg: Any) -> dict[str, Any]:
    """The JSON-RPC facts of one message: method, id, and the tool/prompt name or resource uri."""
    if not isinstance(msg, dict):
        return {"jsonrpc_method": None}
    out: dict[str, Any] = {"jsonrpc_method": msg.get("method"), "jsonrpc_id": msg.get("id")}
    params = msg.get("params")
    if isinstance(params, dict):
        if isinstance(params.get("name"), str):
            out["name"] = params["name"]
        elif isinstance(params.get("uri"), str):
            out["name"] = params["uri"]
    return out


class RequestLog:
    """ASGI middleware: appends one JSON line per HTTP request to a file, flushed at once."""

    def __init__(self, app: Any, path: str | None) -> None:
        self.app = app
        self.file = open(path, "a", encoding="utf-8", buffering=1) if path else None  # noqa: SIM115
        self.lock = threading.Lock()
        self.seq = 0

    def write(self, entry: dict[str, Any]) -> None:
        if self.file is None:
            return
        with self.lock:
            self.seq += 1
            entry = {"seq": self.seq, **entry}
            self.file.write(json.dumps(entry, sort_keys=True) + "\n")
            self.file.flush()
            os.fsync(self.file.fileno())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        # Read the whole body, then replay it to the app.
        chunks: list[dict[str, Any]] = []
        body = b""
        while True:
            message = await receive()
            chunks.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers: dict[str, str] = {}
        for k, v in scope["headers"]:
            name = k.decode("latin-1").lower()
            value = v.decode("latin-1")
            if name == "authorization":
                headers[name] = value.split(" ", 1)[0]
            elif name in LOGGED_HEADERS:
                headers[name] = value
        entry: dict[str, Any] = {
            "http_method": scope["method"],
            "path": scope["path"],
            "query": scope.get("query_string", b"").decode("latin-1"),
            "headers": headers,
            "body_bytes": len(body),
            "jsonrpc_method": None,
        }
        if body:
            try:
                parsed = json.loads(body)
            except ValueError as e:
                entry["body_error"] = str(e)
            else:
                if isinstance(parsed, list):
                    entry["batch"] = [describe_message(m) for m in parsed]
                else:
                    entry.update(describe_message(parsed))
        self.write(entry)

        async def replay() -> dict[str, Any]:
            if chunks:
                return chunks.pop(0)
            return await receive()

        await self.app(scope, replay, send)


# ---------------------------------------------------------------------------


async def serve(args: argparse.Namespace) -> None:
    server = SERVERS[args.server](args.log_level.upper())
    add_extra_tools(server, args.extra_tools)

    @server.custom_route("/healthz", methods=["GET"])
    async def healthz(_: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    # DNS rebinding protection as the SDK sets it for 127.0.0.1, plus the names the mesh
    # tests send as Host (a sidecar passes the Service's name through unchanged).
    mesh_hosts = [h for name in SERVERS for h in (f"{name}.mcp.svc.cluster.local", f"{name}.mcp.example.com")]
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*", *mesh_hosts, *(f"{h}:*" for h in mesh_hosts)],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
    )
    app = RequestLog(
        server.streamable_http_app(json_response=args.json_response, host=args.host, transport_security=security),
        args.request_log,
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level=args.log_level, lifespan="on", timeout_graceful_shutdown=2)
    uv = uvicorn.Server(config)
    serving = asyncio.create_task(uv.serve(sockets=[sock]))
    # Bounded wait for uvicorn to be up (it binds nothing: the socket is ours).
    for _ in range(1000):
        if uv.started or serving.done():
            break
        await asyncio.sleep(0.01)
    if not uv.started:
        await serving  # raises what made it fail, if anything
        raise SystemExit("uvicorn did not start")
    line = {
        "event": "listening",
        "server": args.server,
        "host": args.host,
        "port": port,
        "url": f"http://{args.host}:{port}/mcp",
    }
    print(json.dumps(line), flush=True)
    await serving


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=sorted(SERVERS), required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 (default): an ephemeral port, printed on stdout")
    parser.add_argument("--request-log", help="append one JSON line per HTTP request to this file")
    parser.add_argument("--json-response", action="store_true", help="answer with JSON instead of SSE")
    parser.add_argument(
        "--extra-tools", type=int, default=0, metavar="N", help="also register N tools extra_tool_001 ... (default 0)"
    )
    parser.add_argument("--log-level", default="warning")
    parser.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="exit when stdin closes (the harness keeps a pipe open: if the test process dies, so does this server)",
    )
    args = parser.parse_args()
    if args.exit_on_stdin_eof:

        def watch_stdin() -> None:
            while sys.stdin.buffer.read(4096):
                pass
            os._exit(0)

        threading.Thread(target=watch_stdin, daemon=True).start()
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
