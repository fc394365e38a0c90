//! Policy test suites: YAML files `*.test.yaml` anywhere under a policy directory,
//! each a list of cases with the decision they expect, run through the one decision
//! core ([`crate::authz`]) on the directory's snapshot. Pure: reading suites and
//! deciding their cases; `mcp-authz test` prints.
//!
//! The policy loader reads only `*.cedar`, `*.cedarschema` and entity data, so a test
//! file is never loaded as a policy, and is not an input of the snapshot's
//! fingerprint: editing one does not make a new snapshot.
//!
//! # Format
//!
//! ```yaml
//! name: document access
//! fixtures:
//!   principals:              # named users, used as `user: <name>`
//!     contractor:
//!       user: carol          # the `Mcp::User` id (default: the fixture's name)
//!       groups: [contractors]
//!       scopes: [docs.read]
//!       claims: { department: engineering }
//!       application: corpassist
//!   entities: []             # extra entities, in Cedar's JSON entity format
//! cases:
//!   - name: a contractor cannot read finance documents
//!     user: contractor
//!     server: docs
//!     tool: get_document     # the action: `tools/call` (typed: the tool's own action)
//!     arguments: { document_id: finance/budget }
//!     expect: deny           # allow | deny | invalid
//!     policies:              # optional: the determining policies, per principal
//!       user: [contractors-no-finance-documents]
//!     reason: forbid         # optional: a substring of the reason
//! ```
//!
//! Unknown keys are refused with their file and line: a misspelt expectation can never
//! make a case that tests nothing.

mod run;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use cedar_policy::EntityUid;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::authz::{DecisionRequest, RequestEntity};
use crate::identity::{GivenError, GivenFacts};
use crate::mcp::{self, Target};

pub use run::{CaseResult, Coverage, Got, Report, got, run};

/// How a test suite's file name ends.
pub const SUITE_SUFFIX: &str = ".test.yaml";

/// Largest suite file read.
const MAX_SUITE_BYTES: u64 = 16 * 1024 * 1024;

/// A suite that cannot be read: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuiteError {
    /// The file, as found under the policy directory.
    pub file: String,
    /// The 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for SuiteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// What a case expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// The request is allowed.
    Allow,
    /// The request is evaluated and denied.
    Deny,
    /// The request is refused before evaluation: it does not fit the policies (an
    /// unknown action, context the schema refuses, an undeclared tool or argument, a
    /// deployment rule).
    Invalid,
}

impl Expect {
    /// `allow`, `deny` or `invalid`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Invalid => "invalid",
        }
    }
}

/// The determining policies a case expects, per principal (exactly these, in any order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedPolicies {
    /// Of the user's evaluation.
    pub user: Option<Vec<String>>,
    /// Of the application's evaluation.
    pub application: Option<Vec<String>>,
}

/// One case, ready to decide.
#[derive(Debug, Clone)]
pub struct Case {
    /// Its name.
    pub name: String,
    /// Where it starts in its file (1-based), when found.
    pub line: Option<usize>,
    /// The request it decides.
    pub request: DecisionRequest,
    /// The decision it expects.
    pub expect: Expect,
    /// The determining policies it expects, if it says.
    pub policies: Option<ExpectedPolicies>,
    /// A substring of the reason it expects, if it says.
    pub reason: Option<String>,
}

/// A suite: its cases, read from one file.
#[derive(Debug, Clone)]
pub struct Suite {
    /// Its name.
    pub name: String,
    /// Its file, relative to the policy directory.
    pub file: String,
    /// Its cases, in the file's order.
    pub cases: Vec<Case>,
}

