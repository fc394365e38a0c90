//! Shadow decisions: every live decision (or a sample of them) decided again on a
//! policy set that is watched but not enforced, off the request's path.
//!
//! Two shadows, both optional:
//! - a shadow policy directory ([`ShadowSet::Directory`]): a second
//!   [`PolicyStore`], loaded and reloaded beside the live one;
//! - the live set's `@shadow` policies ([`ShadowSet::Annotations`]): the live
//!   snapshot's [`all_enforced`](Snapshot::all_enforced) view.
//!
//! [`Engine::decide`](super::Engine::decide) hands a sampled copy of the request,
//! with the live decision, to a [`Shadow`]: a bounded queue and a worker thread
//! of its own. The live path does no more than a sampling check, one clone of the
//! request and a `try_send`: a full queue drops the copy (counted) before it is
//! made, and never waits.
//! The worker decides each copy on the shadow under the same [`Rules`], through
//! caches of its own (one per shadow, keyed by that shadow's generations; the
//! live cache is never read or filled), compares, and reports
//! every comparison to the [`Recorder`] ([`ShadowCompared`]): telemetry counts
//! them and logs the disagreements.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use super::polling::PollingReceiver;
use super::{
    CacheSettings, Decision, DecisionCache, DecisionMeta, DecisionRequest, Interface, Outcome,
    Recorder, Rules, decide_with_rules,
};
use crate::policy::{PolicyStore, Snapshot};

/// Default number of requests waiting for the shadow worker.
pub const DEFAULT_SHADOW_QUEUE: usize = 1024;

/// How much traffic is shadowed, and how much may wait.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShadowSettings {
    /// The fraction of decisions decided again (0 to 1).
    pub sample: f64,
    /// Requests waiting for the worker before new ones are dropped.
    pub queue_capacity: usize,
    /// The worker's decision caches, one per shadow (the service gives it the live
    /// cache's settings): repeated requests cost the worker a lookup.
    pub cache: CacheSettings,
}

impl Default for ShadowSettings {
    fn default() -> Self {
        Self {
            sample: 1.0,
            queue_capacity: DEFAULT_SHADOW_QUEUE,
            cache: CacheSettings::default(),
        }
    }
}

/// Which shadow a comparison was made on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShadowSet {
    /// The shadow policy directory.
    Directory,
    /// The live set with its `@shadow` policies enforced.
    Annotations,
}

impl ShadowSet {
    /// `"directory"` or `"annotations"` (the decision log's `set`).
    pub fn as_str(self) -> &'static str {
        match self {
            ShadowSet::Directory => "directory",
            ShadowSet::Annotations => "annotations",
        }
    }
}

/// One shadow decision and the live one it shadows, as the core hands it to its
/// [`Recorder`].
#[derive(Debug, Clone, Copy)]
pub struct ShadowCompared<'a> {
    /// Which shadow decided.
    pub set: ShadowSet,
    /// The id of the live decision.
    pub decision_id: &'a str,
    /// The interface the live request came through.
    pub interface: Interface,
    /// The request.
    pub request: &'a DecisionRequest,
    /// The caller's trace context and request id.
    pub meta: &'a DecisionMeta,
    /// The live (enforced) decision.
    pub live: &'a Decision,
    /// The shadow's decision.
    pub shadow: &'a Decision,
    /// The policies that made the difference (see [`difference`]); empty when the
    /// two agree.
    pub difference: &'a [String],
    /// Of those, the `@shadow` ones (set `annotations` only).
    pub shadow_policies: &'a [String],
}

impl ShadowCompared<'_> {
    /// Whether the shadow decided otherwise than the live set.
    pub fn disagrees(&self) -> bool {
        self.live.allow != self.shadow.allow
    }
}

/// A sampled request waiting for the worker.
struct Job {
    request: DecisionRequest,
    live: Arc<Decision>,
    decision_id: String,
    interface: Interface,
    meta: DecisionMeta,
    rules: Rules,
    /// The live snapshot's all-enforced view, when it has `@shadow` policies.
    annotations: Option<Arc<Snapshot>>,
}

