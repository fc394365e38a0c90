//! `report`: the results of `run` (JSON lines) as Markdown tables, with the ratios
//! the targets are stated in.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

fn num(r: &Value, k: &str) -> f64 {
    r.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

fn text<'a>(r: &'a Value, k: &str) -> &'a str {
    r.get(k).and_then(Value::as_str).unwrap_or("")
}

/// The last record for (target, workload, users) with no variant.
fn find<'a>(records: &'a [Value], target: &str, workload: &str, users: f64) -> Option<&'a Value> {
    records.iter().rev().find(|r| {
        text(r, "target") == target
            && text(r, "workload") == workload
            && num(r, "users") == users
            && text(r, "variant").is_empty()
    })
}

/// A run's label with its variant, if any.
fn label(r: &Value) -> String {
    match text(r, "variant") {
        "" => text(r, "label").to_owned(),
        v => format!("{} [{v}]", text(r, "label")),
    }
}

/// The variant of the ext_authz floor's run (`bench/compare.sh`).
const EXT_AUTHZ_FLOOR_VARIANT: &str = "transport-floor";

/// Every gRPC run of the repeated request beside the transport floor of the same
/// results (its last run): what share of a do-nothing handler's throughput each gets.
/// A run with a variant is also compared with the last run of the same label without
/// one (e.g. the decision log on against off).
fn floor_table(records: &[Value]) -> String {
    let mut out = String::new();
    let Some(floor) = records.iter().rev().find(|r| text(r, "target") == "health") else {
        return out;
    };
    // The ext_authz floor (`load floor --service ext-authz`): the same CheckRequest
    // carried, nothing read. Each ext_authz run's share of it too.
    let ext_floor = records.iter().rev().find(|r| {
        text(r, "target") == "ext-authz" && text(r, "variant") == EXT_AUTHZ_FLOOR_VARIANT
    });
    let share = |r: &Value, of: Option<&Value>| {
        of.map(|f| format!("{:.1} %", 100.0 * num(r, "rps") / num(f, "rps")))
            .unwrap_or_default()
    };
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| repeated request, {} × {} | req/s | p99 µs | share of the transport floor | share of the ext_authz floor | against the same target without the variant |",
        num(floor, "connections"),
        num(floor, "streams"),
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        out,
        "| {} | {:.0} | {:.0} | 100 % | {} | |",
        label(floor),
        num(floor, "rps"),
        num(floor, "p99_us"),
        share(floor, ext_floor),
    );
    for r in records.iter().filter(|r| {
        text(r, "workload") == "repeated" && matches!(text(r, "target"), "ext-authz" | "gateway")
    }) {
        let base = match text(r, "variant") {
            "" => None,
            // The same label's run without a variant (the same binary, e.g. log off).
            _ => records.iter().rev().find(|b| {
                text(b, "target") == text(r, "target")
                    && text(b, "workload") == "repeated"
                    && text(b, "label") == text(r, "label")
                    && num(b, "users") == num(r, "users")
                    && text(b, "variant").is_empty()
            }),
        };
        let of_ext_floor = match text(r, "target") {
            "ext-authz" => share(r, ext_floor),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "| {} ({} users) | {:.0} | {:.0} | {} | {of_ext_floor} | {} |",
            label(r),
            num(r, "users"),
            num(r, "rps"),
            num(r, "p99_us"),
            share(r, Some(floor)),
            share(r, base),
        );
    }
    out
}

/// The servers of a round (`bench/compare.sh` with ROUNDS), each named by its run's
/// target and variant: the repeated request on each.
const ARMS: [(&str, &str, &str); 5] = [
    ("health floor", "health", ""),
    ("ext_authz floor", "ext-authz", EXT_AUTHZ_FLOOR_VARIANT),
    ("do-nothing", "ext-authz", "do-nothing"),
    ("mcp-authz log on", "ext-authz", "decision-log-file"),
    ("log off", "ext-authz", ""),
];