// ---------------------------------------------------------------------------------------
// The file format.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SuiteFile {
    name: String,
    #[serde(default)]
    fixtures: Fixtures,
    cases: Vec<CaseFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixtures {
    #[serde(default)]
    principals: BTreeMap<String, PrincipalFile>,
    #[serde(default)]
    entities: Vec<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalFile {
    user: Option<String>,
    application: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    claims: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    name: String,
    user: Option<String>,
    application: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    claims: Map<String, Value>,
    server: Option<String>,
    method: Option<String>,
    tool: Option<String>,
    resource: Option<String>,
    prompt: Option<String>,
    arguments: Option<Map<String, Value>>,
    #[serde(default)]
    context: Map<String, Value>,
    expect: Expect,
    policies: Option<ExpectedPolicies>,
    reason: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Reading.

/// The suite files under `dir` (`*.test.yaml`, hidden entries skipped as the policy
/// loader skips them), as paths relative to `dir` with `/`, sorted.
pub fn find(dir: &Path) -> Result<Vec<(String, PathBuf)>, SuiteError> {
    let meta = std::fs::metadata(dir).map_err(|e| SuiteError {
        file: dir.display().to_string(),
        line: None,
        message: format!("cannot read the directory: {e}"),
    })?;
    if !meta.is_dir() {
        return Err(SuiteError {
            file: dir.display().to_string(),
            line: None,
            message: "not a directory".into(),
        });
    }
    // The files the policy loader finds (a directory it cannot read has no suites).
    Ok(crate::policy::files_under(dir, &mut Vec::new())
        .into_iter()
        .filter(|(rel, _)| rel.ends_with(SUITE_SUFFIX))
        .collect())
}

/// Read the suite in `path` (shown as `file`).
pub fn read(file: &str, path: &Path) -> Result<Suite, SuiteError> {
    let error = |line, message: String| SuiteError {
        file: file.to_owned(),
        line,
        message,
    };
    match std::fs::metadata(path) {
        Ok(m) if m.len() > MAX_SUITE_BYTES => {
            return Err(error(
                None,
                format!(
                    "{} bytes, more than the limit of {MAX_SUITE_BYTES}",
                    m.len()
                ),
            ));
        }
        Ok(_) => {}
        Err(e) => return Err(error(None, format!("cannot read: {e}"))),
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| error(None, format!("cannot read: {e}")))?;
    parse(file, &text)
}

/// Read a suite from its text (`file` names it in errors).
pub fn parse(file: &str, text: &str) -> Result<Suite, SuiteError> {
    let error = |line, message: String| SuiteError {
        file: file.to_owned(),
        line,
        message,
    };
    let parsed: SuiteFile = serde_norway::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line());
        // The location is reported apart; the crate's message repeats it.
        let message = e.to_string();
        let message = match message.rsplit_once(" at line ") {
            Some((head, _)) if line.is_some() => head.to_owned(),
            _ => message,
        };
        error(line, message)
    })?;
    if parsed.name.trim().is_empty() {
        return Err(error(
            line_of(text, "name"),
            "the suite's `name` is empty".into(),
        ));
    }
    if parsed.cases.is_empty() {
        return Err(error(
            line_of(text, "cases"),
            "the suite has no cases: a suite must test something".into(),
        ));
    }
    let entities = parsed
        .fixtures
        .entities
        .iter()
        .enumerate()
        .map(|(i, e)| {
            entity(e).map_err(|m| {
                error(
                    line_of(text, "entities"),
                    format!("fixture entity {}: {m}", i + 1),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let lines = case_lines(text);
    let mut names = HashSet::new();
    let mut cases = Vec::with_capacity(parsed.cases.len());
    for c in &parsed.cases {
        let line = lines.get(c.name.as_str()).copied();
        if c.name.trim().is_empty() {
            return Err(error(line, "a case's `name` is empty".into()));
        }
        if !names.insert(c.name.as_str()) {
            return Err(error(line, format!("case `{}` is named twice", c.name)));
        }
        let request = case_request(c, &parsed.fixtures.principals, &entities)
            .map_err(|m| error(line, format!("case `{}`: {m}", c.name)))?;
        cases.push(Case {
            name: c.name.clone(),
            line,
            request,
            expect: c.expect,
            policies: c.policies.clone(),
            reason: c.reason.clone(),
        });
    }
    Ok(Suite {
        name: parsed.name,
        file: file.to_owned(),
        cases,
    })
}

/// The 1-based line of the first `key:` in `text`, the way a person writes it
/// (`key: ...` or `- key: ...`, indented or not).
fn line_of(text: &str, key: &str) -> Option<usize> {
    let prefix = format!("{key}:");
    text.lines()
        .position(|l| {
            l.trim_start()
                .trim_start_matches("- ")
                .trim_start()
                .starts_with(&prefix)
        })
        .map(|i| i + 1)
}

/// The 1-based line of each case name, found in one pass: `- name: NAME` or an indented
/// `name: NAME`, the value quoted or not (the first line for a name given twice).
fn case_lines(text: &str) -> std::collections::HashMap<&str, usize> {
    let mut lines = std::collections::HashMap::new();
    for (i, l) in text.lines().enumerate() {
        // The suite's own `name:` is not indented.
        if !l.starts_with([' ', '\t', '-']) {
            continue;
        }
        let l = l.trim_start().trim_start_matches("- ").trim_start();
        let Some(rest) = l.strip_prefix("name:") else {
            continue;
        };
        let rest = rest.trim();
        let name = rest
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .or_else(|| rest.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')))
            .unwrap_or(rest);
        lines.entry(name).or_insert(i + 1);
    }
    lines
}

/// An entity in Cedar's JSON entity format: `uid`, `parents`, `attrs`.
fn entity(value: &Value) -> Result<RequestEntity, String> {
    let Value::Object(map) = value else {
        return Err("not an object with `uid`, `attrs` and `parents`".into());
    };
    if let Some(k) = map
        .keys()
        .find(|k| !matches!(k.as_str(), "uid" | "attrs" | "parents" | "tags"))
    {
        return Err(format!(
            "unknown key `{k}` (expected `uid`, `attrs`, `parents`)"
        ));
    }
    if map.contains_key("tags") {
        return Err("entity tags are not supported in fixtures".into());
    }
    let uid_of = |v: &Value| {
        EntityUid::from_json(v.clone()).map_err(|e| format!("`{v}` is not an entity uid: {e}"))
    };
    let uid = uid_of(map.get("uid").ok_or("no `uid`")?)?;
    let parents = match map.get("parents") {
        None => Vec::new(),
        Some(Value::Array(ps)) => ps.iter().map(uid_of).collect::<Result<_, _>>()?,
        Some(_) => return Err("`parents` is not a list".into()),
    };
    let attrs = match map.get("attrs") {
        None => Map::new(),
        Some(Value::Object(a)) => a.clone(),
        Some(_) => return Err("`attrs` is not an object".into()),
    };
    Ok(RequestEntity {
        uid,
        parents,
        attrs,
    })
}

/// The request of a case, built as `check` builds it: [`mcp::request_for`] for the
/// action and resource, [`GivenFacts`] for the principals and token facts.
fn case_request(
    c: &CaseFile,
    principals: &BTreeMap<String, PrincipalFile>,
    entities: &[RequestEntity],
) -> Result<DecisionRequest, String> {
    let given = given_facts(c, principals)?;
    let targets: Vec<(&str, &String)> = [
        ("tool", &c.tool),
        ("resource", &c.resource),
        ("prompt", &c.prompt),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
    .collect();
    let (kind, target) = match targets.as_slice() {
        [] => (None, None),
        [(k, v)] => (Some(*k), Some(v.as_str())),
        _ => return Err("give one of `tool`, `resource` and `prompt`".into()),
    };
    let method = match (&c.method, kind) {
        (Some(m), _) => m.clone(),
        (None, Some("resource")) => "resources/read".into(),
        (None, Some("prompt")) => "prompts/get".into(),
        (None, _) => "tools/call".into(),
    };
    if !method.contains("::\"") {
        let wanted = match mcp::target_of(&method) {
            Target::Tool => Some("tool"),
            Target::Resource => Some("resource"),
            Target::Prompt => Some("prompt"),
            Target::Server => None,
        };
        if wanted != kind && !(method == "completion/complete" && kind.is_some()) {
            return Err(match wanted {
                Some(w) => format!("`{method}` needs `{w}`"),
                None => format!(
                    "`{method}` acts on a server: no `{}`",
                    kind.unwrap_or("target")
                ),
            });
        }
    }
    let server = c.server.as_deref();
    let resource = match (target, server) {
        (Some(t), _) => t,
        (None, Some(s)) => s,
        (None, None) => return Err("give the `server`".into()),
    };
    let mut request = mcp::request_for(&method, resource, server)?;
    request.context = c.context.clone();
    if let Some(arguments) = &c.arguments {
        if request.context.contains_key("arguments") {
            return Err("give `arguments` or `context.arguments`, not both".into());
        }
        request
            .context
            .insert("arguments".into(), Value::Object(arguments.clone()));
    }
    request.entities = entities.to_vec();
    let identity = given.identity().map_err(|e| match e {
        GivenError::GroupsWithoutUser => "`groups` needs a `user`: groups are the user's".into(),
        GivenError::EmptyGroup => "`groups` has an empty group name".into(),
        GivenError::BadScope(s) => {
            format!("`scopes` must be single scopes, without spaces, not `{s}`")
        }
    })?;
    identity.apply_to(&mut request);
    merge_same_entities(&mut request.entities);
    Ok(request)
}

/// The user, application and token facts of a case: its own, added to those of the
/// fixture principal its `user` names.
fn given_facts(
    c: &CaseFile,
    principals: &BTreeMap<String, PrincipalFile>,
) -> Result<GivenFacts, String> {
    let fixture = c.user.as_ref().and_then(|u| principals.get(u));
    let mut given = match (fixture, &c.user) {
        (Some(p), Some(name)) => GivenFacts {
            user: Some(p.user.clone().unwrap_or_else(|| name.clone())),
            application: p.application.clone(),
            groups: p.groups.clone(),
            scopes: p.scopes.clone(),
            claims: p.claims.clone(),
        },
        _ => GivenFacts {
            user: c.user.clone(),
            ..GivenFacts::default()
        },
    };
    if let Some(a) = &c.application {
        given.application = Some(a.clone());
    }
    for g in &c.groups {
        if !given.groups.contains(g) {
            given.groups.push(g.clone());
        }
    }
    for s in &c.scopes {
        if !given.scopes.contains(s) {
            given.scopes.push(s.clone());
        }
    }
    for (k, v) in &c.claims {
        given.claims.insert(k.clone(), v.clone());
    }
    Ok(given)
}

/// One request entity per uid: a fixture entity and the groups a token gives the same
/// user are one entity (each addition replaces the entity data's, not the others').
fn merge_same_entities(entities: &mut Vec<RequestEntity>) {
    let mut merged: Vec<RequestEntity> = Vec::with_capacity(entities.len());
    for e in entities.drain(..) {
        match merged.iter_mut().find(|m| m.uid == e.uid) {
            Some(m) => {
                for p in e.parents {
                    if !m.parents.contains(&p) {
                        m.parents.push(p);
                    }
                }
                for (k, v) in e.attrs {
                    m.attrs.entry(k).or_insert(v);
                }
            }
            None => merged.push(e),
        }
    }
    *entities = merged;
}

#[cfg(test)]
mod tests;
