"""A real MCP client for the end-to-end tests: runs a scenario in one session, prints JSON.

Built on the MCP Python SDK 2.x: `mcp.client.streamable_http.streamable_http_client` and
`mcp.ClientSession` (the initialize handshake, protocol 2025-11-25).

Usage:
    python mcp_client.py URL --steps JSON [--token TOKEN] [--timeout SECONDS]
                         [--protocol handshake|discover]

- `URL`: the MCP endpoint, e.g. `http://127.0.0.1:10000/docs/mcp` (through Envoy) or
  `http://127.0.0.1:PORT/mcp` (the server itself).
- `--steps`: a JSON list (or `@FILE`, or `-` for stdin) of steps, run in order in one session:
      {"op": "list_tools"}
      {"op": "call_tool", "name": "get_document", "arguments": {"document_id": "titan-q1-strategy"}}
      {"op": "read_resource", "uri": "docs://titan/q1-strategy"}
      {"op": "get_prompt", "name": "executive_summary", "arguments": {"audience": "board"}}
      {"op": "list_resources"}, {"op": "list_prompts"}, {"op": "ping"}
- the bearer token: `--token`, else the environment variable `MCP_CLIENT_TOKEN` (the
  test harness uses the variable, so the token is not in the process list); none: no
  `Authorization` header.
- `--timeout`: the whole run, initialize included (default 20 s). Each request also has
  its own read timeout (`--request-timeout`, default 10 s).
- `--protocol`: how the session opens. `handshake` (default): `ClientSession.initialize()`,
  protocol 2025-11-25: POST initialize (sets `mcp-session-id`), POST
  notifications/initialized, GET (the SSE stream), the steps, DELETE; no `Mcp-Method` /
  `Mcp-Name` headers. `discover`: `ClientSession.discover()`, protocol 2026-07-28:
  POST server/discover then one POST per step, no session id, no GET/DELETE, each POST
  with `Mcp-Method` (and `Mcp-Name` for tools/call, resources/read, prompts/get).
  Either way `call_tool` may be followed by a `tools/list` (the SDK lists the tools
  to validate the result against the tool's output schema).

- `--oauth`: the httpx client gets the SDK's `mcp.client.auth.OAuthClientProvider` as its
  `auth=` handler (tokens and client information in memory: the token, if any, is its
  current access token), so the SDK's own discovery runs on a 401 (`resource_metadata` →
  Protected Resource Metadata → the authorization server's metadata → dynamic
  registration → the authorization URL) and its step-up on a 403 `insufficient_scope`. The
  redirect handler records the URL in `oauth.authorization_urls` (`url`, `origin`, `path`,
  `params`) and the callback handler stops the flow (`StopAtAuthorization`): no browser,
  no code exchange. `oauth.client_information` is what the registration gave.

Output: ONE JSON object on stdout, e.g. (a denied tool call through Envoy and mcp-authz):

    {"ok": false, "url": "...", "initialize": {"ok": true, "protocol_version": "2025-11-25",
       "server": "docs", "http_status": 200},
     "steps": [
       {"op": "call_tool", "name": "get_document", "ok": true, "http_status": 200,
        "result": {"text": "Project Titan Q1 strategy: ...", "is_error": false}},
       {"op": "call_tool", "name": "delete_document", "ok": false,
        "error": {"type": "MCPError", "message": "...", "code": -32003, "data": null,
                  "http_status": 403, "content_type": "application/json",
                  "www_authenticate": null, "body": "{\"jsonrpc\":\"2.0\",\"id\":3,...}"}}],
     "http": [{"method": "POST", "jsonrpc_method": "initialize", "status": 200, ...}, ...]}

`ok` is true when the session initialized and every step succeeded (a tool result with
`isError: true` is a success of the step with `result.is_error: true`). `http` lists every
HTTP exchange of the session (method, JSON-RPC method, status, and for a status >= 400
the `content-type`, `www-authenticate` and the first 2000 characters of the body).

Exit status: 0 the session initialized (whatever the steps gave: read `ok` and the steps),
2 the session could not initialize (`initialize.ok` false, `error` says why), 3 the global
timeout (`error.type` is `Timeout`), 4 bad usage (bad steps JSON).

How the 2.x client surfaces HTTP errors (mcp 2.3.0, `StreamableHTTPTransport._handle_post_request`):

- a response >= 400 to a request whose `content-type` is `application/json` and whose body
  is a JSON-RPC error: the SDK hands that error to the session, which raises
  `mcp.shared.exceptions.MCPError` with the body's `code`, `message` and `data` (the
  error's `id` is replaced by the request's). The HTTP status is NOT on the exception:
  this script takes it from the HTTP exchange (an httpx2 response hook) and puts it
  beside the error as `http_status`. So mcp-authz's 403 deny shows as
  `{"type": "MCPError", "code": <its code>, "message": <its message>, "http_status": 403}`.
- any other response >= 400 (e.g. a 401 with `WWW-Authenticate: Bearer ...` and a
  non-JSON-RPC body): the SDK synthesizes `MCPError(code=-32603 INTERNAL_ERROR,
  message="Server returned an error response")` (a 404 becomes -32601 before a session
  exists, -32600 "Session terminated" after); the status and `WWW-Authenticate` are again
  lost by the SDK and recovered here (`http_status: 401`, `www_authenticate: "Bearer ..."`).
  A 401/403 JSON-RPC body with `application/json` is surfaced as in the first case.
- the SDK does not retry, refresh a token or start an OAuth flow on 401 unless the
  httpx client was given an `auth=` handler (this script gives one only with `--oauth`).
- on `initialize`, either error makes `ClientSession.initialize()` raise, so the script
  exits 2 with `initialize.error` filled the same way.
- a connection error (nothing listening) fails the transport's task group: the script
  reports the innermost exception (e.g. `ConnectError`) and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.parse
from typing import Any

import anyio
import httpx2
from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from mcp.shared.exceptions import MCPError

STEP_METHODS = {
    "list_tools": "tools/list",
    "call_tool": "tools/call",
    "read_resource": "resources/read",
    "get_prompt": "prompts/get",
    "list_resources": "resources/list",
    "list_prompts": "prompts/list",
    "ping": "ping",
}

BODY_LIMIT = 2000


class Exchanges:
    """Every HTTP exchange of the session, recorded by an httpx2 response hook."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    async def on_response(self, response: httpx2.Response) -> None:
        request = response.request
        item: dict[str, Any] = {
            "method": request.method,
            "url": str(request.url),
            "status": response.status_code,
            "jsonrpc_method": None,
        }
        try:
            body = json.loads(request.content) if request.content else None
        except (ValueError, httpx2.RequestNotRead):
            body = None
        if isinstance(body, dict):
            item["jsonrpc_method"] = body.get("method")
            item["jsonrpc_id"] = body.get("id")
        if response.status_code >= 400:
            item["content_type"] = response.headers.get("content-type")
            item["www_authenticate"] = response.headers.get("www-authenticate")
            try:
                # Read now: the SDK reads it again from the cache (or never, for a non-JSON body).
                raw = await response.aread()
                item["body"] = raw.decode("utf-8", "replace")[:BODY_LIMIT]
            except httpx2.HTTPError as e:
                item["body_error"] = repr(e)
        self.items.append(item)

    def since(self, start: int) -> list[dict[str, Any]]:
        return self.items[start:]