/// The ratios a round is read by: heading, numerator and denominator (indices into
/// [`ARMS`]), and the least ratio issue 20 asks for, if it asks for one.
const RATIOS: [(&str, usize, usize, Option<f64>); 5] = [
    ("log on ÷ health floor", 3, 0, Some(0.70)),
    ("log on ÷ off", 3, 4, Some(0.90)),
    ("do-nothing ÷ health floor", 2, 0, None),
    ("log off ÷ do-nothing", 4, 2, None),
    ("log on ÷ do-nothing", 3, 2, None),
];

/// A round in which no run lost more than this much CPU to steal (seconds) is quiet.
const QUIET_STEAL_S: f64 = 0.5;

/// The median of the numbers of `values` (NaN if it has none).
fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Runs with a `round` (`run --round`): one row per round, each server's throughput
/// and the ratios between servers of the same round, then their medians over all
/// rounds and over the quiet ones, and how many rounds meet each target.
fn rounds_table(records: &[Value]) -> String {
    let mut rounds: std::collections::BTreeMap<u64, [Option<&Value>; 5]> = Default::default();
    for r in records.iter().filter(|r| text(r, "workload") == "repeated") {
        let Some(round) = r.get("round").and_then(Value::as_u64) else {
            continue;
        };
        let arm = ARMS
            .iter()
            .position(|(_, t, v)| text(r, "target") == *t && text(r, "variant") == *v);
        if let Some(i) = arm {
            rounds.entry(round).or_default()[i] = Some(r);
        }
    }
    let mut out = String::new();
    if rounds.is_empty() {
        return out;
    }
    let rps = |r: Option<&Value>| r.map_or(f64::NAN, |r| num(r, "rps"));
    let cell = |x: f64, f: &dyn Fn(f64) -> String| if x.is_nan() { "—".into() } else { f(x) };
    let pct = |x: f64| cell(x, &|x| format!("{:.0} %", 100.0 * x));
    let _ = writeln!(out);
    let _ = write!(out, "| round | most steal in a run (s) |");
    for (name, _, _) in ARMS {
        let _ = write!(out, " {name} (req/s) |");
    }
    for (name, _, _, least) in RATIOS {
        match least {
            Some(least) => {
                let _ = write!(out, " {name} (target ≥ {:.0} %) |", 100.0 * least);
            }
            None => {
                let _ = write!(out, " {name} |");
            }
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "|---|---:|{}",
        "---:|".repeat(ARMS.len() + RATIOS.len())
    );
    // Each round's ratios, and whether it was quiet.
    let mut read: Vec<([f64; 5], bool)> = Vec::new();
    for (round, arms) in &rounds {
        let steal = arms
            .iter()
            .flatten()
            .map(|r| num(r, "steal_s"))
            .fold(f64::NAN, f64::max);
        let ratios = RATIOS.map(|(_, a, b, _)| rps(arms[a]) / rps(arms[b]));
        read.push((ratios, steal <= QUIET_STEAL_S));
        let _ = write!(out, "| {round} | {} |", cell(steal, &|s| format!("{s:.2}")));
        for arm in arms {
            let _ = write!(out, " {} |", cell(rps(*arm), &|x| format!("{x:.0}")));
        }
        for ratio in ratios {
            let _ = write!(out, " {} |", pct(ratio));
        }
        let _ = writeln!(out);
    }
    let quiet = read.iter().filter(|(_, q)| *q).count();
    for (title, only_quiet) in [
        (format!("median of {}", read.len()), false),
        (format!("median of the {quiet} quiet"), true),
    ] {
        let _ = write!(out, "| {title} | |{}", " |".repeat(ARMS.len()));
        for i in 0..RATIOS.len() {
            let m = median(
                read.iter()
                    .filter(|(_, q)| *q || !only_quiet)
                    .map(|(ratios, _)| ratios[i]),
            );
            let _ = write!(out, " {} |", pct(m));
        }
        let _ = writeln!(out);
    }
    let _ = writeln!(out);
    for (i, (name, _, _, least)) in RATIOS.iter().enumerate() {
        let Some(least) = least else { continue };
        let met = |only_quiet: bool| {
            read.iter()
                .filter(|(ratios, q)| (*q || !only_quiet) && ratios[i] >= *least)
                .count()
        };
        let _ = writeln!(
            out,
            "- {name} ≥ {:.0} %: {} of {} rounds, {} of the {quiet} quiet ones",
            100.0 * least,
            met(false),
            read.len(),
            met(true),
        );
    }
    let _ = writeln!(
        out,
        "- a quiet round: no run of it lost more than {QUIET_STEAL_S} s of CPU to steal (the hypervisor running other guests)"
    );
    out
}

/// Render the results.
pub fn render(records: &[Value]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| interface | users | workload | conns × in flight | req/s | p50 µs | p90 µs | p99 µs | max µs | errors | wrong / read | server CPU (cores) | load generator CPU (cores) | other CPU (cores) | server RSS after (MiB) |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in records {
        let cores = |k: &str| num(r, k) / num(r, "duration_s");
        let rss = num(r, "rss_after_kib") / 1024.0;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} × {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} / {} | {:.2} | {:.2} | {:.2} | {:.1} |",
            label(r),
            num(r, "users"),
            text(r, "workload"),
            num(r, "connections"),
            num(r, "streams"),
            num(r, "rps"),
            num(r, "p50_us"),
            num(r, "p90_us"),
            num(r, "p99_us"),
            num(r, "max_us"),
            num(r, "errors"),
            num(r, "wrong"),
            num(r, "checked"),
            cores("server_cpu_s"),
            cores("client_cpu_s"),
            cores("other_cpu_s"),
            rss,
        );
    }
    let pairs = [
        ("ext-authz", "cerbos-grpc", "ext_authz gRPC / Cerbos gRPC"),
        ("gateway", "cerbos-grpc", "gateway gRPC / Cerbos gRPC"),
        ("authzen", "cedar-agent", "AuthZEN HTTP / cedar-agent HTTP"),
        ("authzen", "cerbos-http", "AuthZEN HTTP / Cerbos HTTP"),
    ];
    let mut sizes: Vec<f64> = records.iter().map(|r| num(r, "users")).collect();
    sizes.sort_by(|a, b| b.total_cmp(a));
    sizes.dedup();
    let mut ratios = String::new();
    for (users, (a, b, title)) in sizes
        .iter()
        .flat_map(|u| pairs.iter().map(move |p| (*u, *p)))
    {
        let mut cells = Vec::new();
        for w in ["repeated", "randomized"] {
            // Cerbos takes roles in the request: it holds no entity data, so its
            // runs stand for every size.
            let peer = find(records, b, w, users).or_else(|| {
                b.starts_with("cerbos")
                    .then(|| find(records, b, w, sizes[0]))
                    .flatten()
            });
            match (find(records, a, w, users), peer) {
                (Some(x), Some(y)) => cells.push(format!(
                    "{:.2}× (p99 {:.0} vs {:.0} µs)",
                    num(x, "rps") / num(y, "rps"),
                    num(x, "p99_us"),
                    num(y, "p99_us")
                )),
                _ => cells.push("—".into()),
            }
        }
        if cells.iter().all(|c| c == "—") {
            continue;
        }
        let _ = writeln!(
            ratios,
            "| {title} | {users} | {} | {} |",
            cells[0], cells[1]
        );
    }
    if !ratios.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "| throughput ratio | users in entity data | repeated | randomized |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|");
        out.push_str(&ratios);
    }
    // Runs in rounds are compared within their round; the floor table compares every
    // run with the last floor, which is right only for one pass (`bench/compare.sh`).
    if records
        .iter()
        .any(|r| r.get("round").is_some_and(|n| !n.is_null()))
    {
        out.push_str(&rounds_table(records));
    } else {
        out.push_str(&floor_table(records));
    }
    out
}

/// Print the report of the results in `path`.
pub fn print(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let records: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    print!("{}", render(&records));
    Ok(())
}
