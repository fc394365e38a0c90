// A real TypeScript MCP client for the end-to-end tests: runs a scenario in one session,
// prints ONE JSON object. Built on the TypeScript MCP SDK (`@modelcontextprotocol/sdk`,
// pinned in package.json): `Client` + `StreamableHTTPClientTransport`.
//
// Usage:
//   node client.mjs URL --steps JSON [--timeout SECONDS] [--oauth] [--no-terminate]
//
// - `URL`: the MCP endpoint, e.g. `http://127.0.0.1:10000/docs/mcp` (through Envoy).
// - `--steps`: a JSON list (or `@FILE`) of steps, run in order in one session, as
//   tests/e2e/mcp_client.py takes them:
//       {"op": "list_tools"}, {"op": "call_tool", "name": "...", "arguments": {...}},
//       {"op": "read_resource", "uri": "..."}, {"op": "list_resources"}, {"op": "list_prompts"},
//       {"op": "get_prompt", "name": "...", "arguments": {...}}, {"op": "ping"}
// - the bearer token: the environment variable `MCP_CLIENT_TOKEN` (never argv). Without
//   `--oauth` it is sent as `Authorization: Bearer` through `requestInit.headers`.
// - `--oauth`: the transport gets an `OAuthClientProvider` instead (client information and
//   tokens in memory; the token of `MCP_CLIENT_TOKEN`, if any, is its current access token),
//   so the SDK's own discovery runs on a 401 (`resource_metadata` → Protected Resource
//   Metadata → the authorization server's metadata → dynamic registration → the
//   authorization URL) and its step-up on a 403 `insufficient_scope`.
//   `redirectToAuthorization(url)` records the URL in `oauth.authorization_urls` and the
//   run stops there (the SDK raises `UnauthorizedError`): no browser, no code exchange.
// - after the steps the session is ended with `transport.terminateSession()` (the DELETE)
//   unless `--no-terminate`; its outcome is `terminate`.
//
// Output: {"ok", "url", "initialize": {"ok", "protocol_version", "server", "http_status"},
//   "steps": [{"op", "name"?, "ok", "result" | "error", "http_status"?}], "terminate",
//   "oauth": {...} (with --oauth), "transport_errors": [...], "http": [...]}
//
// How the TS SDK (1.32) surfaces HTTP errors: a response >= 400 to a POST becomes
// `StreamableHTTPError(status, "Error POSTing to endpoint: <body>")`: it does NOT read a
// JSON-RPC error in the body (the Python SDK does). This script recovers it from the
// recorded exchange: `error.code`, `error.message`, `error.data` are the body's JSON-RPC
// error when there is one (else the exception's), `error.sdk_code` / `error.sdk_message`
// what the SDK raised, plus `http_status`, `content_type`, `www_authenticate`, `body`.
// A JSON-RPC error in a 200 answer is the SDK's `McpError` (code, message, data).
//
// Exit status: 0 the session initialized (read `ok` and the steps), 2 it could not
// initialize, 3 the global timeout, 4 bad usage.

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const STEP_METHODS = {
    list_tools: 'tools/list',
    call_tool: 'tools/call',
    read_resource: 'resources/read',
    get_prompt: 'prompts/get',
    list_resources: 'resources/list',
    list_prompts: 'prompts/list',
    ping: 'ping'
};
const BODY_LIMIT = 2000;

function parseArgs(argv) {
    const args = { url: null, steps: '[]', timeout: 20, oauth: false, terminate: true };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        if (a === '--steps') args.steps = argv[++i];
        else if (a === '--timeout') args.timeout = Number(argv[++i]);
        else if (a === '--oauth') args.oauth = true;
        else if (a === '--no-terminate') args.terminate = false;
        else if (a.startsWith('--')) throw new Error(`unknown option \`${a}\``);
        else if (args.url === null) args.url = a;
        else throw new Error(`unexpected argument \`${a}\``);
    }
    if (args.url === null) throw new Error('missing URL');
    if (!(args.timeout > 0)) throw new Error('--timeout must be a positive number of seconds');
    return args;
}

const report = { ok: false, url: null, steps: [], http: [], transport_errors: [] };
let printed = false;
function emit(code) {
    if (printed) return;
    printed = true;
    process.stdout.write(JSON.stringify(report) + '\n', () => process.exit(code));
}

