//! Decision metrics, kept in atomics (no lock, no allocation when recording), and
//! their rendering in the Prometheus text exposition format (version 0.0.4).
//!
//! Series (all prefixed `mcp_authz_`):
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `decisions_total` | counter | `interface`, `decision` (`allow`/`deny`) | decisions made |
//! | `decision_duration_seconds` | histogram | `interface` | time spent deciding |
//! | `undeclared_denials_total` | counter | `server`, `kind` (`tool`/`prompt`/`argument`) | calls denied because a server with imported tools does not declare the tool, prompt or argument (only servers that had one) |
//! | `decision_cache_hits_total`, `decision_cache_misses_total` | counter | | decision cache lookups |
//! | `decision_cache_entries` | gauge | | decisions the cache holds now (approximate; absent when the cache is off) |
//! | `policy_generation` | gauge | | generation of the snapshot serving now (counts reloads of this process) |
//! | `dry_run` | gauge | | 1 in a dry run (`decisions.dry_run`): every request is decided and logged, and answered allow |
//! | `policy_info` | gauge | `content_digest` (`sha256:<hex>`) | always 1: the content digest of the snapshot serving now, equal on every replica serving the same policies, schema and entity data |
//! | `policies` | gauge | | policies in that snapshot |
//! | `policy_reloads_total` | counter | `result` (`success`/`failure`) | reloads that swapped in a snapshot, or were rejected |
//! | `policies_in_sync` | gauge | | 1 when the last reload attempt succeeded, 0 while a broken change is pending |
//! | `policy_last_reload_timestamp_seconds` | gauge | | end of the last reload attempt (absent before one) |
//! | `jwks_refreshes_total` | counter | `issuer`, `result` | JWKS fetches per issuer with a `jwks_url` |
//! | `jwks_keys` | gauge | `issuer` | keys in force per issuer |
//! | `decision_log_records_total` | counter | `result` (`written`/`dropped`/`failed`) | decision log records written, dropped because the queue was full, or lost to a write error |
//! | `shadow_decisions_total` | counter | `live`, `shadow` (`allow`/`deny`) | shadow decisions made (a live decision decided again on the shadow policy directory or with the `@shadow` policies enforced), by both verdicts |
//! | `shadow_disagreements_total` | counter | `policy` | shadow decisions that differ from the live one, by each policy that made the difference (the deny side's forbids, else the allow side's permits; `none` when no policy is named) |
//! | `shadow_dropped_total` | counter | | live decisions not shadowed because the shadow queue was full |
//! | `shadow_policy_generation` | gauge | | generation of the shadow directory's snapshot (absent without one) |
//! | `shadow_policy_info` | gauge | `content_digest` | always 1: the content digest of the shadow directory's snapshot (absent without one) |
//! | `shadow_policies_in_sync` | gauge | | 1 when the shadow directory's last reload attempt succeeded (absent without one) |
//! | `build_info` | gauge | `version` | always 1 |
//!
//! The cache counters are kept here, through [`Metrics::cache_hit`] and
//! [`Metrics::cache_miss`], which `Engine::decide` calls around the cache lookup;
//! with the cache off both stay 0.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::authz::Interface;

/// Every interface, in the order series are rendered.
pub const INTERFACES: [Interface; 6] = [
    Interface::Grpc,
    Interface::ExtAuthzGrpc,
    Interface::ExtAuthzHttp,
    Interface::ExtProc,
    Interface::Authzen,
    Interface::Cli,
];

fn index(interface: Interface) -> usize {
    match interface {
        Interface::Grpc => 0,
        Interface::ExtAuthzGrpc => 1,
        Interface::ExtAuthzHttp => 2,
        Interface::ExtProc => 3,
        Interface::Authzen => 4,
        Interface::Cli => 5,
    }
}

/// Upper bounds of the latency buckets, in nanoseconds (5 µs to 1 s: Cedar
/// decides in microseconds; the tail shows trouble).
const BUCKETS_NS: [u64; 16] = [
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    1_000_000_000,
];