class StopAtAuthorization(Exception):
    """Raised by the OAuth callback handler: the run stops at the authorization URL."""


class MemoryStorage:
    """The `TokenStorage` of `--oauth`: in memory, reported in `oauth`."""

    def __init__(self, token: str | None, oauth: dict[str, Any]) -> None:
        self.tokens = OAuthToken(access_token=token, token_type="Bearer") if token else None
        self.client_info: OAuthClientInformationFull | None = None
        self.oauth = oauth

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info
        self.oauth["client_information"] = client_info.model_dump(mode="json", exclude_none=True)


def oauth_provider(url: str, token: str | None, oauth: dict[str, Any]) -> OAuthClientProvider:
    async def redirect(authorization_url: str) -> None:
        parsed = urllib.parse.urlsplit(authorization_url)
        oauth["authorization_urls"].append(
            {
                "url": authorization_url,
                "origin": f"{parsed.scheme}://{parsed.netloc}",
                "path": parsed.path,
                "params": dict(urllib.parse.parse_qsl(parsed.query)),
            }
        )

    async def callback() -> Any:
        raise StopAtAuthorization("stopped at the authorization URL")

    return OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            client_name="mcp-authz e2e client",
            redirect_uris=["http://127.0.0.1:1/callback"],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=MemoryStorage(token, oauth),
        redirect_handler=redirect,
        callback_handler=callback,
    )