// Every HTTP exchange: the transport's and the OAuth discovery's (both use this fetch).
async function recordingFetch(input, init) {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    const method = (init?.method ?? (input instanceof Request ? input.method : 'GET')).toUpperCase();
    const item = { method, url, status: null, jsonrpc_method: null };
    if (typeof init?.body === 'string') {
        try {
            const body = JSON.parse(init.body);
            if (body && !Array.isArray(body) && typeof body === 'object') {
                item.jsonrpc_method = body.method ?? null;
                item.jsonrpc_id = body.id ?? null;
            }
        } catch {
            // not JSON (a form body of the OAuth requests)
        }
    }
    report.http.push(item);
    let response;
    try {
        response = await fetch(input, init);
    } catch (e) {
        item.error = String(e?.cause ?? e);
        throw e;
    }
    item.status = response.status;
    if (response.status >= 400 || url.includes('/.well-known/') || method === 'DELETE') {
        item.content_type = response.headers.get('content-type');
        item.www_authenticate = response.headers.get('www-authenticate');
        try {
            item.body = (await response.clone().text()).slice(0, BODY_LIMIT);
        } catch (e) {
            item.body_error = String(e);
        }
    }
    return response;
}

function describeError(e, exchanges, method) {
    const err = { type: e?.constructor?.name ?? typeof e, message: String(e?.message ?? e) };
    if (e && typeof e === 'object' && 'code' in e) err.code = e.code;
    if (e && typeof e === 'object' && 'data' in e) err.data = e.data ?? null;
    const failed = exchanges.filter(x => x.status >= 400 && (method === null || x.jsonrpc_method === method));
    const last = (failed.length ? failed : exchanges.filter(x => x.status >= 400)).at(-1);
    if (last) {
        err.http_status = last.status;
        err.content_type = last.content_type ?? null;
        err.www_authenticate = last.www_authenticate ?? null;
        err.body = last.body ?? null;
        if (err.type === 'StreamableHTTPError') {
            err.sdk_code = err.code;
            err.sdk_message = err.message;
            delete err.code;
            try {
                const body = JSON.parse(last.body ?? '');
                if (body?.error && typeof body.error === 'object') {
                    err.code = body.error.code;
                    err.message = body.error.message;
                    err.data = body.error.data ?? null;
                }
            } catch {
                // not a JSON-RPC body (e.g. a 401 challenge)
            }
        }
    }
    return err;
}

function textOf(contents) {
    return (contents ?? [])
        .map(c => c?.text ?? c?.content?.text)
        .filter(t => typeof t === 'string')
        .join('\n');
}

async function runStep(client, step) {
    switch (step.op) {
        case 'list_tools':
            return { tools: (await client.listTools()).tools.map(t => t.name).sort() };
        case 'call_tool': {
            const r = await client.callTool({ name: step.name, arguments: step.arguments ?? {} });
            const out = { text: textOf(r.content), is_error: Boolean(r.isError) };
            if (r.structuredContent !== undefined) out.structured = r.structuredContent;
            return out;
        }
        case 'read_resource':
            return { text: textOf((await client.readResource({ uri: step.uri })).contents) };
        case 'get_prompt':
            return {
                text: textOf((await client.getPrompt({ name: step.name, arguments: step.arguments ?? {} })).messages)
            };
        case 'list_resources':
            return { resources: (await client.listResources()).resources.map(r => r.uri).sort() };
        case 'list_prompts':
            return { prompts: (await client.listPrompts()).prompts.map(p => p.name).sort() };
        case 'ping':
            await client.ping();
            return {};
        default:
            throw new Error(`unknown step op \`${step.op}\``);
    }
}

// An OAuth client kept in memory: what the SDK's flow asks and saves, and where it would
// send the user.
function memoryProvider(token, oauth) {
    let clientInformation;
    let tokens = token ? { access_token: token, token_type: 'Bearer' } : undefined;
    let verifier;
    return {
        get redirectUrl() {
            return 'http://127.0.0.1:1/callback';
        },
        get clientMetadata() {
            return {
                client_name: 'mcp-authz e2e client',
                redirect_uris: ['http://127.0.0.1:1/callback'],
                grant_types: ['authorization_code', 'refresh_token'],
                response_types: ['code'],
                token_endpoint_auth_method: 'none'
            };
        },
        clientInformation: () => clientInformation,
        saveClientInformation: info => {
            clientInformation = info;
            oauth.client_information = info;
        },
        tokens: () => tokens,
        saveTokens: t => {
            tokens = t;
        },
        redirectToAuthorization: url => {
            const params = Object.fromEntries(url.searchParams.entries());
            oauth.authorization_urls.push({ url: url.href, origin: url.origin, path: url.pathname, params });
        },
        saveCodeVerifier: v => {
            verifier = v;
        },
        codeVerifier: () => verifier,
        invalidateCredentials: scope => {
            oauth.invalidated.push(scope);
            if (scope === 'all' || scope === 'tokens') tokens = undefined;
            if (scope === 'all' || scope === 'client') clientInformation = undefined;
        }
    };
}