/// A latency histogram: one counter per bucket (not cumulative; summed when
/// rendered), plus the overflow, the sum and the count.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS_NS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = BUCKETS_NS.partition_point(|&b| b < ns);
        // `partition_point` is at most `BUCKETS_NS.len()`: the last bucket is +Inf.
        if let Some(bucket) = self.buckets.get(i) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

/// The decision counters of the service.
#[derive(Debug, Default)]
pub struct Metrics {
    /// `[interface][0 = allow, 1 = deny]`.
    decisions: [[AtomicU64; 2]; INTERFACES.len()],
    latency: [Histogram; INTERFACES.len()],
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    /// Undeclared-tool, -prompt and -argument denials by server and kind: touched
    /// only by those denials, whose servers are the schema's imported ones.
    undeclared: Mutex<BTreeMap<(String, Undeclared), u64>>,
    /// Shadow decisions: `[0 = live allow, 1 = live deny][0 = shadow allow, 1 = shadow deny]`.
    shadow: [[AtomicU64; 2]; 2],
    /// Shadow disagreements by policy (touched by disagreements only).
    shadow_disagreements: Mutex<BTreeMap<String, u64>>,
    shadow_dropped: AtomicU64,
}

/// What a server with imported tools did not declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Undeclared {
    /// A tool of a `tools/call`.
    Tool,
    /// A prompt of a `prompts/get`.
    Prompt,
    /// An argument of a declared tool or prompt.
    Argument,
}

impl Undeclared {
    fn as_str(self) -> &'static str {
        match self {
            Undeclared::Tool => "tool",
            Undeclared::Prompt => "prompt",
            Undeclared::Argument => "argument",
        }
    }
}

impl Metrics {
    /// Count one decision and its latency.
    pub fn record_decision(&self, interface: Interface, allow: bool, latency: Duration) {
        if let Some(counter) = self.counter(interface, allow) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(h) = self.latency.get(index(interface)) {
            h.observe(latency);
        }
    }

    /// Count a call denied because `server` does not declare what it names.
    pub fn undeclared_denial(&self, server: &str, kind: Undeclared) {
        // A poisoned lock only means another recorder panicked mid-increment.
        let mut counts = self
            .undeclared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *counts.entry((server.to_owned(), kind)).or_default() += 1;
    }