def innermost(exc: BaseException) -> BaseException:
    """The first leaf of an exception group (anyio task groups wrap transport errors)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def describe_error(exc: BaseException, exchanges: list[dict[str, Any]], method: str | None) -> dict[str, Any]:
    exc = innermost(exc)
    err: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, MCPError):
        err["code"] = exc.code
        err["message"] = exc.message
        err["data"] = exc.data
    # The HTTP status the SDK dropped: the failed exchange of this step's method.
    failed = [x for x in exchanges if x["status"] >= 400 and (method is None or x["jsonrpc_method"] == method)]
    if not failed:
        failed = [x for x in exchanges if x["status"] >= 400]
    if failed:
        last = failed[-1]
        err["http_status"] = last["status"]
        for key in ("content_type", "www_authenticate", "body"):
            err[key] = last.get(key)
    return err


def text_of(contents: list[Any]) -> str:
    parts = []
    for c in contents:
        text = getattr(c, "text", None)
        if text is None:
            text = getattr(getattr(c, "content", None), "text", None)  # a prompt message
        if text is not None:
            parts.append(text)
    return "\n".join(parts)


async def run_step(session: ClientSession, step: dict[str, Any], request_timeout: float) -> dict[str, Any]:
    op = step["op"]
    if op == "list_tools":
        r = await session.list_tools()
        return {"tools": sorted(t.name for t in r.tools)}
    if op == "call_tool":
        r = await session.call_tool(step["name"], step.get("arguments") or {})
        out: dict[str, Any] = {"text": text_of(r.content), "is_error": bool(r.is_error)}
        if r.structured_content is not None:
            out["structured"] = r.structured_content
        return out
    if op == "read_resource":
        r = await session.read_resource(step["uri"])
        return {"text": text_of(r.contents)}
    if op == "get_prompt":
        r = await session.get_prompt(step["name"], step.get("arguments") or {})
        return {"text": text_of(r.messages)}
    if op == "list_resources":
        r = await session.list_resources()
        return {"resources": sorted(str(x.uri) for x in r.resources)}
    if op == "list_prompts":
        r = await session.list_prompts()
        return {"prompts": sorted(p.name for p in r.prompts)}
    if op == "ping":
        await session.send_ping()
        return {}
    raise ValueError(f"unknown step op {op!r}")


async def run(args: argparse.Namespace, steps: list[dict[str, Any]], report: dict[str, Any]) -> int:
    exchanges = Exchanges()
    report["http"] = exchanges.items
    headers = {}
    token = args.token if args.token is not None else os.environ.get("MCP_CLIENT_TOKEN")
    auth = None
    if args.oauth:
        report["oauth"] = {"authorization_urls": [], "client_information": None}
        auth = oauth_provider(args.url, token or None, report["oauth"])
    elif token:
        headers["authorization"] = f"Bearer {token}"
    if args.host_header:
        # As a client in a mesh sends it: the Service's name, not the address dialled.
        headers["host"] = args.host_header
    http = httpx2.AsyncClient(
        headers=headers,
        timeout=httpx2.Timeout(args.request_timeout),
        event_hooks={"response": [exchanges.on_response]},
        auth=auth,
    )
    report["initialize"] = {"ok": False}
    try:
        async with http, streamable_http_client(args.url, http_client=http) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=args.request_timeout) as session:
                opening = "initialize" if args.protocol == "handshake" else "server/discover"
                try:
                    if args.protocol == "handshake":
                        await session.initialize()
                    else:
                        await session.discover()
                except Exception as e:  # noqa: BLE001 - every failure is reported
                    report["initialize"]["error"] = describe_error(e, exchanges.since(0), opening)
                    report["error"] = report["initialize"]["error"]
                    return 2
                info = session.server_info
                report["initialize"] = {
                    "ok": True,
                    "method": opening,
                    "protocol_version": session.protocol_version,
                    "server": info.name if info is not None else None,
                    "http_status": next(
                        (x["status"] for x in exchanges.items if x["jsonrpc_method"] == opening), None
                    ),
                }
                for step in steps:
                    method = STEP_METHODS.get(step.get("op"))
                    start = len(exchanges.items)
                    entry: dict[str, Any] = {k: v for k, v in step.items() if k in ("op", "name", "uri")}
                    try:
                        entry["result"] = await run_step(session, step, args.request_timeout)
                        entry["ok"] = True
                    except Exception as e:  # noqa: BLE001 - a failed step is a result
                        entry["ok"] = False
                        entry["error"] = describe_error(e, exchanges.since(start), method)
                    posted = [x for x in exchanges.since(start) if x["jsonrpc_method"] == method]
                    if posted:
                        entry["http_status"] = posted[-1]["status"]
                    report["steps"].append(entry)
    except Exception as e:  # noqa: BLE001 - transport failures (connection refused, ...)
        if not report["initialize"]["ok"]:
            opening = "initialize" if args.protocol == "handshake" else "server/discover"
            report["initialize"]["error"] = describe_error(e, exchanges.since(0), opening)
            report["error"] = report["initialize"]["error"]
            return 2
        report["error"] = describe_error(e, exchanges.since(0), None)
        return 0
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description="Run MCP steps in one session and print JSON.")
    parser.add_argument("url")
    parser.add_argument("--steps", default="[]", help="JSON list of steps, @FILE, or - for stdin")
    parser.add_argument("--token", help="bearer token (default: $MCP_CLIENT_TOKEN)")
    parser.add_argument("--host-header", help="the Host (:authority) to send instead of the URL's")
    parser.add_argument("--timeout", type=float, default=20.0, help="the whole run, in seconds")
    parser.add_argument("--request-timeout", type=float, default=10.0, help="one request, in seconds")
    parser.add_argument(
        "--protocol",
        choices=["handshake", "discover"],
        default="handshake",
        help="handshake: initialize (2025-11-25, a session); discover: server/discover (2026-07-28, stateless)",
    )
    parser.add_argument(
        "--oauth",
        action="store_true",
        help="the SDK's OAuthClientProvider (discovery, registration) instead of a bearer header; stops at the authorization URL",
    )
    args = parser.parse_args()

    report: dict[str, Any] = {"ok": False, "url": args.url, "steps": []}
    lock = threading.Lock()
    printed = False

    def emit(code: int) -> None:
        nonlocal printed
        with lock:
            if printed:
                return
            printed = True
            sys.stdout.write(json.dumps(report, default=str) + "\n")
            sys.stdout.flush()
        os._exit(code)  # noqa: SLF001 - never wait for stuck transport tasks

    try:
        raw = args.steps
        if raw == "-":
            raw = sys.stdin.read()
        elif raw.startswith("@"):
            with open(raw[1:], encoding="utf-8") as f:
                raw = f.read()
        steps = json.loads(raw)
        if not isinstance(steps, list) or not all(isinstance(s, dict) and s.get("op") in STEP_METHODS for s in steps):
            raise ValueError(f"steps must be a list of objects with op in {sorted(STEP_METHODS)}")
    except (OSError, ValueError) as e:
        report["error"] = {"type": "Usage", "message": str(e)}
        emit(4)
        return

    # Belt and braces: a watchdog thread ends the process even if the event loop is stuck.
    def watchdog() -> None:
        report["error"] = {"type": "Timeout", "message": f"no result within {args.timeout + 5} s (watchdog)"}
        emit(3)

    timer = threading.Timer(args.timeout + 5, watchdog)
    timer.daemon = True
    timer.start()

    started = time.monotonic()

    async def bounded() -> int:
        with anyio.move_on_after(args.timeout) as scope:
            return await run(args, steps, report)
        if scope.cancelled_caught:
            report["error"] = {"type": "Timeout", "message": f"no result within {args.timeout} s"}
        return 3

    code = anyio.run(bounded)
    report["elapsed_ms"] = round((time.monotonic() - started) * 1000)
    report["ok"] = code == 0 and report["initialize"].get("ok", False) and all(s["ok"] for s in report["steps"])
    report["ok"] = bool(report["ok"]) and "error" not in report
    emit(code)


if __name__ == "__main__":
    main()