/// The shadow queue and its worker (see the module documentation).
#[derive(Debug)]
pub struct Shadow {
    store: Option<Arc<PolicyStore>>,
    /// A copy is taken when the sampling draw is below this; `u64::MAX`: always.
    threshold: u64,
    draws: AtomicU64,
    tx: SyncSender<Job>,
    /// Copies queued and not yet taken by the worker: a full queue is seen before
    /// the request is cloned.
    pending: Arc<AtomicUsize>,
    capacity: usize,
    recorder: Arc<dyn Recorder>,
}

impl Shadow {
    /// A shadow deciding on `store` (if given) and on the live snapshots'
    /// `@shadow` policies, reporting to `recorder`; starts its worker thread.
    pub fn start(
        store: Option<Arc<PolicyStore>>,
        settings: ShadowSettings,
        recorder: Arc<dyn Recorder>,
    ) -> std::io::Result<Self> {
        let capacity = settings.queue_capacity.max(1);
        let (tx, rx) = std::sync::mpsc::sync_channel(capacity);
        let pending = Arc::new(AtomicUsize::new(0));
        let worker_store = store.clone();
        let worker_recorder = Arc::clone(&recorder);
        let taken = Arc::clone(&pending);
        let cache = settings.cache;
        std::thread::Builder::new()
            .name("shadow".into())
            .spawn(move || {
                work(
                    rx,
                    &taken,
                    worker_store.as_deref(),
                    worker_recorder.as_ref(),
                    &cache,
                )
            })?;
        Ok(Self {
            store,
            threshold: threshold(settings.sample),
            draws: AtomicU64::new(0),
            tx,
            pending,
            capacity,
            recorder,
        })
    }

    /// The shadow policy directory's store, if there is one.
    pub fn store(&self) -> Option<&Arc<PolicyStore>> {
        self.store.as_ref()
    }

    /// Queue a copy of a live decision for the worker, if there is a shadow for
    /// it and it is sampled. Never blocks: a full queue drops it (reported).
    pub(super) fn offer(
        &self,
        snapshot: &Snapshot,
        interface: Interface,
        request: &DecisionRequest,
        outcome: &Outcome,
        meta: &DecisionMeta,
        rules: Rules,
    ) {
        if self.store.is_none() && snapshot.all_enforced.is_none() {
            return;
        }
        if !self.sampled() {
            return;
        }
        // Counted before the send, so that the worker's decrement never comes first.
        if self.pending.fetch_add(1, Ordering::Relaxed) >= self.capacity {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            self.recorder.shadow_dropped();
            return;
        }
        let job = Job {
            request: request.clone(),
            live: Arc::clone(&outcome.decision),
            decision_id: outcome.decision_id.clone(),
            interface,
            meta: meta.clone(),
            rules,
            annotations: snapshot.all_enforced.clone(),
        };
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.pending.fetch_sub(1, Ordering::Relaxed);
                self.recorder.shadow_dropped();
            }
        }
    }

    fn sampled(&self) -> bool {
        match self.threshold {
            u64::MAX => true,
            0 => false,
            t => splitmix64(self.draws.fetch_add(1, Ordering::Relaxed)) < t,
        }
    }
}

/// The sampling threshold of a fraction: a draw below it is sampled.
fn threshold(sample: f64) -> u64 {
    if sample.is_nan() || sample <= 0.0 {
        0
    } else if sample >= 1.0 {
        u64::MAX
    } else {
        // In (0, 1): the product is below 2^64; `as` saturates anyway.
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a fraction of 2^64, in range"
        )]
        let t = (sample * 18_446_744_073_709_551_616.0) as u64;
        t
    }
}