async function run(args, steps) {
    const token = process.env.MCP_CLIENT_TOKEN || null;
    const options = { fetch: recordingFetch };
    if (args.oauth) {
        report.oauth = { authorization_urls: [], client_information: null, invalidated: [] };
        options.authProvider = memoryProvider(token, report.oauth);
    } else if (token) {
        options.requestInit = { headers: { authorization: `Bearer ${token}` } };
    }
    const transport = new StreamableHTTPClientTransport(new URL(args.url), options);
    const client = new Client({ name: 'mcp-authz-e2e-ts', version: '1.0.0' });
    // The transport reports a failed POST both here and to the request that sent it: an
    // error that a step (or the connect) also raised is that step's, not an extra one.
    const raised = new Set();
    const seen = [];
    client.onerror = e => seen.push(e);
    report.initialize = { ok: false };
    try {
        await client.connect(transport, { timeout: args.timeout * 1000 });
    } catch (e) {
        report.initialize.error = describeError(e, report.http, 'initialize');
        report.error = report.initialize.error;
        await client.close().catch(() => {});
        return 2;
    }
    const info = client.getServerVersion();
    report.initialize = {
        ok: true,
        protocol_version: transport.protocolVersion ?? null,
        server: info?.name ?? null,
        session_id: Boolean(transport.sessionId),
        http_status: report.http.find(x => x.jsonrpc_method === 'initialize')?.status ?? null
    };
    for (const step of steps) {
        const method = STEP_METHODS[step.op];
        const start = report.http.length;
        const entry = {};
        for (const k of ['op', 'name', 'uri']) if (k in step) entry[k] = step[k];
        try {
            entry.result = await runStep(client, step);
            entry.ok = true;
        } catch (e) {
            raised.add(e);
            entry.ok = false;
            entry.error = describeError(e, report.http.slice(start), method);
        }
        const posted = report.http.slice(start).filter(x => x.jsonrpc_method === method);
        if (posted.length) entry.http_status = posted.at(-1).status;
        report.steps.push(entry);
    }
    if (args.terminate) {
        const start = report.http.length;
        try {
            await transport.terminateSession();
            report.terminate = { ok: true };
        } catch (e) {
            report.terminate = { ok: false, error: describeError(e, report.http.slice(start), null) };
        }
        const deleted = report.http.slice(start).filter(x => x.method === 'DELETE');
        if (deleted.length) report.terminate.http_status = deleted.at(-1).status;
    }
    await client.close().catch(() => {});
    for (const e of seen) if (!raised.has(e)) report.transport_errors.push(describeError(e, [], null));
    return 0;
}

async function main() {
    let args;
    let steps;
    try {
        args = parseArgs(process.argv.slice(2));
        report.url = args.url;
        let raw = args.steps;
        if (raw.startsWith('@')) raw = (await import('node:fs')).readFileSync(raw.slice(1), 'utf8');
        steps = JSON.parse(raw);
        if (!Array.isArray(steps) || !steps.every(s => s && typeof s === 'object' && s.op in STEP_METHODS)) {
            throw new Error(`steps must be a list of objects with op in ${Object.keys(STEP_METHODS).sort().join(', ')}`);
        }
    } catch (e) {
        report.error = { type: 'Usage', message: String(e?.message ?? e) };
        emit(4);
        return;
    }
    const timer = setTimeout(() => {
        report.error = { type: 'Timeout', message: `no result within ${args.timeout} s` };
        emit(3);
    }, args.timeout * 1000);
    const started = Date.now();
    const code = await run(args, steps);
    clearTimeout(timer);
    report.elapsed_ms = Date.now() - started;
    report.ok =
        code === 0 &&
        report.initialize.ok &&
        report.steps.every(s => s.ok) &&
        (report.terminate?.ok ?? true) &&
        report.transport_errors.length === 0 &&
        !('error' in report);
    emit(code);
}

main().catch(e => {
    report.error = { type: e?.constructor?.name ?? 'Error', message: String(e?.stack ?? e) };
    emit(2);
});
