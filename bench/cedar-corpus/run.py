#!/usr/bin/env python3
"""Run Cedar's integration corpus against a running `mcp-authz serve`, over AuthZEN.

Usage:
    python3 bench/cedar-corpus/run.py CHECKOUT [--binary target/release/mcp-authz]
        [--json summary.json] [--jsonl requests.jsonl] [--time-limit SECS] ...

CHECKOUT is a checkout (or `git archive`) of github.com/cedar-policy/cedar-integration-tests.
Its hand-written tests (`tests/**/*.json`) and its generated corpus (`corpus-tests/*.json`,
or `corpus-tests.tar.gz`, unpacked into the work directory when not unpacked already) are run.
`bench/cedar-corpus/mapping` holds more tests in the same format (`--include handwritten`)
for mapping questions the corpus does not ask; their expected answers are written by hand.

For every test whose policies validate (`shouldValidate`), the test's policy set is served
by one `mcp-authz serve` process: the policies as `policies.cedar`, the human-format schema
as `schema.cedarschema`, the entities as `entities.json`, in a policy directory laid out as
a Kubernetes ConfigMap (top-level links into `..data`, which is swapped atomically), then
loaded with the admin `POST /v1/reload` (`--mode restart` starts a server per test instead).
Every request of the test is sent as one AuthZEN evaluation, `POST /access/v1/evaluation`
with `"options": {"explain": true}`:

    principal -> subject {type, id}     action -> action.name = the full Cedar uid
    resource  -> resource {type, id}    context -> context (Cedar's JSON, as the test has it)

and compared with Cedar's expected answer. Each request is one of:

- agree: the same decision and the same determining policies (Cedar's `policyN` is the
  N-th policy of the file; ours is `policies.cedar:N`, or its `@id`), compared as sets;
- disagree: another decision, or other determining policies; also a deny decided before
  any evaluation (no principal evaluated) where Cedar allows, and an evaluation of another
  principal than the one sent;
- refused: a 400 (or another HTTP error), a policy set the server would not load, a
  request the mapping cannot express, or a deny decided before any evaluation where Cedar
  denies too (nothing was evaluated, so it is not counted as agreement).

Known divergences being fixed are tagged from the request's own features, so that the
summary says which disagreements and refusals each one explains.

Python 3.11 standard library only. Everything listens on 127.0.0.1, on ports the server
picks (port 0) and reports in its log.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

POLICY_FILE = "policies.cedar"
SCHEMA_FILE = "schema.cedarschema"
ENTITIES_FILE = "entities.json"

# Divergences found in earlier runs (all fixed since; kept to recognise a regression) and those found
# by this script. Each is recognised from the answer (its refusal names it) together
# with the request feature of the same name (`features_of`).
KNOWN = {
    "empty-entity-id": "an entity id `\"\"` (subject or resource) is a 400 on AuthZEN",
    "cedar-builtin-type-names": "the schema spells built-in types as `__cedar::...`; "
    "the context is refused before evaluation",
    "action-spelling": "an action id that Cedar prints with escapes (`'`, characters that are "
    "not printable): the full uid in the plain spelling is refused",
    "mcp-context-names": "the context has a name of the MCP profile "
    "(`agent`, `application`, `user`, `server`, `scopes`, `claims`) outside the `Mcp` namespace",
    "case-variant-keys": "the context has, at some depth, two attribute names that differ only "
    "in case (`R` and `r`); AuthZEN's strict JSON reader refuses the body",
}
# Other request features, counted so that the summary says which mapping questions the
# corpus exercised.
FEATURES = {
    "id-quote-or-backslash": "a principal or resource id with `\"` or `\\`",
    "id-not-printable": "a principal or resource id with a character that is not printable",
    "action-not-ascii": "a non-ASCII action id",
    "namespaced": "the action (and its types) in a namespace",
    "context-entity": "an entity reference (`__entity`) in the context",
    "context-extension": "an extension value (`__extn`) in the context",
    "application-subject": "a principal type whose last segment is `Application` (any case)",
    "mcp-namespace": "the action in the `Mcp` namespace (the MCP profile applies)",
}
MCP_CONTEXT_NAMES = {"agent", "application", "user", "server", "scopes", "claims"}


class SetupError(Exception):
    """The run cannot start (bad checkout, binary, server that does not come up)."""


# ----------------------------------------------------------------------------
# Cedar spellings


def cedar_string(s: str, spelling: str = "plain") -> str:
    """`s` as the body of a Cedar string literal. `plain`: only what the grammar
    requires escaped (`"` and `\\`), the way a client writes it; `cedar`: the way Cedar
    prints an entity uid (Rust's `escape_debug`: also `'`, control characters,
    characters that are not printable, and a leading combining mark, as escapes)."""
    out = []
    for i, ch in enumerate(s):
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif spelling == "plain":
            out.append(ch)
        elif ch in "\n\r\t\0'":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t", "\0": "\\0", "'": "\\'"}[ch])
        elif not ch.isprintable() or (i == 0 and unicodedata.category(ch) in ("Mn", "Me")):
            out.append("\\u{%x}" % ord(ch))
        else:
            out.append(ch)
    return "".join(out)


def full_uid(ty: str, eid: str, spelling: str = "plain") -> str:
    return f'{ty}::"{cedar_string(eid, spelling)}"'


_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", "0": "\0", "'": "'", '"': '"'}


def unescape_cedar(body: str) -> str:
    """The value of a Cedar string literal's body."""
    out, i = [], 0
    while i < len(body):
        ch = body[i]
        if ch != "\\" or i + 1 == len(body):
            out.append(ch)
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt == "u" and body[i + 2 : i + 3] == "{":
            end = body.index("}", i)
            out.append(chr(int(body[i + 3 : end], 16)))
            i = end + 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def split_policies(text: str) -> list[str]:
    """The policies of a Cedar policy file, in source order, comments removed: the
    file split at each `;` outside string literals."""
    policies, cur, i, n = [], [], 0, len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            cur.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif ch == ";":
            policies.append("".join(cur))
            cur = []
            i += 1
        else:
            cur.append(ch)
            i += 1
    if "".join(cur).strip():
        policies.append("".join(cur))
    return policies


_ANNOTATION = re.compile(r'\s*@\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\(\s*"((?:[^"\\]|\\.)*)"\s*\))?')


def stable_ids(text: str) -> list[str]:
    """mcp-authz's id of each policy of `text` (file `policies.cedar`), in Cedar's
    `policyN` order: its `@id` annotation, else `policies.cedar:N`."""
    ids = []
    for n, policy in enumerate(split_policies(text)):
        ident, pos = None, 0
        while m := _ANNOTATION.match(policy, pos):
            if m.group(1) == "id":
                ident = unescape_cedar(m.group(2) or "")
            pos = m.end()
        ids.append(ident if ident is not None else f"{POLICY_FILE}:{n}")
    return ids


_POLICY_IN_ERROR = re.compile(r"policy `((?:[^`])*)`")


# ----------------------------------------------------------------------------
# The corpus


@dataclass
class Test:
    name: str  # path of the test JSON, relative to its root
    root: Path  # where the paths in the test are relative to
    data: dict

    def file(self, key: str) -> Path | None:
        rel = self.data.get(key)
        return self.root / rel if rel else None


def find_tests(checkout: Path, work: Path, include: str) -> tuple[list[Test], dict]:
    """The tests of a checkout, and facts about the snapshot."""
    if not checkout.is_dir():
        raise SetupError(f"`{checkout}` is not a directory")
    facts: dict = {"checkout": str(checkout)}
    try:
        facts["commit"] = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        facts["commit"] = None
    tests: list[Test] = []
    if include in ("all", "handwritten"):
        for f in sorted(glob.glob(str(checkout / "tests" / "**" / "*.json"), recursive=True)):
            if f.endswith(".entities.json"):
                continue
            data = json.loads(Path(f).read_text())
            # Entity data and other JSON beside the tests is not a test.
            if isinstance(data, dict) and "requests" in data:
                tests.append(Test(os.path.relpath(f, checkout), checkout, data))
    if include in ("all", "corpus"):
        tarball = checkout / "corpus-tests.tar.gz"
        if tarball.is_file():
            facts["corpus_tarball_sha256"] = hashlib.sha256(tarball.read_bytes()).hexdigest()
        if (checkout / "corpus-tests").is_dir():
            root = checkout
        elif tarball.is_file():
            root = work / "corpus"
            root.mkdir(parents=True, exist_ok=True)
            with tarfile.open(tarball) as tar:
                tar.extractall(root, filter="data")
        else:
            raise SetupError(f"`{checkout}` has neither `corpus-tests/` nor `corpus-tests.tar.gz`")
        for f in sorted(glob.glob(str(root / "corpus-tests" / "*.json"))):
            if f.endswith(".entities.json"):
                continue
            rel = os.path.relpath(f, root)
            tests.append(Test(rel, root, json.loads(Path(f).read_text())))
    if not tests:
        raise SetupError(f"no tests found under `{checkout}`")
    return tests, facts


# ----------------------------------------------------------------------------
# The server


def listening(line: str) -> tuple[str, str] | None:
    """(listener, address) of a JSON `listening` log line."""
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    if not isinstance(rec, dict):
        return None
    # The fields are flattened into the record, or (other subscriber settings) nested.
    fields = rec.get("fields") if isinstance(rec.get("fields"), dict) else rec
    if fields.get("message") == "listening":
        return fields.get("listener"), fields.get("addr")
    return None


class Server:
    """One `mcp-authz serve` on 127.0.0.1 ephemeral ports, its policy directory laid
    out as a ConfigMap so that a whole test's files are swapped in one rename."""

    def __init__(self, binary: Path, work: Path, timeout: float):
        self.binary = binary
        self.work = work
        self.timeout = timeout
        self.dir = work / "policies"
        self.proc: subprocess.Popen | None = None
        self.http: tuple[str, int] | None = None
        self.admin: tuple[str, int] | None = None
        self.conn: http.client.HTTPConnection | None = None
        self.admin_conn: http.client.HTTPConnection | None = None
        self.generation_dir: Path | None = None
        self.swaps = 0
        self.starts = 0
        self.log_path = work / "serve.log"
        self.config = work / "serve.toml"
        work.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.config.write_text(
            "\n".join(
                [
                    f"policies = {json.dumps(str(self.dir))}",
                    'grpc_listen = "127.0.0.1:0"',
                    'http_listen = "127.0.0.1:0"',
                    'admin_listen = "127.0.0.1:0"',
                    "[log]",
                    'format = "json"',
                    'level = "info"',
                    "[reload]",
                    "poll_interval_secs = 0",
                    # Decisions are made, not looked up: every request is evaluated.
                    "[cache]",
                    "enabled = false",
                    "[decision_log]",
                    "enabled = false",
                    # Outside the `Mcp` namespace a lone subject decides anyway; inside it,
                    # Cedar's corpus has no application to name.
                    "[decisions]",
                    "allow_user_only = true",
                    "",
                ]
            )
        )

    # -- the policy directory

    def install(self, policies: str, schema: str, entities: str) -> None:
        """Write a test's files into a new directory and swap `..data` to it."""
        self.swaps += 1
        gen = self.dir / f"..test_{self.swaps}"
        gen.mkdir(parents=True)
        (gen / POLICY_FILE).write_text(policies)
        (gen / SCHEMA_FILE).write_text(schema)
        (gen / ENTITIES_FILE).write_text(entities)
        tmp = self.dir / "..data_tmp"
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(gen.name, tmp)
        os.replace(tmp, self.dir / "..data")
        for name in (POLICY_FILE, SCHEMA_FILE, ENTITIES_FILE):
            link = self.dir / name
            if not link.is_symlink():
                os.symlink(f"..data/{name}", link)
        if self.generation_dir is not None:
            shutil.rmtree(self.generation_dir, ignore_errors=True)
        self.generation_dir = gen

    # -- the process

    def start(self) -> str | None:
        """Start the server on the installed files: None, or why it did not start
        (its policies refused)."""
        self.starts += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_AUTHZ_")}
        env.pop("RUST_LOG", None)
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(self.binary), "serve", "--config", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.work,
        )
        log.close()
        deadline = time.monotonic() + self.timeout
        self.http = self.admin = None
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            for line in text.splitlines():
                got = listening(line)
                if got and got[0] == "HTTP":
                    self.http = split_addr(got[1])
                elif got and got[0] == "admin":
                    self.admin = split_addr(got[1])
            if self.proc.poll() is not None:
                self.proc = None
                return "the server exited: " + last_error(text)
            if self.http and self.admin:
                status, _ = self.get("/readyz")
                if status == 200:
                    return None
            time.sleep(0.02)
        self.stop()
        raise SetupError(f"mcp-authz did not become ready in {self.timeout:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        for c in (self.conn, self.admin_conn):
            if c is not None:
                c.close()
        self.conn = self.admin_conn = None
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- HTTP

    def _request(self, admin: bool, method: str, path: str, body: bytes | None):
        for attempt in (0, 1):
            conn = self.admin_conn if admin else self.conn
            if conn is None:
                host, port = self.admin if admin else self.http
                conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
                if admin:
                    self.admin_conn = conn
                else:
                    self.conn = conn
            try:
                headers = {"content-type": "application/json"} if body is not None else {}
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                return resp.status, resp.read()
            except (http.client.HTTPException, ConnectionError) as e:
                # The server may close an idle keep-alive connection: one new try.
                conn.close()
                if admin:
                    self.admin_conn = None
                else:
                    self.conn = None
                if attempt == 1 or not self.alive():
                    raise ConnectionError(str(e)) from e
        raise AssertionError("unreachable")

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            return self._request(False, "GET", path, None)
        except (OSError, ConnectionError):
            return 0, b""

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        status, raw = self._request(False, "POST", path, json.dumps(body, ensure_ascii=False).encode())
        return status, parse_json(raw)

    def reload(self) -> tuple[int, dict]:
        status, raw = self._request(True, "POST", "/v1/reload", b"")
        return status, parse_json(raw)


def split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host, int(port)


def parse_json(raw: bytes) -> dict:
    try:
        value = json.loads(raw)
    except ValueError:
        return {"unparsed": raw[:500].decode(errors="replace")}
    return value if isinstance(value, dict) else {"value": value}


def last_error(log: str) -> str:
    """The policy problems (or last lines) of a server that exited."""
    problems = []
    for line in log.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            if line.strip():
                problems.append(line.strip())
            continue
        f = rec.get("fields") if isinstance(rec.get("fields"), dict) else rec
        if rec.get("level") in ("ERROR", "WARN"):
            problems.append(f.get("problem") or f.get("message") or line)
    return "; ".join(problems[-5:])[:2000]


# ----------------------------------------------------------------------------
# One request


@dataclass
class Outcome:
    cls: str  # agree | disagree | refused
    why: str  # the sub-class
    detail: str = ""
    tags: list[str] = field(default_factory=list)
    sent: dict | None = None
    response: dict | None = None


def _keys_differing_in_case(value) -> bool:
    if isinstance(value, dict):
        folded = {k.casefold() for k in value}
        return len(folded) < len(value) or any(_keys_differing_in_case(v) for v in value.values())
    if isinstance(value, list):
        return any(_keys_differing_in_case(v) for v in value)
    return False


def features_of(test_schema: str, req: dict) -> list[str]:
    """The known-divergence and other features of a request (see `KNOWN`, `FEATURES`)."""
    tags = []
    p, r, a = req.get("principal") or {}, req.get("resource") or {}, req.get("action") or {}
    ids = [str(e.get("id", "")) for e in (p, r)]
    ctx = req.get("context")
    ctx_text = json.dumps(ctx)
    if "" in ids:
        tags.append("empty-entity-id")
    if "__cedar::" in test_schema:
        tags.append("cedar-builtin-type-names")
    aid = str(a.get("id", ""))
    if cedar_string(aid, "plain") != cedar_string(aid, "cedar"):
        tags.append("action-spelling")
    if isinstance(ctx, dict) and MCP_CONTEXT_NAMES & set(ctx):
        tags.append("mcp-context-names")
    if _keys_differing_in_case(ctx):
        tags.append("case-variant-keys")
    if any('"' in i or "\\" in i for i in ids):
        tags.append("id-quote-or-backslash")
    if any(not i.isprintable() for i in ids):
        tags.append("id-not-printable")
    if any(ord(c) > 0x7F for c in aid):
        tags.append("action-not-ascii")
    atype = str(a.get("type", ""))
    if "::" in atype:
        tags.append("namespaced")
    if '"__entity"' in ctx_text:
        tags.append("context-entity")
    if '"__extn"' in ctx_text:
        tags.append("context-extension")
    if str(p.get("type", "")).rsplit("::", 1)[-1].lower() == "application":
        tags.append("application-subject")
    if atype == "Mcp::Action":
        tags.append("mcp-namespace")
    return tags


def authzen_body(req: dict, spelling: str = "plain") -> dict | str:
    """The AuthZEN evaluation of a Cedar request, or why it cannot be written."""
    for key in ("principal", "action", "resource"):
        e = req.get(key)
        if not isinstance(e, dict) or "type" not in e or "id" not in e:
            return f"the request has no {key} (AuthZEN requires a subject, action and resource)"
    ctx = req.get("context", {})
    if not isinstance(ctx, dict):
        return "the context is not a JSON object"
    p, a, r = req["principal"], req["action"], req["resource"]
    return {
        "subject": {"type": p["type"], "id": p["id"]},
        "action": {"name": full_uid(a["type"], a["id"], spelling)},
        "resource": {"type": r["type"], "id": r["id"]},
        "context": ctx,
        "options": {"explain": True},
    }


def judge(req: dict, ids: list[str], generation: int | None, status: int, resp: dict) -> Outcome:
    expected = str(req.get("decision", "")).lower()
    if status != 200:
        message = (resp.get("error") or {}).get("message") or json.dumps(resp)[:300]
        why = "bad request (400)" if status == 400 else f"HTTP {status}"
        return Outcome("refused", why, message)
    ctx = resp.get("context") or {}
    evaluations = ctx.get("evaluations") or []
    ours = "allow" if resp.get("decision") is True else "deny"
    if generation is not None and ctx.get("generation") != generation:
        return Outcome(
            "refused",
            "decided on another policy generation",
            f"generation {ctx.get('generation')}, expected {generation}",
        )
    if not evaluations:
        reason = ctx.get("reason", "")
        if expected == "allow":
            return Outcome("disagree", "deny before evaluation (Cedar allows)", reason)
        return Outcome("refused", "deny before evaluation (Cedar denies too)", reason)
    want_principal = full_uid(req["principal"]["type"], "")[:-1]  # `Type::"`
    for e in evaluations:
        if not str(e.get("principal", "")).startswith(want_principal):
            return Outcome(
                "disagree",
                "another principal evaluated",
                f"evaluated {e.get('principal')}, sent {req['principal']}",
            )
    to_cedar = {our: f"policy{n}" for n, our in enumerate(ids)}
    reasons = set()
    errors = set()
    for e in evaluations:
        for p in e.get("policies") or []:
            pid = p.get("id") if isinstance(p, dict) else p
            reasons.add(to_cedar.get(pid, f"unmapped:{pid}"))
        for err in e.get("errors") or []:
            m = _POLICY_IN_ERROR.search(str(err))
            errors.add(to_cedar.get(m.group(1), f"unmapped:{m.group(1)}") if m else f"other:{err}")
    want_reasons = set(req.get("reason") or [])
    want_errors = set(req.get("errors") or [])
    detail = ""
    if errors != want_errors:
        detail = f"errors {sorted(errors)}, Cedar {sorted(want_errors)}"
    if ours != expected:
        why = f"decision: ours {ours}, Cedar {expected}"
        return Outcome("disagree", why, f"policies {sorted(reasons)}, Cedar {sorted(want_reasons)}; {ctx.get('reason', '')}")
    if reasons != want_reasons:
        return Outcome("disagree", "determining policies", f"ours {sorted(reasons)}, Cedar {sorted(want_reasons)}")
    return Outcome("agree", "errors differ" if detail else "same", detail)


# ----------------------------------------------------------------------------
# The run


def attribute(o: Outcome) -> str | None:
    """The known divergence that explains a request not in agreement, if one does: the
    request has its feature and the answer is the one that divergence gives."""
    if o.cls == "agree" or o.response is None:
        return None
    checks = {
        "empty-entity-id": lambda: re.search(r"`(subject|resource)\.id` is empty", o.detail),
        "action-spelling": lambda: re.search(r"Cedar name|declares no action", o.detail),
        "cedar-builtin-type-names": lambda: o.why.startswith("deny before evaluation")
        and "context" in o.detail,
        "mcp-context-names": lambda: True,
        "case-variant-keys": lambda: "differ only in case" in o.detail,
    }
    for name, check in checks.items():
        if name in o.tags and check():
            return name
    return None


@dataclass
class Tally:
    counts: dict = field(default_factory=dict)
    whys: dict = field(default_factory=dict)
    examples: dict = field(default_factory=dict)
    hits: dict = field(default_factory=dict)
    features: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)
    n_examples: int = 5

    def add(self, test: Test, index: int, req: dict, o: Outcome, out) -> None:
        self.counts[o.cls] = self.counts.get(o.cls, 0) + 1
        key = f"{o.cls}: {o.why}"
        self.whys[key] = self.whys.get(key, 0) + 1
        hit = attribute(o)
        source = self.sources.setdefault(test.name.split("/", 1)[0], {})
        source[o.cls] = source.get(o.cls, 0) + 1
        for t in o.tags:
            per = self.features.setdefault(t, {})
            per[o.cls] = per.get(o.cls, 0) + 1
        if o.cls != "agree":
            per = self.hits.setdefault(hit or "(none)", {})
            per[o.cls] = per.get(o.cls, 0) + 1
        # Examples per reason, and per reason that no known divergence explains.
        for k in [key] + ([f"{key} (no known divergence)"] if o.cls != "agree" and hit is None else []):
            ex = self.examples.setdefault(k, [])
            if len(ex) < self.n_examples:
                ex.append(
                    {
                        "test": test.name,
                        "request": index,
                        "description": req.get("description"),
                        "known_divergence": hit,
                        "features": o.tags,
                        "detail": o.detail,
                        "cedar": {k: req.get(k) for k in ("decision", "reason", "errors")},
                        "sent": o.sent,
                        "response": o.response,
                    }
                )
        if out is not None:
            out.write(
                json.dumps(
                    {
                        "test": test.name,
                        "request": index,
                        "class": o.cls,
                        "why": o.why,
                        "detail": o.detail,
                        "known_divergence": hit,
                        "features": o.tags,
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )


def read_text(path: Path | None, default: str) -> str:
    return path.read_text() if path is not None else default


def run(args) -> int:
    binary = Path(args.binary).resolve()
    if not os.access(binary, os.X_OK):
        raise SetupError(f"`{binary}` is not an executable (build it: cargo build --release)")
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True).stdout.strip()
    try:
        source = subprocess.run(
            ["git", "-C", str(Path(__file__).resolve().parent), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        source = None
    work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="cedar-corpus-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    deadline = started + args.time_limit
    tests, facts = find_tests(Path(args.checkout).resolve(), work, args.include)
    if args.filter:
        tests = [t for t in tests if args.filter in t.name]
    if args.limit:
        tests = tests[: args.limit]
    if args.snapshot:
        facts["commit"] = args.snapshot

    tally = Tally(n_examples=args.examples)
    out = open(args.jsonl, "w") if args.jsonl else None
    server = Server(binary, work / "server", args.request_timeout)
    stats = {
        "tests": len(tests),
        "tests_not_validating": 0,
        "requests_not_validating": 0,
        "tests_served": 0,
        "tests_refused": 0,
        "requests": 0,
        "requests_not_run": 0,
        "server_restarts": 0,
        "reload_seconds": 0.0,
        "request_seconds": 0.0,
    }
    refused_sets: dict[str, int] = {}
    complete = True
    # A first policy set to start on; `reload` mode then swaps each test's set in.
    bootstrap = ("permit (principal, action, resource);\n", "entity U;\naction a appliesTo { principal: U, resource: U };\n", "[]")
    if args.mode == "reload":
        server.install(*bootstrap)
        if (why := server.start()) is not None:
            raise SetupError(f"mcp-authz did not start on the bootstrap policies: {why}")
    try:
        for ti, test in enumerate(tests):
            requests = test.data.get("requests") or []
            if not test.data.get("shouldValidate", False):
                stats["tests_not_validating"] += 1
                stats["requests_not_validating"] += len(requests)
                continue
            if time.monotonic() > deadline:
                complete = False
                stats["requests_not_run"] += len(requests)
                continue
            policies = read_text(test.file("policies"), "")
            schema = read_text(test.file("schema"), "")
            entities = read_text(test.file("entities"), "[]")
            ids = stable_ids(policies)
            t0 = time.monotonic()
            server.install(policies, schema, entities)
            generation, why = None, None
            if args.mode == "reload":
                if not server.alive():
                    stats["server_restarts"] += 1
                    why = server.start()
                if why is None:
                    status, body = server.reload()
                    if status == 200:
                        generation = body.get("generation")
                    else:
                        why = "; ".join(body.get("errors") or [json.dumps(body)[:500]])[:2000]
            else:
                server.stop()
                why = server.start()
            stats["reload_seconds"] += time.monotonic() - t0
            if why is not None:
                stats["tests_refused"] += 1
                key = re.sub(r"`[^`]*`", "`...`", why.split(";")[0])[:200]
                refused_sets[key] = refused_sets.get(key, 0) + 1
                for i, req in enumerate(requests):
                    stats["requests"] += 1
                    o = Outcome("refused", "policy set not loaded", why, features_of(schema, req))
                    tally.add(test, i, req, o, out)
                continue
            stats["tests_served"] += 1
            t1 = time.monotonic()
            for i, req in enumerate(requests):
                stats["requests"] += 1
                tags = features_of(schema, req)
                body = authzen_body(req, args.action_spelling)
                if isinstance(body, str):
                    tally.add(test, i, req, Outcome("refused", "not expressible", body, tags), out)
                    continue
                try:
                    status, resp = server.post("/access/v1/evaluation", body)
                except (OSError, ConnectionError) as e:
                    crashed = not server.alive()
                    o = Outcome("refused", "server crashed" if crashed else "connection failed", str(e), tags)
                    o.sent = body
                    tally.add(test, i, req, o, out)
                    if crashed:
                        print(f"server exited during {test.name} request {i}: {last_error(server.log_path.read_text(errors='replace'))}", file=sys.stderr)
                        stats["server_restarts"] += 1
                        server.proc = None
                        if server.start() is None and args.mode == "reload":
                            server.reload()
                    continue
                o = judge(req, ids, generation, status, resp)
                o.tags, o.sent, o.response = tags, body, resp
                tally.add(test, i, req, o, out)
            stats["request_seconds"] += time.monotonic() - t1
            if args.progress and (ti + 1) % args.progress == 0:
                print(
                    f"[{time.monotonic() - started:7.1f}s] {ti + 1}/{len(tests)} tests, "
                    + ", ".join(f"{k} {v}" for k, v in sorted(tally.counts.items())),
                    file=sys.stderr,
                )
    finally:
        server.stop()
        if out is not None:
            out.close()
        if not args.keep_work and not args.work:
            shutil.rmtree(work, ignore_errors=True)

    elapsed = time.monotonic() - started
    counts = {k: tally.counts.get(k, 0) for k in ("agree", "disagree", "refused")}
    sent = counts["agree"] + counts["disagree"]
    summary = {
        "corpus": facts,
        "mcp_authz": version,
        "source_tree": source,
        "mode": args.mode,
        "action_spelling": args.action_spelling,
        "complete": complete,
        "elapsed_seconds": round(elapsed, 1),
        "counts": counts,
        "agreement_of_evaluated": round(counts["agree"] / sent, 6) if sent else None,
        "stats": {k: round(v, 1) if isinstance(v, float) else v for k, v in stats.items()},
        "by_source": tally.sources,
        "by_reason": dict(sorted(tally.whys.items(), key=lambda kv: -kv[1])),
        "policy_sets_refused": dict(sorted(refused_sets.items(), key=lambda kv: -kv[1])),
        "known_divergences": {t: {"what": KNOWN[t], "hits": tally.hits.get(t, {})} for t in KNOWN},
        "not_agree_without_known_divergence": tally.hits.get("(none)", {}),
        "by_feature": {
            t: {"what": {**KNOWN, **FEATURES}[t], **tally.features.get(t, {})}
            for t in [*KNOWN, *FEATURES]
        },
        "examples": tally.examples,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    print_summary(summary)
    return 0 if complete and counts["disagree"] == 0 else 1


def print_summary(s: dict) -> None:
    c, st = s["counts"], s["stats"]
    total = sum(c.values())
    pct = lambda n: f"{100 * n / total:.2f} %" if total else "-"  # noqa: E731
    print(f"corpus: {s['corpus'].get('commit') or '(no commit)'}  tarball sha256 {s['corpus'].get('corpus_tarball_sha256')}")
    print(f"{s['mcp_authz']} (tree {s['source_tree']}), mode {s['mode']}, {s['elapsed_seconds']} s{'' if s['complete'] else ' (time limit reached: incomplete)'}")
    print(
        f"tests: {st['tests']} ({st['tests_not_validating']} not validating, skipped with "
        f"{st['requests_not_validating']} requests; {st['tests_served']} served, {st['tests_refused']} policy sets refused)"
    )
    print(f"requests: {total}")
    for k in ("agree", "disagree", "refused"):
        print(f"  {k:9} {c[k]:7}  {pct(c[k])}")
    for src, n in sorted(s["by_source"].items()):
        print(f"  in {src}/: " + ", ".join(f"{k} {v}" for k, v in sorted(n.items())))
    print("by reason:")
    for k, v in s["by_reason"].items():
        print(f"  {v:7}  {k}")
    if s["policy_sets_refused"]:
        print("policy sets refused:")
        for k, v in list(s["policy_sets_refused"].items())[:10]:
            print(f"  {v:7}  {k}")
    print("requests not in agreement, by the known divergence that explains them:")
    for t, v in s["known_divergences"].items():
        print(f"  {t:26} {v['hits'] or '-'}")
    print(f"  {'(none of them)':26} {s['not_agree_without_known_divergence'] or '-'}")
    print("requests by feature:")
    for t, v in s["by_feature"].items():
        n = {k: v.get(k, 0) for k in ("agree", "disagree", "refused")}
        print(f"  {t:26} agree {n['agree']:6}  disagree {n['disagree']:5}  refused {n['refused']:5}")
    for key, exs in s["examples"].items():
        if key.startswith("agree"):
            continue
        print(f"first examples of {key}:")
        for e in exs[:3]:
            print(f"  {e['test']} #{e['request']} [{e['known_divergence'] or '-'}]: {e['detail'][:300]}")


def main() -> int:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkout", help="a checkout of cedar-policy/cedar-integration-tests")
    ap.add_argument("--binary", default=str(here.parent.parent / "target" / "release" / "mcp-authz"))
    ap.add_argument("--mode", choices=("reload", "restart"), default="reload",
                    help="swap each test's policies in with POST /v1/reload (default) or start a server per test")
    ap.add_argument("--include", choices=("all", "corpus", "handwritten"), default="all")
    ap.add_argument("--filter", help="only tests whose path contains this")
    ap.add_argument("--limit", type=int, help="only the first N tests (in path order)")
    ap.add_argument("--snapshot", help="the corpus commit to record when CHECKOUT is not a git checkout")
    ap.add_argument("--action-spelling", choices=("plain", "cedar"), default="plain",
                    help="the action's full uid with only `\"` and `\\` escaped (default), or as Cedar prints it")
    ap.add_argument("--time-limit", type=float, default=3 * 3600, help="seconds for the whole run (default 3 h)")
    ap.add_argument("--request-timeout", type=float, default=60, help="seconds for one HTTP call or server start")
    ap.add_argument("--json", help="write the summary and examples here")
    ap.add_argument("--jsonl", help="write one line per request here")
    ap.add_argument("--examples", type=int, default=5, help="examples kept per class and reason")
    ap.add_argument("--progress", type=int, default=500, help="a progress line every N tests (0: none)")
    ap.add_argument("--work", help="work directory (default: a new one under $TMPDIR, removed after)")
    ap.add_argument("--keep-work", action="store_true")
    args = ap.parse_args()
    try:
        return run(args)
    except SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