/// A well-mixed 64-bit value of a counter (SplitMix64): evenly spread draws
/// without a random number generator on the request's path.
fn splitmix64(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The worker's first pause on an empty queue.
const IDLE_MIN: std::time::Duration = std::time::Duration::from_micros(500);
/// Where its pauses stop doubling: 0.5, 1, 2 and 4 ms, then it blocks.
const IDLE_MAX: std::time::Duration = std::time::Duration::from_millis(5);

fn work(
    rx: Receiver<Job>,
    pending: &AtomicUsize,
    store: Option<&PolicyStore>,
    recorder: &dyn Recorder,
    cache: &CacheSettings,
) {
    // One cache per shadow: each is keyed by its own snapshots' generations.
    let new_cache = || cache.enabled.then(|| DecisionCache::new(cache));
    let (directory, annotations) = (new_cache(), new_cache());
    // Under traffic the worker polls rather than blocks, so that a sender finds no
    // sleeping receiver to wake (a system call and a context switch on the live
    // request's thread for every copy); a full queue needs `queue_capacity` copies
    // within one pause. An idle service (or one without any shadow) never wakes it.
    let mut rx = PollingReceiver::new(rx, IDLE_MIN, IDLE_MAX);
    while let Some(job) = rx.recv() {
        pending.fetch_sub(1, Ordering::Relaxed);
        if let Some(store) = store {
            let snapshot = store.snapshot();
            let shadow = decide_cached(directory.as_ref(), &snapshot, &job);
            compare(&job, ShadowSet::Directory, &shadow, &[], recorder);
        }
        if let Some(view) = &job.annotations {
            let shadow = decide_cached(annotations.as_ref(), view, &job);
            compare(
                &job,
                ShadowSet::Annotations,
                &shadow,
                &view.shadow_policies,
                recorder,
            );
        }
    }
}

/// The job's request decided on `snapshot`, through `cache` when there is one.
fn decide_cached(cache: Option<&DecisionCache>, snapshot: &Snapshot, job: &Job) -> Arc<Decision> {
    let decide = || decide_uncached(snapshot, &job.request, job.rules);
    match cache {
        Some(c) => {
            c.get_or_compute(snapshot.generation, &job.request, decide)
                .0
        }
        None => Arc::new(decide()),
    }
}

fn compare(
    job: &Job,
    set: ShadowSet,
    shadow: &Decision,
    shadow_ids: &[String],
    recorder: &dyn Recorder,
) {
    let difference = difference(&job.live, shadow);
    let shadow_policies: Vec<String> = difference
        .iter()
        .filter(|id| shadow_ids.binary_search(id).is_ok())
        .cloned()
        .collect();
    recorder.shadow_compared(ShadowCompared {
        set,
        decision_id: &job.decision_id,
        interface: job.interface,
        request: &job.request,
        meta: &job.meta,
        live: &job.live,
        shadow,
        difference: &difference,
        shadow_policies: &shadow_policies,
    });
}

/// `request` decided on `snapshot` under `rules`, as the engine decides it but
/// without its cache.
pub fn decide_uncached(snapshot: &Snapshot, request: &DecisionRequest, rules: Rules) -> Decision {
    match rules.refusal(request) {
        Some(reason) => Decision::denied_before_evaluation(reason, snapshot),
        None => decide_with_rules(snapshot, request, rules),
    }
}

/// The policies that made two decisions differ, sorted; empty when they agree.
///
/// On the side that denies, the forbids that denied (and the policies whose
/// evaluation failed); when it denied for want of a permit, the permits that
/// allowed on the other side, for the same principals. If neither names one
/// (say the request did not fit one side's schema), every policy the allowing
/// side names.
pub fn difference(a: &Decision, b: &Decision) -> Vec<String> {
    if a.allow == b.allow {
        return Vec::new();
    }
    let (deny, allow) = if a.allow { (b, a) } else { (a, b) };
    let mut out: Vec<String> = Vec::new();
    for e in deny.evaluations.iter().filter(|e| !e.allow) {
        if e.errors.is_empty() {
            // A deny without errors: its determining policies are forbids.
            out.extend(e.policies.iter().cloned());
        } else {
            out.extend(e.errors.iter().filter_map(|err| failed_policy(err)));
        }
        if out.is_empty() {
            // Denied for want of a permit: the other side's permits for this principal.
            out.extend(
                allow
                    .evaluations
                    .iter()
                    .filter(|o| o.role == e.role)
                    .flat_map(|o| o.policies.iter().cloned()),
            );
        }
    }
    if out.is_empty() {
        out.extend(
            allow
                .evaluations
                .iter()
                .flat_map(|e| e.policies.iter().cloned()),
        );
    }
    out.sort();
    out.dedup();
    out
}

/// The policy id an evaluation error names (Cedar writes it in backticks after
/// `policy`).
fn failed_policy(error: &str) -> Option<String> {
    let rest = error.get(error.find("policy `")? + "policy `".len()..)?;
    let end = rest.find('`')?;
    rest.get(..end).map(str::to_owned)
}

#[cfg(test)]
mod tests;
