//! The current snapshot, swapped atomically when the directory changes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use super::{
    LoadOptions, PolicyDiff, Problems, Severity, Snapshot, build_with_big_stack, read_sources,
};

/// Most policy ids listed per kind of change in one log line; `/v1/policies`
/// lists them all.
pub const MAX_LOGGED_IDS: usize = 100;

/// The last reload that swapped in a snapshot, and what it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastReload {
    /// The generation it replaced.
    pub from_generation: u64,
    /// The generation it swapped in.
    pub to_generation: u64,
    /// When.
    pub at: SystemTime,
    /// What changed (empty when the files changed without changing any content, or
    /// the reload was forced).
    pub diff: PolicyDiff,
}

/// How the last reload attempts went.
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    /// False when the last attempt failed: the store still serves its last good
    /// snapshot, which no longer matches the files.
    pub in_sync: bool,
    /// The problems of the last failed attempt, one line each.
    pub last_errors: Vec<String>,
    /// Reloads that swapped in a new snapshot.
    pub successes: u64,
    /// Reloads that were rejected.
    pub failures: u64,
    /// When the last attempt ended.
    pub last_attempt: Option<SystemTime>,
    /// The last reload that swapped in a snapshot; `None` until one has.
    pub last_reload: Option<LastReload>,
}

/// What one reload did.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// A new snapshot serves from now on.
    Reloaded {
        /// Its generation.
        generation: u64,
        /// What changed from the one before.
        diff: PolicyDiff,
    },
    /// The files are what the current snapshot was built from.
    Unchanged,
    /// The new files are invalid; the last good snapshot still serves.
    Failed(Problems),
}

/// Holds the current [`Snapshot`]. Reading it is one atomic load; a reload builds
/// the next snapshot aside and swaps it in, so decisions in flight finish on the
/// snapshot they started with.
#[derive(Debug)]
pub struct PolicyStore {
    dir: PathBuf,
    options: LoadOptions,
    current: ArcSwap<Snapshot>,
    status: Mutex<ReloadStatus>,
    reloading: Mutex<()>,
}

impl PolicyStore {
    /// Load the directory; fails with its problems if it is not valid, so that
    /// the service never starts without policies.
    pub fn open(dir: &Path) -> Result<Self, Problems> {
        Self::open_with(dir, LoadOptions::default())
    }

    /// Load the directory with `options`, which every reload uses too.
    pub fn open_with(dir: &Path, options: LoadOptions) -> Result<Self, Problems> {
        let snapshot = Snapshot::load_with(dir, 1, options)?;
        for w in snapshot.warnings.one_line_each() {
            tracing::warn!(warning = %w, "policy warning");
        }
        let d = &snapshot.digests;
        tracing::info!(
            dir = %dir.display(),
            generation = snapshot.generation,
            policies = snapshot.policy_count(),
            files = snapshot.policy_files,
            content_digest = %d.content,
            policy_set_digest = %d.policy_set,
            schema_digest = %d.schema,
            entities_digest = d.entities.as_deref().unwrap_or("none"),
            "policy set loaded"
        );
        Ok(Self {
            options,
            ..Self::from_snapshot(snapshot)
        })
    }

    /// A store serving `snapshot`, reloading from its directory.
    pub fn from_snapshot(snapshot: Snapshot) -> Self {
        Self {
            dir: snapshot.dir.clone(),
            options: LoadOptions::default(),
            current: ArcSwap::from_pointee(snapshot),
            status: Mutex::new(ReloadStatus {
                in_sync: true,
                ..ReloadStatus::default()
            }),
            reloading: Mutex::new(()),
        }
    }

    /// The policy directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The snapshot serving now. Hold the `Arc` for the whole decision.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// How reloads went so far.
    pub fn status(&self) -> ReloadStatus {
        lock(&self.status).clone()
    }

    /// Read the directory again and swap in the result if it is valid and
    /// differs from what serves now (or always, with `force`). An invalid
    /// directory keeps the last good snapshot and logs every problem.
    pub fn reload(&self, force: bool) -> ReloadOutcome {
        let _one_at_a_time = lock(&self.reloading);
        let current = self.snapshot();
        let result = read_sources(&self.dir).and_then(|sources| {
            if !force && sources.fingerprint == current.fingerprint {
                return Ok(None);
            }
            build_with_big_stack(&sources, current.generation + 1, self.options).map(Some)
        });
        let mut status = lock(&self.status);
        status.last_attempt = Some(SystemTime::now());
        match result {
            Ok(None) => {
                tracing::debug!(
                    dir = %self.dir.display(),
                    generation = current.generation,
                    "policy files unchanged: nothing to reload"
                );
                status.in_sync = true;
                status.last_errors.clear();
                ReloadOutcome::Unchanged
            }
            Ok(Some(next)) => {
                let generation = next.generation;
                for w in next.warnings.one_line_each() {
                    tracing::warn!(warning = %w, "policy warning");
                }
                let diff = next.digests.diff_from(&current.digests);
                log_reload(&self.dir, &current, &next, &diff);
                self.current.store(Arc::new(next));
                status.in_sync = true;
                status.last_errors.clear();
                status.successes += 1;
                status.last_reload = Some(LastReload {
                    from_generation: current.generation,
                    to_generation: generation,
                    at: SystemTime::now(),
                    diff: diff.clone(),
                });
                ReloadOutcome::Reloaded { generation, diff }
            }
            Err(problems) => {
                let lines = problems.one_line_each();
                for p in &problems.0 {
                    let line = p.one_line();
                    match p.severity {
                        Severity::Error => {
                            tracing::error!(problem = %line, "policy reload rejected")
                        }
                        Severity::Warning => {
                            tracing::warn!(problem = %line, "policy reload rejected (a warning)")
                        }
                    }
                }
                tracing::error!(
                    generation = current.generation,
                    errors = problems.errors().count(),
                    "invalid policy change: still serving the last good policies"
                );
                status.in_sync = false;
                status.last_errors = lines;
                status.failures += 1;
                ReloadOutcome::Failed(problems)
            }
        }
    }
}

/// One line per reload: what it changed, as structured fields. Id lists are JSON
/// arrays (ids may hold any character), at most [`MAX_LOGGED_IDS`] each; the
/// counts are exact.
fn log_reload(dir: &Path, current: &Snapshot, next: &Snapshot, diff: &PolicyDiff) {
    let ids = |ids: &[String]| {
        let shown: Vec<&String> = ids.iter().take(MAX_LOGGED_IDS).collect();
        serde_json::to_string(&shown).unwrap_or_default()
    };
    let message = if diff.is_empty() {
        "policies reloaded: no policy, schema or entity data changed"
    } else {
        "policies reloaded"
    };
    tracing::info!(
        dir = %dir.display(),
        generation = next.generation,
        previous_generation = current.generation,
        policies = next.policy_count(),
        files = next.policy_files,
        added_count = diff.added.len(),
        removed_count = diff.removed.len(),
        changed_count = diff.changed.len(),
        added = %ids(&diff.added),
        removed = %ids(&diff.removed),
        changed = %ids(&diff.changed),
        ids_truncated = [&diff.added, &diff.removed, &diff.changed]
            .iter()
            .any(|l| l.len() > MAX_LOGGED_IDS),
        schema_changed = diff.schema_changed,
        entities_changed = diff.entities_changed,
        content_digest = %next.digests.content,
        previous_content_digest = %current.digests.content,
        "{message}"
    );
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves plain data behind; keep going.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