    /// Undeclared denials counted for `server` and `kind`.
    pub fn undeclared_denials(&self, server: &str, kind: Undeclared) -> u64 {
        self.undeclared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(server.to_owned(), kind))
            .copied()
            .unwrap_or(0)
    }

    /// Count one shadow decision, and when it differs from the live one each policy
    /// of `difference` (`none` when it is empty).
    pub fn shadow_decision(&self, live: bool, shadow: bool, difference: &[String]) {
        if let Some(c) = self
            .shadow
            .get(usize::from(!live))
            .and_then(|row| row.get(usize::from(!shadow)))
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
        if live == shadow {
            return;
        }
        let mut counts = self
            .shadow_disagreements
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if difference.is_empty() {
            *counts.entry("none".to_owned()).or_default() += 1;
        }
        for id in difference {
            *counts.entry(id.clone()).or_default() += 1;
        }
    }

    /// Count a live decision not shadowed (the queue was full).
    pub fn shadow_dropped(&self) {
        self.shadow_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Shadow decisions counted with these verdicts.
    pub fn shadow_decisions(&self, live: bool, shadow: bool) -> u64 {
        self.shadow
            .get(usize::from(!live))
            .and_then(|row| row.get(usize::from(!shadow)))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Shadow disagreements counted for `policy`.
    pub fn shadow_disagreements(&self, policy: &str) -> u64 {
        self.shadow_disagreements
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(policy)
            .copied()
            .unwrap_or(0)
    }

    /// Hook for the decision cache: a lookup found its decision.
    pub fn cache_hit(&self) {
        self.cache_hits.fetch_add(1, Ordering::Relaxed);
    }

    /// Hook for the decision cache: a lookup found nothing.
    pub fn cache_miss(&self) {
        self.cache_misses.fetch_add(1, Ordering::Relaxed);
    }

    /// The counter of `interface`'s decisions with verdict `allow` (every
    /// interface has one: `index` maps them onto the arrays).
    fn counter(&self, interface: Interface, allow: bool) -> Option<&AtomicU64> {
        self.decisions
            .get(index(interface))
            .and_then(|d| d.get(usize::from(!allow)))
    }

    /// Decisions counted for `interface` with verdict `allow`.
    pub fn decisions(&self, interface: Interface, allow: bool) -> u64 {
        self.counter(interface, allow)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Render the decision series (the others come from [`Exposition`] callers).
    pub fn render(&self, out: &mut Exposition) {
        out.family(
            "mcp_authz_decisions_total",
            "counter",
            "Decisions made, by interface and verdict.",
        );
        for interface in INTERFACES {
            for (allow, verdict) in [(true, "allow"), (false, "deny")] {
                let v = self.decisions(interface, allow);
                out.sample(
                    "mcp_authz_decisions_total",
                    &[("interface", interface.as_str()), ("decision", verdict)],
                    v,
                );
            }
        }
        out.family(
            "mcp_authz_decision_duration_seconds",
            "histogram",
            "Time spent deciding, by interface.",
        );
        for (interface, h) in INTERFACES.into_iter().zip(&self.latency) {
            let counts: Vec<u64> = h
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect();
            let mut cumulative = 0u64;
            for (bound, count) in BUCKETS_NS.iter().zip(&counts) {
                cumulative += count;
                let le = seconds(*bound);
                out.sample(
                    "mcp_authz_decision_duration_seconds_bucket",
                    &[("interface", interface.as_str()), ("le", &le)],
                    cumulative,
                );
            }
            cumulative += counts.last().copied().unwrap_or(0);
            out.sample(
                "mcp_authz_decision_duration_seconds_bucket",
                &[("interface", interface.as_str()), ("le", "+Inf")],
                cumulative,
            );
            out.sample_f64(
                "mcp_authz_decision_duration_seconds_sum",
                &[("interface", interface.as_str())],
                h.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            );
            out.sample(
                "mcp_authz_decision_duration_seconds_count",
                &[("interface", interface.as_str())],
                cumulative,
            );
        }
        out.family(
            "mcp_authz_undeclared_denials_total",
            "counter",
            "Calls denied because a server with imported tools does not declare the tool, prompt or argument, by server and kind.",
        );
        let undeclared = self
            .undeclared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for ((server, kind), n) in &undeclared {
            out.sample(
                "mcp_authz_undeclared_denials_total",
                &[("server", server), ("kind", kind.as_str())],
                *n,
            );
        }
        out.family(
            "mcp_authz_decision_cache_hits_total",
            "counter",
            "Decision cache lookups that found a decision.",
        );
        out.sample(
            "mcp_authz_decision_cache_hits_total",
            &[],
            self.cache_hits.load(Ordering::Relaxed),
        );
        out.family(
            "mcp_authz_decision_cache_misses_total",
            "counter",
            "Decision cache lookups that found nothing.",
        );
        out.sample(
            "mcp_authz_decision_cache_misses_total",
            &[],
            self.cache_misses.load(Ordering::Relaxed),
        );
        out.family(
            "mcp_authz_shadow_decisions_total",
            "counter",
            "Shadow decisions made (live decisions decided again on the shadow set or with the @shadow policies enforced), by live and shadow verdict.",
        );
        for (live, l) in [(true, "allow"), (false, "deny")] {
            for (shadow, s) in [(true, "allow"), (false, "deny")] {
                out.sample(
                    "mcp_authz_shadow_decisions_total",
                    &[("live", l), ("shadow", s)],
                    self.shadow_decisions(live, shadow),
                );
            }
        }
        out.family(
            "mcp_authz_shadow_disagreements_total",
            "counter",
            "Shadow decisions that differ from the live one, by policy that made the difference.",
        );
        let disagreements = self
            .shadow_disagreements
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for (policy, n) in &disagreements {
            out.sample(
                "mcp_authz_shadow_disagreements_total",
                &[("policy", policy)],
                *n,
            );
        }
        out.family(
            "mcp_authz_shadow_dropped_total",
            "counter",
            "Live decisions not shadowed because the shadow queue was full.",
        );
        out.sample(
            "mcp_authz_shadow_dropped_total",
            &[],
            self.shadow_dropped.load(Ordering::Relaxed),
        );
    }
}

/// A bucket bound in seconds, as Prometheus clients print it (`5e-06` style is
/// avoided: plain decimals).
fn seconds(ns: u64) -> String {
    let s = format!("{:.9}", ns as f64 / 1e9);
    let s = s.trim_end_matches('0');
    s.strip_suffix('.').unwrap_or(s).to_owned()
}

/// A Prometheus text exposition being written.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Exposition {
    /// Start a metric family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// One sample with an integer value.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.name_and_labels(name, labels);
        let _ = writeln!(self.text, " {value}");
    }

    /// One sample with a floating-point value.
    pub fn sample_f64(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.name_and_labels(name, labels);
        if value.is_finite() {
            let _ = writeln!(self.text, " {value}");
        } else {
            let _ = writeln!(self.text, " NaN");
        }
    }

    fn name_and_labels(&mut self, name: &str, labels: &[(&str, &str)]) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{}\"", escape_label(v));
            }
            self.text.push('}');
        }
    }

    /// The text.
    pub fn finish(self) -> String {
        self.text
    }
}

fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_bounds_print_as_plain_decimals() {
        assert_eq!(seconds(5_000), "0.000005");
        assert_eq!(seconds(2_500_000), "0.0025");
        assert_eq!(seconds(1_000_000_000), "1");
    }

    #[test]
    fn decisions_and_latency_are_counted_per_interface() {
        let m = Metrics::default();
        m.record_decision(Interface::Authzen, true, Duration::from_micros(7));
        m.record_decision(Interface::Authzen, false, Duration::from_secs(3));
        m.record_decision(Interface::Grpc, true, Duration::from_micros(30));
        assert_eq!(m.decisions(Interface::Authzen, true), 1);
        assert_eq!(m.decisions(Interface::Authzen, false), 1);
        let mut out = Exposition::default();
        m.render(&mut out);
        let text = out.finish();
        assert!(
            text.contains(
                "mcp_authz_decisions_total{interface=\"authzen\",decision=\"allow\"} 1\n"
            )
        );
        // 7 µs lands in the 10 µs bucket; 3 s only in +Inf.
        assert!(text.contains(
            "mcp_authz_decision_duration_seconds_bucket{interface=\"authzen\",le=\"0.000005\"} 0\n"
        ));
        assert!(text.contains(
            "mcp_authz_decision_duration_seconds_bucket{interface=\"authzen\",le=\"0.00001\"} 1\n"
        ));
        assert!(text.contains(
            "mcp_authz_decision_duration_seconds_bucket{interface=\"authzen\",le=\"1\"} 1\n"
        ));
        assert!(text.contains(
            "mcp_authz_decision_duration_seconds_bucket{interface=\"authzen\",le=\"+Inf\"} 2\n"
        ));
        assert!(
            text.contains("mcp_authz_decision_duration_seconds_count{interface=\"authzen\"} 2\n")
        );
        assert!(
            text.contains(
                "mcp_authz_decision_duration_seconds_sum{interface=\"authzen\"} 3.000007\n"
            )
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = Exposition::default();
        out.sample("x", &[("issuer", "a\"b\\c\nd")], 1);
        assert_eq!(out.finish(), "x{issuer=\"a\\\"b\\\\c\\nd\"} 1\n");
    }
}
