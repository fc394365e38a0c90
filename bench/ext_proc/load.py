"""Latency of MCP requests through Envoy with and without ext_proc (bench/ext_proc.sh).

One request at a time on one keep-alive connection per listener, so each sample is the
latency of one request and nothing queues. The arms alternate in blocks (`--rounds`),
so that a drift of the machine falls on both alike. Cases:

- `list-json`: `tools/list` answered by the upstream with `application/json` (the list file)
- `list-sse`:  the same list as one `text/event-stream` event
- `call`:      `tools/call` of `get_document` (not a list: ext_proc sees its request headers only)

Prints one JSON object per case and arm on stdout (`case`, `arm`, `n`, `p50_us`, `p90_us`,
`p99_us`, `mean_us`, `tools` listed in the first answer), then a table of the added latency
(with ext_proc minus without) on stderr.

Usage: load.py --with-port P --without-port Q --token-file F [--requests N] [--rounds R]
               [--warmup W] [--cases list-json,list-sse,call]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import time

BODIES = {
    "list-json": ("/docs/tools-json", {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}),
    "list-sse": ("/docs/tools-sse", {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}),
    "call": (
        "/docs/call",
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "get_document", "arguments": {"document_id": "titan/q1-strategy"}},
        },
    ),
}


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def tools_in(content_type: str, body: bytes) -> int | None:
    text = body.decode("utf-8", "replace")
    if content_type.startswith("text/event-stream"):
        data = "\n".join(
            line[5:].lstrip() for line in text.replace("\r\n", "\n").split("\n") if line.startswith("data:")
        )
        text = data
    try:
        message = json.loads(text)
    except ValueError:
        return None
    tools = message.get("result", {}).get("tools") if isinstance(message, dict) else None
    return len(tools) if isinstance(tools, list) else None


class Client:
    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.headers = {
            "authorization": f"Bearer {token}",
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
            "mcp-protocol-version": "2025-11-25",
        }

    def request(self, case: str) -> tuple[float, int, str, bytes]:
        path, body = BODIES[case]
        raw = json.dumps(body).encode()
        start = time.perf_counter_ns()
        self.conn.request("POST", path, body=raw, headers=self.headers)
        response = self.conn.getresponse()
        data = response.read()
        elapsed = (time.perf_counter_ns() - start) / 1000
        return elapsed, response.status, response.getheader("content-type") or "", data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--with-port", type=int, required=True)
    parser.add_argument("--without-port", type=int, required=True)
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--requests", type=int, default=4000, help="per case and arm (default 4000)")
    parser.add_argument("--rounds", type=int, default=8, help="blocks per arm, alternating (default 8)")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured requests per case and arm")
    parser.add_argument("--cases", default="list-json,list-sse,call")
    args = parser.parse_args()
    with open(args.token_file, encoding="utf-8") as f:
        token = f.read().strip()
    arms = {"ext_proc": Client(args.with_port, token), "ext_authz_only": Client(args.without_port, token)}
    cases = [c for c in args.cases.split(",") if c]
    results = []
    rows = []
    for case in cases:
        if case not in BODIES:
            sys.exit(f"load.py: unknown case `{case}`")
        samples: dict[str, list[float]] = {arm: [] for arm in arms}
        listed: dict[str, int | None] = {}
        for arm, client in arms.items():
            _, status, content_type, body = client.request(case)
            if status != 200:
                sys.exit(f"load.py: {case} through {arm}: HTTP {status}: {body[:500]!r}")
            listed[arm] = tools_in(content_type, body)
            for _ in range(args.warmup):
                client.request(case)
        block = max(1, args.requests // args.rounds)
        for _ in range(args.rounds):
            for arm, client in arms.items():
                for _ in range(block):
                    elapsed, status, _, body = client.request(case)
                    if status != 200:
                        sys.exit(f"load.py: {case} through {arm}: HTTP {status}: {body[:500]!r}")
                    samples[arm].append(elapsed)
        summary = {}
        for arm, values in samples.items():
            values.sort()
            summary[arm] = {
                "case": case,
                "arm": arm,
                "n": len(values),
                "p50_us": round(percentile(values, 50), 1),
                "p90_us": round(percentile(values, 90), 1),
                "p99_us": round(percentile(values, 99), 1),
                "mean_us": round(statistics.fmean(values), 1),
                "tools": listed[arm],
            }
            results.append(summary[arm])
            print(json.dumps(summary[arm]), flush=True)
        w, wo = summary["ext_proc"], summary["ext_authz_only"]
        rows.append(
            (
                case,
                wo["p50_us"],
                w["p50_us"],
                round(w["p50_us"] - wo["p50_us"], 1),
                wo["p99_us"],
                w["p99_us"],
                round(w["p99_us"] - wo["p99_us"], 1),
                f"{wo['tools']}->{w['tools']}" if wo["tools"] is not None else "-",
            )
        )
    header = ("case", "p50 authz", "p50 +proc", "p50 added", "p99 authz", "p99 +proc", "p99 added", "tools")
    print("  ".join(f"{h:>11}" for h in header), file=sys.stderr)
    for row in rows:
        print("  ".join(f"{str(v):>11}" for v in row), file=sys.stderr)
    print("(microseconds; one request at a time, one keep-alive connection per listener)", file=sys.stderr)


if __name__ == "__main__":
    main()
