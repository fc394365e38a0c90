//! The command-line flags: the highest precedence, over the environment and the file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{FileConfig, LogFormat};

/// Values given as command-line flags (highest precedence).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--policies`.
    pub policies: Option<PathBuf>,
    /// `--grpc-listen`.
    pub grpc_listen: Option<String>,
    /// `--http-listen`.
    pub http_listen: Option<String>,
    /// `--admin-listen`.
    pub admin_listen: Option<String>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
    /// `--dry-run` (only ever turns it on).
    pub dry_run: bool,
    /// `--shadow-policies`.
    pub shadow_policies: Option<PathBuf>,
}

/// Apply the flags to the merged file and environment, and record where those values came from.
pub(super) fn apply(
    fc: &mut FileConfig,
    flags: &Overrides,
    origins: &mut BTreeMap<String, String>,
) {
    let mut set = |key: &str, flag: &str| {
        origins.insert(key.into(), format!("flag `--{flag}`"));
    };
    if let Some(p) = &flags.policies {
        fc.policies = Some(p.clone());
        set("policies", "policies");
    }
    if let Some(a) = &flags.grpc_listen {
        fc.grpc_listen = Some(a.clone());
        set("grpc_listen", "grpc-listen");
    }
    if let Some(a) = &flags.http_listen {
        fc.http_listen = Some(a.clone());
        set("http_listen", "http-listen");
    }
    if let Some(a) = &flags.admin_listen {
        fc.admin_listen = Some(a.clone());
        set("admin_listen", "admin-listen");
    }
    if let Some(p) = &flags.shadow_policies {
        fc.shadow.policies = Some(p.clone());
        set("shadow.policies", "shadow-policies");
    }
    if let Some(f) = flags.log_format {
        fc.log.format = Some(f);
        set("log.format", "log-format");
    }
    if flags.dry_run {
        fc.decisions.dry_run = Some(true);
        set("decisions.dry_run", "dry-run");
    }
}
