//! Reload the policy store when its directory changes.
//!
//! The whole directory is watched (recursively), not single files, so that a
//! Kubernetes ConfigMap update — which writes a new `..<timestamp>` directory and
//! renames the `..data` symlink over the old one — is seen. Events are debounced.
//! When the watch is invalidated (the directory replaced, or a watch error), it is
//! set up again; a periodic check of the files' fingerprint catches anything a
//! watch could still miss.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::{PolicyStore, ReloadOutcome};

/// How the watcher behaves.
#[derive(Debug, Clone, Copy)]
pub struct WatchOptions {
    /// Quiet time after the last change before reloading.
    pub debounce: Duration,
    /// Interval of the fallback check of the files; zero turns it off.
    pub poll_interval: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(250),
            poll_interval: Duration::from_secs(5),
        }
    }
}

enum Signal {
    Changed,
    Invalidated,
}

/// Watch the store's directory until the returned task is aborted; reload on
/// changes, and on SIGHUP (forced). Must be called inside a Tokio runtime.
///
/// The watch is armed before this returns, so no change made after it can be missed;
/// a change made between loading the snapshot and arming is caught by a first check.
pub fn spawn_watcher(
    store: Arc<PolicyStore>,
    options: WatchOptions,
) -> tokio::task::JoinHandle<()> {
    let (tx, rx) = mpsc::channel::<Signal>(1024);
    let dir = store.dir().to_path_buf();
    let watcher = arm(&dir, tx.clone());
    let armed = Armed {
        armed_target: std::fs::canonicalize(&dir).ok(),
        tx,
        rx,
        watcher,
    };
    tokio::spawn(async move {
        let s = Arc::clone(&store);
        if let Err(e) = tokio::task::spawn_blocking(move || s.reload(false)).await {
            tracing::error!(error = %e, "policy reload task failed");
        }
        watch_loop(store, options, armed).await;
    })
}

/// A watch set up on the directory, and the channel its events arrive on.
struct Armed {
    tx: mpsc::Sender<Signal>,
    rx: mpsc::Receiver<Signal>,
    watcher: Option<RecommendedWatcher>,
    armed_target: Option<std::path::PathBuf>,
}

async fn watch_loop(store: Arc<PolicyStore>, options: WatchOptions, armed: Armed) {
    let Armed {
        tx,
        mut rx,
        mut watcher,
        mut armed_target,
    } = armed;
    let dir = store.dir().to_path_buf();
    let mut hangup = sighup();
    let poll = if options.poll_interval.is_zero() {
        Duration::from_secs(365 * 24 * 3600)
    } else {
        options.poll_interval
    };
    let mut ticker = tokio::time::interval(poll);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        let mut force = false;
        let mut rearm = watcher.is_none();
        tokio::select! {
            signal = rx.recv() => {
                let Some(signal) = signal else { return };
                rearm |= matches!(signal, Signal::Invalidated);
                // Debounce: wait until the directory has been quiet for a while.
                loop {
                    match tokio::time::timeout(options.debounce, rx.recv()).await {
                        Ok(Some(Signal::Invalidated)) => rearm = true,
                        Ok(Some(Signal::Changed)) => {}
                        Ok(None) => return,
                        Err(_) => break,
                    }
                }
            }
            _ = ticker.tick() => {}
            Some(()) = recv_hangup(&mut hangup) => {
                tracing::info!("SIGHUP: reloading policies");
                force = true;
            }
        }
        let target = std::fs::canonicalize(&dir).ok();
        if rearm || target != armed_target {
            drop(watcher.take());
            watcher = arm(&dir, tx.clone());
            armed_target = target;
        }
        let s = Arc::clone(&store);
        match tokio::task::spawn_blocking(move || s.reload(force)).await {
            Ok(
                ReloadOutcome::Reloaded { .. }
                | ReloadOutcome::Unchanged
                | ReloadOutcome::Failed(_),
            ) => {}
            Err(e) => tracing::error!(error = %e, "policy reload task failed"),
        }
    }
}

fn arm(dir: &Path, tx: mpsc::Sender<Signal>) -> Option<RecommendedWatcher> {
    let root = dir.to_path_buf();
    let handler = move |res: notify::Result<notify::Event>| {
        let signal = match res {
            // Reading the files (our own reloads among them) is no change.
            Ok(event) if event.kind.is_access() => return,
            Ok(event) => {
                let root_gone = event.kind.is_remove() && event.paths.iter().any(|p| p == &root);
                if root_gone {
                    Signal::Invalidated
                } else {
                    Signal::Changed
                }
            }
            Err(_) => Signal::Invalidated,
        };
        // A full channel already holds a pending reload.
        let _ = tx.try_send(signal);
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot create a file watcher; relying on periodic checks");
            return None;
        }
    };
    match watcher.watch(dir, RecursiveMode::Recursive) {
        Ok(()) => {
            tracing::debug!(dir = %dir.display(), "watching policy directory");
            Some(watcher)
        }
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the policy directory; relying on periodic checks");
            None
        }
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

#[cfg(unix)]
fn sighup() -> Hangup {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}
#[cfg(not(unix))]
fn sighup() -> Hangup {
    None
}

#[cfg(unix)]
async fn recv_hangup(h: &mut Hangup) -> Option<()> {
    match h {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}
#[cfg(not(unix))]
async fn recv_hangup(_: &mut Hangup) -> Option<()> {
    std::future::pending().await
}
