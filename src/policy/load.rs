//! Reading a policy directory and building a validated [`Snapshot`] from it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::SystemTime;

use cedar_policy::{
    Entities, EntityUid, PolicyId, PolicySet, Schema, ValidationMode, Validator,
    schema_str_to_json_with_resolved_types,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::authoring::{self, LoadOptions, Located};
use super::diagnostics::{Problem, Problems, Severity, error_chain};
use super::index::PolicyIndex;
use super::shape::{Shape, context_shapes};
use super::{PolicyOrigin, Snapshot};

/// The entity data file of a policy directory (at its top level).
pub const ENTITIES_FILE: &str = "entities.json";
/// Largest policy, schema or entity file read.
pub const MAX_FILE_BYTES: u64 = 32 * 1024 * 1024;
/// Most files walked in a policy directory.
const MAX_FILES: usize = 10_000;
/// Deepest directory nesting walked.
const MAX_DEPTH: usize = 16;
/// Deepest bracket nesting accepted in a policy before Cedar parses it.
const MAX_NESTING: usize = 200;
/// Most operators accepted in one policy. A chain of binary operators nests as deep
/// as it is long in Cedar's syntax tree, which is parsed, evaluated and dropped
/// recursively; a legitimate policy stays far below this.
const MAX_OPERATORS: usize = 2_000;

/// The files of a policy directory, read into memory.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The directory they were read from.
    pub dir: PathBuf,
    /// Policy files: relative path and text, sorted by path.
    pub policies: Vec<(String, String)>,
    /// The schema file: relative path and text.
    pub schema: (String, String),
    /// The entity data file, if there is one.
    pub entities: Option<(String, String)>,
    /// A hash of every path and text above: equal fingerprints mean equal inputs.
    pub fingerprint: u64,
}

/// Read every input file of a policy directory.
pub fn read_sources(dir: &Path) -> Result<Sources, Problems> {
    let mut problems = Vec::new();
    let meta = std::fs::metadata(dir).map_err(|e| {
        Problems(vec![Problem::error(
            None,
            format!("cannot read policy directory `{}`: {e}", dir.display()),
        )])
    })?;
    if !meta.is_dir() {
        return Err(Problems(vec![Problem::error(
            None,
            format!("`{}` is not a directory", dir.display()),
        )]));
    }
    let mut found = Vec::new();
    let mut visited = HashSet::new();
    walk(dir, dir, 0, &mut found, &mut visited, &mut problems);
    found.sort();

    let mut policies = Vec::new();
    let mut schemas = Vec::new();
    let mut entities = None;
    for (rel, path) in found {
        let is_policy = rel.ends_with(".cedar");
        let is_schema = rel.ends_with(".cedarschema");
        let is_entities = rel == ENTITIES_FILE;
        if !(is_policy || is_schema || is_entities) {
            continue;
        }
        let Some(text) = read_text(&path, &rel, &mut problems) else {
            continue;
        };
        if is_policy {
            policies.push((rel, text));
        } else if is_schema {
            schemas.push((rel, text));
        } else {
            entities = Some((rel, text));
        }
    }
    let schema = match schemas.len() {
        1 => schemas.pop(),
        0 => {
            if !problems.iter().any(|p: &Problem| {
                p.file
                    .as_deref()
                    .is_some_and(|f| f.ends_with(".cedarschema"))
            }) {
                problems.push(
                    Problem::error(
                        None,
                        format!("no `*.cedarschema` file in `{}`", dir.display()),
                    )
                    .with_help(Some(
                        "a policy directory holds exactly one Cedar schema".into(),
                    )),
                );
            }
            None
        }
        _ => {
            let names: Vec<_> = schemas.iter().map(|(r, _)| format!("`{r}`")).collect();
            problems.push(
                Problem::error(
                    None,
                    format!("more than one schema file: {}", names.join(", ")),
                )
                .with_help(Some(
                    "a policy directory holds exactly one Cedar schema".into(),
                )),
            );
            None
        }
    };
    if policies.is_empty()
        && !problems
            .iter()
            .any(|p| p.file.as_deref().is_some_and(|f| f.ends_with(".cedar")))
    {
        problems.push(
            Problem::error(
                None,
                format!("no `*.cedar` policy files in `{}`", dir.display()),
            )
            .with_help(Some("mcp-authz never runs with an empty policy set".into())),
        );
    }
    match schema {
        Some(schema) if problems.is_empty() => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            policies.hash(&mut h);
            schema.hash(&mut h);
            entities.hash(&mut h);
            Ok(Sources {
                dir: dir.to_path_buf(),
                policies,
                schema,
                entities,
                fingerprint: h.finish(),
            })
        }
        _ => Err(Problems(problems)),
    }
}

fn walk(
    root: &Path,
    dir: &Path,
    depth: usize,
    found: &mut Vec<(String, PathBuf)>,
    visited: &mut HashSet<PathBuf>,
    problems: &mut Vec<Problem>,
) {
    if depth > MAX_DEPTH {
        return;
    }
    // Follow directory symlinks, but never into a loop.
    if let Ok(canon) = std::fs::canonicalize(dir)
        && !visited.insert(canon)
    {
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            problems.push(Problem::error(
                None,
                format!("cannot read `{}`: {e}", dir.display()),
            ));
            return;
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        // Hidden entries are skipped: editors' temporary files, and a Kubernetes
        // ConfigMap's `..data` / `..<timestamp>` directories, whose files are also
        // linked at the top level.
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue; // a dangling symlink, or a file removed while we read
        };
        if meta.is_dir() {
            walk(root, &path, depth + 1, found, visited, problems);
        } else if meta.is_file() {
            if found.len() >= MAX_FILES {
                problems.push(Problem::error(
                    None,
                    format!("more than {MAX_FILES} files under `{}`", root.display()),
                ));
                return;
            }
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            found.push((rel, path));
        }
    }
}

fn read_text(path: &Path, rel: &str, problems: &mut Vec<Problem>) -> Option<String> {
    let bytes = match std::fs::metadata(path) {
        Ok(m) if m.len() > MAX_FILE_BYTES => {
            problems.push(Problem::error(
                Some(rel),
                format!(
                    "file is {} bytes, more than the limit of {MAX_FILE_BYTES}",
                    m.len()
                ),
            ));
            return None;
        }
        _ => match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                problems.push(Problem::error(Some(rel), format!("cannot read file: {e}")));
                return None;
            }
        },
    };
    match String::from_utf8(bytes) {
        Ok(s) => Some(s),
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let lossy = String::from_utf8_lossy(e.as_bytes()).into_owned();
            let prefix =
                String::from_utf8_lossy(e.as_bytes().get(..valid).unwrap_or_default()).into_owned();
            let p = Problem::error(Some(rel), format!("file is not valid UTF-8 (byte {valid})"));
            problems.push(p.at_offset(&lossy, prefix.len(), 1));
            None
        }
    }
}

/// Build a validated snapshot from the sources of a policy directory, with the
/// default [`LoadOptions`].
pub fn build(sources: &Sources, generation: u64) -> Result<Snapshot, Problems> {
    build_with(sources, generation, LoadOptions::default())
}

/// Build a validated snapshot from the sources of a policy directory: parse,
/// validate against the schema, apply the authoring checks (see
/// [`super::authoring`]) and `options`.
pub fn build_with(
    sources: &Sources,
    generation: u64,
    options: LoadOptions,
) -> Result<Snapshot, Problems> {
    let mut problems = Vec::new();
    let (schema_rel, schema_text) = &sources.schema;
    let schema = match Schema::from_cedarschema_str(schema_text) {
        Ok((schema, warnings)) => {
            for w in warnings {
                problems.extend(Problem::from_diagnostic(
                    &w,
                    Some(schema_rel),
                    Some(schema_text),
                    Severity::Warning,
                ));
            }
            Some(schema)
        }
        Err(e) => {
            problems.extend(Problem::from_diagnostic(
                &e,
                Some(schema_rel),
                Some(schema_text),
                Severity::Error,
            ));
            None
        }
    };
    let Some(schema) = schema else {
        return Err(Problems(problems));
    };
    let (shapes, schema_digest): (HashMap<cedar_policy::EntityUid, Shape>, String) =
        match schema_str_to_json_with_resolved_types(schema_text) {
            Ok((json, _)) => (context_shapes(&json), digest_of_json(&json)),
            Err(e) => {
                problems.extend(Problem::from_diagnostic(
                    &e,
                    Some(schema_rel),
                    Some(schema_text),
                    Severity::Error,
                ));
                return Err(Problems(problems));
            }
        };

    let validator = Validator::new(schema.clone());
    let action_groups: HashSet<EntityUid> = schema.action_groups().cloned().collect();
    let mut policies = PolicySet::new();
    let mut origins: HashMap<String, PolicyOrigin> = HashMap::new();
    let mut written = Vec::new();
    for (rel, text) in &sources.policies {
        if let Some(p) = nesting_problem(rel, text) {
            problems.push(p);
            continue;
        }
        let parsed = match PolicySet::from_str(text) {
            Ok(p) => p,
            Err(e) => {
                for err in e.iter() {
                    problems.extend(Problem::from_diagnostic(
                        err,
                        Some(rel),
                        Some(text),
                        Severity::Error,
                    ));
                }
                continue;
            }
        };
        resource_ids_of_policies(rel, text, &parsed, &mut problems);
        let located = locate_policies(rel, text, &parsed);
        let result = validator.validate(&parsed, ValidationMode::Strict);
        problems.extend(authoring::validation_problems(
            rel,
            text,
            &parsed,
            &result,
            &authoring::ids_by_cedar_id(&located),
        ));
        authoring::action_group_equality(
            rel,
            text,
            &parsed,
            &located,
            &action_groups,
            &mut problems,
        );
        add_with_stable_ids(
            rel,
            text,
            &parsed,
            &located,
            &mut policies,
            &mut origins,
            &mut problems,
        );
        written.extend(located.into_iter().map(|located| authoring::Written {
            rel,
            text,
            located,
        }));
    }

    let mut entities_digest = None;
    let entities = match &sources.entities {
        Some((rel, text)) => load_entities(rel, text, &schema, &mut problems).map(|(e, d)| {
            entities_digest = Some(d);
            e
        }),
        None => schema
            .action_entities()
            .map_err(|e| {
                problems.push(Problem::error(
                    Some(schema_rel),
                    format!("cannot build action entities: {e}"),
                ));
            })
            .ok(),
    };

    // Undefined entity literals are told only against entity data that is there.
    if sources.entities.is_some()
        && let Some(entities) = &entities
    {
        authoring::undefined_literals(&written, &policies, entities, &mut problems);
    }
    authoring::apply_options(&mut problems, options);

    if policies.is_empty() && !problems.iter().any(|p| p.severity == Severity::Error) {
        problems.push(
            Problem::error(None, "the policy files hold no policies")
                .with_help(Some("mcp-authz never runs with an empty policy set".into())),
        );
    }
    let problems = Problems(problems);
    if problems.has_errors() {
        return Err(problems);
    }
    let Some(entities) = entities else {
        return Err(problems);
    };
    let request_envs = schema
        .request_envs()
        .map(|env| {
            (
                env.principal().clone(),
                env.action().clone(),
                env.resource().clone(),
            )
        })
        .collect();
    let index = PolicyIndex::new(&policies);
    let entity_refs = super::attribute_refs(&entities);
    let digests = ContentDigests::new(&policies, schema_digest, entities_digest);
    Ok(Snapshot {
        generation,
        dir: sources.dir.clone(),
        policies,
        schema,
        entities,
        context_shapes: shapes,
        request_envs,
        origins,
        fingerprint: sources.fingerprint,
        warnings: problems,
        loaded_at: SystemTime::now(),
        policy_files: sources.policies.len(),
        index,
        entity_refs,
        digests,
    })
}

/// SHA-256 digests of what a snapshot was built from, each written `sha256:<hex>`:
/// what a reload changed, and whether two instances serve the same content.
///
/// Formatting does not count: a policy's digest is of its Cedar tokens (comments
/// dropped, whitespace only where it separates two words), the schema's of its JSON
/// form with common types resolved, the entity data's of its JSON with object keys
/// sorted. Any other edit counts, even one that means the same (`(a)` for `a`).
/// Tokens rather than Cedar's JSON form of a policy: that form is built by parsing
/// each policy's text again, which would add a third to the time a snapshot takes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContentDigests {
    /// Each policy and template, by id.
    pub policies: BTreeMap<String, String>,
    /// The schema.
    pub schema: String,
    /// The entity data file; `None` when there is none.
    pub entities: Option<String>,
    /// Of every policy id with its digest.
    pub policy_set: String,
    /// Of the policy set, the schema and the entity data: equal content digests, equal inputs of every decision.
    pub content: String,
}

/// What changed between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyDiff {
    /// Ids of the policies only the newer one has, sorted.
    pub added: Vec<String>,
    /// Ids of the policies only the older one has, sorted.
    pub removed: Vec<String>,
    /// Ids of the policies both have, with different content, sorted.
    pub changed: Vec<String>,
    /// Whether the schema changed.
    pub schema_changed: bool,
    /// Whether the entity data changed (or appeared, or went away).
    pub entities_changed: bool,
}

impl PolicyDiff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && !self.schema_changed
            && !self.entities_changed
    }
}

impl ContentDigests {
    /// The digests of `policies` (under their stable ids) with those of the schema and entity data.
    pub fn new(policies: &PolicySet, schema: String, entities: Option<String>) -> Self {
        let mut digests = BTreeMap::new();
        for p in policies.policies() {
            digests.insert(p.id().to_string(), digest_of_tokens(&p.to_string()));
        }
        for t in policies.templates() {
            digests.insert(t.id().to_string(), digest_of_tokens(&t.to_string()));
        }
        let mut set = Sha256::new();
        for (id, digest) in &digests {
            // Length-prefixed: no two different sets write the same bytes.
            set.update((id.len() as u64).to_le_bytes());
            set.update(id.as_bytes());
            set.update(digest.as_bytes());
        }
        let policy_set = hex_digest(set);
        let mut content = Sha256::new();
        content.update(policy_set.as_bytes());
        content.update(schema.as_bytes());
        content.update(entities.as_deref().unwrap_or("none").as_bytes());
        Self {
            policies: digests,
            schema,
            entities,
            policy_set,
            content: hex_digest(content),
        }
    }

    /// What changed from `older` to `self`.
    pub fn diff_from(&self, older: &ContentDigests) -> PolicyDiff {
        let mut diff = PolicyDiff {
            schema_changed: self.schema != older.schema,
            entities_changed: self.entities != older.entities,
            ..PolicyDiff::default()
        };
        for (id, digest) in &self.policies {
            match older.policies.get(id) {
                None => diff.added.push(id.clone()),
                Some(d) if d != digest => diff.changed.push(id.clone()),
                Some(_) => {}
            }
        }
        diff.removed = older
            .policies
            .keys()
            .filter(|id| !self.policies.contains_key(*id))
            .cloned()
            .collect();
        diff
    }
}

/// The digest of the Cedar tokens of a policy's text: string literals as written,
/// comments dropped, whitespace kept (as one space) only between two word
/// characters, where it separates tokens. Two valid texts with the same digest
/// have the same tokens, so the same meaning.
fn digest_of_tokens(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut space = false;
    let mut after_word = false;
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push(c);
                let mut escaped = false;
                for c in chars.by_ref() {
                    out.push(c);
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                space = false;
                after_word = false;
            }
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
                space = true;
            }
            c if c.is_whitespace() => space = true,
            c => {
                let word = c.is_alphanumeric() || c == '_';
                if space && word && after_word {
                    out.push(' ');
                }
                out.push(c);
                space = false;
                after_word = word;
            }
        }
    }
    let mut h = Sha256::new();
    h.update(out.as_bytes());
    hex_digest(h)
}

/// The digest of a JSON value written canonically (object keys sorted, no whitespace).
pub(crate) fn digest_of_json(value: &Value) -> String {
    let mut out = Vec::new();
    write_canonical(value, &mut out);
    let mut h = Sha256::new();
    h.update(&out);
    hex_digest(h)
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                if let Some(v) = map.get(k) {
                    write_canonical(v, out);
                }
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(v, out);
            }
            out.push(b']');
        }
        Value::String(s) => write_string(s, out),
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(Value::from(s).to_string().as_bytes());
}

fn hex_digest(h: Sha256) -> String {
    use std::fmt::Write;
    let mut out = String::from("sha256:");
    for b in h.finalize() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The policies and templates of one file in source order, with their stable ids
/// (`@id("...")`, else `<file>:<index>`) and where each starts in the file.
fn locate_policies(rel: &str, text: &str, parsed: &PolicySet) -> Vec<Located> {
    // Cedar names a file's policies `policy0`, `policy1`, ... in source order,
    // templates included.
    let index_of = |id: &PolicyId| -> usize {
        AsRef::<str>::as_ref(id)
            .strip_prefix("policy")
            .and_then(|n| n.parse().ok())
            .unwrap_or(usize::MAX)
    };
    let mut items: Vec<(usize, PolicyId, Option<String>, String, bool)> = parsed
        .policies()
        .map(|p| {
            (
                index_of(p.id()),
                p.id().clone(),
                p.annotation("id").map(str::to_owned),
                p.to_string(),
                false,
            )
        })
        .chain(parsed.templates().map(|t| {
            (
                index_of(t.id()),
                t.id().clone(),
                t.annotation("id").map(str::to_owned),
                t.to_string(),
                true,
            )
        }))
        .collect();
    items.sort_by_key(|(i, ..)| *i);
    let mut cursor = 0;
    items
        .into_iter()
        .map(|(index, cedar, annotation, source, template)| {
            // Where the policy starts: its text appears in order in the file.
            let offset = text
                .get(cursor..)
                .and_then(|rest| rest.find(source.trim()))
                .map_or(cursor, |o| cursor + o);
            cursor = offset.min(text.len());
            Located {
                cedar,
                id: annotation.unwrap_or_else(|| format!("{rel}:{index}")),
                offset: cursor,
                template,
            }
        })
        .collect()
}

/// Give each policy of one file its stable id (see [`locate_policies`]) and add it
/// to the combined set; report duplicates with both places.
fn add_with_stable_ids(
    rel: &str,
    text: &str,
    parsed: &PolicySet,
    located: &[Located],
    set: &mut PolicySet,
    origins: &mut HashMap<String, PolicyOrigin>,
    problems: &mut Vec<Problem>,
) {
    let mut lines = LineCounter::default();
    for l in located {
        let offset = l.offset;
        let (line, column) = lines.locate(text, offset);
        let origin = PolicyOrigin {
            file: rel.to_owned(),
            line,
            column,
        };
        let id = l.id.clone();
        if let Some(prev) = origins.get(&id) {
            let p = Problem::error(
                Some(rel),
                format!(
                    "duplicate policy id `{id}`: also used at {}:{}:{}",
                    prev.file, prev.line, prev.column
                ),
            )
            .at_offset(text, offset, 1)
            .with_help(Some(
                "policy ids (`@id(\"...\")`) must be unique across all policy files".into(),
            ));
            problems.push(p);
            continue;
        }
        let new_id = PolicyId::new(id.clone());
        let added = if l.template {
            match parsed.template(&l.cedar) {
                Some(t) => set.add_template(t.new_id(new_id)),
                None => continue,
            }
        } else {
            match parsed.policy(&l.cedar) {
                Some(p) => set.add(p.new_id(new_id)),
                None => continue,
            }
        };
        if let Err(e) = added {
            problems.push(
                Problem::error(Some(rel), format!("cannot add policy `{id}`: {e}"))
                    .at_offset(text, offset, 1),
            );
            continue;
        }
        origins.insert(id, origin);
    }
}

/// Line and column of increasing offsets into one text, counted incrementally so
/// that locating every policy of a large file stays linear in its size.
#[derive(Default)]
struct LineCounter {
    /// Where counting stopped.
    offset: usize,
    /// 1-based line number at `offset` (0 before the first call).
    line: usize,
    /// Byte offset where that line starts.
    line_start: usize,
}

impl LineCounter {
    /// 1-based line and column (in characters) of `offset`, which must not be
    /// less than the previous call's; a smaller one counts from the start again.
    fn locate(&mut self, text: &str, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        if offset < self.offset || self.line == 0 {
            *self = Self {
                offset: 0,
                line: 1,
                line_start: 0,
            };
        }
        let passed = text.as_bytes().get(self.offset..offset).unwrap_or_default();
        for (i, b) in passed.iter().enumerate() {
            if *b == b'\n' {
                self.line += 1;
                self.line_start = self.offset + i + 1;
            }
        }
        self.offset = offset;
        let column = text[self.line_start..offset].chars().count() + 1;
        (self.line, column)
    }
}

/// The entity data and its digest.
fn load_entities(
    rel: &str,
    text: &str,
    schema: &Schema,
    problems: &mut Vec<Problem>,
) -> Option<(Entities, String)> {
    let json: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            problems.push(
                Problem::error(Some(rel), format!("entity data is not valid JSON: {e}"))
                    .at_line_col(text, e.line(), e.column()),
            );
            return None;
        }
    };
    let mut refs = Vec::new();
    super::entity_refs_in(&json, &mut refs);
    check_resource_ids(rel, text, refs, problems);
    let digest = digest_of_json(&json);
    match Entities::from_json_value(json, Some(schema)) {
        Ok(e) => Some((e, digest)),
        Err(e) => {
            let message = error_chain(&e);
            let mut p = Problem::error(Some(rel), message.clone())
                .with_help(miette::Diagnostic::help(&e).map(|h| h.to_string()));
            if let Some(offset) = locate_entity(text, &message) {
                p = p.at_offset(text, offset, 1);
            }
            problems.push(p);
            None
        }
    }
}

/// The `Mcp::Resource` entities the policies of one file name, checked.
fn resource_ids_of_policies(
    rel: &str,
    text: &str,
    parsed: &PolicySet,
    problems: &mut Vec<Problem>,
) {
    // Most files name no resource: skip writing their policies as JSON.
    if !text.contains("Resource") {
        return;
    }
    let mut refs = Vec::new();
    let policies = parsed
        .policies()
        .filter_map(|p| p.to_json().ok())
        .chain(parsed.templates().filter_map(|t| t.to_json().ok()));
    for json in policies {
        super::entity_refs_in(&json, &mut refs);
    }
    check_resource_ids(rel, text, refs, problems);
}

/// Every `Mcp::Resource` id among `uids` must be `<server>/<uri>` with the URI in
/// the normal form requests use (see [`crate::uri`]): an entity or policy
/// that names another spelling names nothing a request can ever be about, so its
/// attributes or conditions would silently not apply. A spelling with another
/// normal form, or a URI that is refused, is an error; an id that is not
/// `server/uri` at all (no server, no scheme) a warning.
fn check_resource_ids(
    rel: &str,
    text: &str,
    mut uids: Vec<EntityUid>,
    problems: &mut Vec<Problem>,
) {
    use crate::uri::{self, UriError};
    uids.retain(|u| u.type_name().to_string() == uri::RESOURCE_TYPE);
    uids.sort_by_cached_key(ToString::to_string);
    uids.dedup();
    for u in uids {
        let id = u.id().unescaped();
        let (severity, message, help) = match uri::normal_resource_id(id) {
            Ok(normal) if normal == id => continue,
            Ok(normal) => {
                let normal = EntityUid::from_type_name_and_id(
                    u.type_name().clone(),
                    cedar_policy::EntityId::new(normal),
                );
                (
                    Severity::Error,
                    format!("`{u}` is not in normal form: requests name this resource `{normal}`"),
                    format!(
                        "write `{normal}`: resource URIs are decided in their RFC 3986 normal form"
                    ),
                )
            }
            Err(e @ (UriError::NotServerAndUri | UriError::NoScheme)) => (
                Severity::Warning,
                format!("`{u}` names no resource a request can be about: {e}"),
                "an MCP resource is `Mcp::Resource::\"<server>/<uri>\"` with an absolute URI"
                    .to_owned(),
            ),
            Err(e) => (
                Severity::Error,
                format!("`{u}` names a resource URI that requests may not use: {e}"),
                "such a URI is refused on every interface, so this would never apply".to_owned(),
            ),
        };
        let mut p = Problem::error(Some(rel), message).with_help(Some(help));
        p.severity = severity;
        let needle = serde_json::to_string(id).unwrap_or_default();
        if let Some(offset) = text.find(&needle).or_else(|| text.find(id)) {
            p = p.at_offset(text, offset, needle.chars().count());
        }
        problems.push(p);
    }
}

/// Find where the entity named in a Cedar entity error (`Type::"id"`) sits in the JSON text.
fn locate_entity(text: &str, message: &str) -> Option<usize> {
    let start = message.find("::\"")? + 3;
    let rest = &message[start..];
    let mut id = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => id.push(chars.next()?),
            '"' => break,
            c => id.push(c),
        }
    }
    let needle = serde_json::to_string(&id).ok()?;
    text.find(&needle)
}

/// Reject absurd nesting (brackets, or long operator chains) before Cedar's
/// recursive parser sees it.
fn nesting_problem(rel: &str, text: &str) -> Option<Problem> {
    let mut depth = 0usize;
    let mut operators = 0usize;
    let mut policy_start = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut in_comment = false;
    let mut prev = '\0';
    for (i, c) in text.char_indices() {
        if in_comment {
            if c == '\n' {
                in_comment = false;
            }
        } else if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else {
            match c {
                '"' => in_string = true,
                '/' if prev == '/' => in_comment = true,
                '(' | '[' | '{' => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return Some(
                            Problem::error(
                                Some(rel),
                                format!("brackets nested more than {MAX_NESTING} deep"),
                            )
                            .at_offset(text, i, 1),
                        );
                    }
                }
                ')' | ']' | '}' => depth = depth.saturating_sub(1),
                ';' if depth == 0 => {
                    operators = 0;
                    policy_start = i + 1;
                }
                // `&&`, `||`, comparisons, arithmetic, `.`: each counted once per character.
                '&' | '|' | '+' | '-' | '*' | '<' | '>' | '=' | '!' | '.' => {
                    operators += 1;
                    if operators > MAX_OPERATORS * 2 {
                        let start = policy_start + text[policy_start..].len()
                            - text[policy_start..].trim_start().len();
                        return Some(
                            Problem::error(
                                Some(rel),
                                format!("policy has more than {MAX_OPERATORS} operators"),
                            )
                            .at_offset(text, start, 1)
                            .with_help(Some("split the condition into several policies".into())),
                        );
                    }
                }
                _ => {}
            }
        }
        prev = if in_comment { '\0' } else { c };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digests_of(policies: &str, schema: &str, entities: Option<&str>) -> ContentDigests {
        let sources = Sources {
            dir: PathBuf::from("mem"),
            policies: vec![("p.cedar".into(), policies.into())],
            schema: ("s.cedarschema".into(), schema.into()),
            entities: entities.map(|e| ("entities.json".into(), e.into())),
            fingerprint: 0,
        };
        match build(&sources, 1) {
            Ok(s) => s.digests,
            Err(p) => panic!("{p:?}"),
        }
    }

    const SCHEMA: &str = "entity U { n: Long }; action a appliesTo { principal: U, resource: U };";
    const ONE: &str = "@id(\"one\")\npermit (principal == U::\"u1\", action, resource) when { principal.n > 1 };\n";
    const TWO: &str =
        "@id(\"two\")\nforbid (principal, action, resource) when { principal.n > 9 };\n";

    #[test]
    fn digests_follow_tokens_not_formatting() {
        let base = digests_of(&format!("{ONE}{TWO}"), SCHEMA, None);
        assert!(base.content.starts_with("sha256:") && base.content.len() == 7 + 64);
        assert_eq!(base.policies.len(), 2);
        // Comments, whitespace and order within the file: the same content.
        let reformatted = format!(
            "// the second\n{}\n\n// the first\n{}",
            TWO.replace(' ', "  "),
            ONE.replace("when {", "when\n  {")
        );
        let same = digests_of(&reformatted, &format!("// a comment\n{SCHEMA}\n"), None);
        assert_eq!(same, base);
        assert!(same.diff_from(&base).is_empty());

        // A changed condition, an added and a removed policy.
        let three = "@id(\"three\")\npermit (principal, action, resource);\n";
        let next = digests_of(
            &format!("{}{three}", ONE.replace("> 1", "> 2")),
            SCHEMA,
            None,
        );
        let diff = next.diff_from(&base);
        assert_eq!(diff.added, ["three"]);
        assert_eq!(diff.removed, ["two"]);
        assert_eq!(diff.changed, ["one"]);
        assert!(!diff.schema_changed && !diff.entities_changed);
        assert_ne!(next.content, base.content);
        // An annotation is part of a policy.
        let annotated = digests_of(&format!("@reason(\"x\")\n{ONE}{TWO}"), SCHEMA, None);
        assert_eq!(annotated.diff_from(&base).changed, ["one"]);
        // Tokens: spacing around operators and inside annotations does not count,
        // nor does a `//` inside a string count as a comment.
        let spaced = digests_of(
            &format!(
                "{}{TWO}",
                ONE.replace("> 1", ">1")
                    .replace("@id(\"one\")", "@id ( \"one\" )")
            ),
            SCHEMA,
            None,
        );
        assert!(spaced.diff_from(&base).is_empty());
        let with_strings = |s: &str| {
            format!("{ONE}@id(\"two\")\nforbid (principal, action, resource == U::\"{s}\");\n")
        };
        let a = digests_of(&with_strings("x//y"), SCHEMA, None);
        let b = digests_of(&with_strings("x//z"), SCHEMA, None);
        assert_eq!(b.diff_from(&a).changed, ["two"]);
        let c = digests_of(&with_strings("x y"), SCHEMA, None);
        let d = digests_of(&with_strings("x  y"), SCHEMA, None);
        assert_eq!(
            d.diff_from(&c).changed,
            ["two"],
            "whitespace in strings counts"
        );
        // Another edit counts even when it means the same.
        let parenthesized = digests_of(
            &format!(
                "{}{TWO}",
                ONE.replace("principal.n > 1", "(principal.n > 1)")
            ),
            SCHEMA,
            None,
        );
        assert_eq!(parenthesized.diff_from(&base).changed, ["one"]);
        // Effect flipped.
        let flipped = digests_of(
            &format!("{ONE}{}", TWO.replace("forbid", "permit")),
            SCHEMA,
            None,
        );
        assert_eq!(flipped.diff_from(&base).changed, ["two"]);
    }

    #[test]
    fn schema_and_entity_changes_are_told_apart() {
        let policies = format!("{ONE}{TWO}");
        let base = digests_of(&policies, SCHEMA, None);
        let schema = digests_of(
            &policies,
            &SCHEMA.replace("n: Long", "n: Long, m?: String"),
            None,
        );
        let diff = schema.diff_from(&base);
        assert!(diff.schema_changed && !diff.entities_changed, "{diff:?}");
        assert!(diff.added.is_empty() && diff.removed.is_empty() && diff.changed.is_empty());
        assert_eq!(schema.policy_set, base.policy_set);
        assert_ne!(schema.content, base.content);

        let data = r#"[{"uid":{"type":"U","id":"u1"},"attrs":{"n":2},"parents":[]}]"#;
        let with_data = digests_of(&policies, SCHEMA, Some(data));
        assert!(with_data.diff_from(&base).entities_changed);
        // Key order and whitespace of the entity data do not count; a value does.
        let reordered =
            r#"[ { "parents": [], "attrs": { "n": 2 }, "uid": { "id": "u1", "type": "U" } } ]"#;
        assert_eq!(digests_of(&policies, SCHEMA, Some(reordered)), with_data);
        let other = digests_of(&policies, SCHEMA, Some(&data.replace("2", "3")));
        let diff = other.diff_from(&with_data);
        assert!(diff.entities_changed && !diff.schema_changed && diff.changed.is_empty());
    }

    #[test]
    fn line_counter_agrees_with_problem_locations() {
        let text = "permit (principal, action, resource);\n// é ü\n  forbid (principal, action, resource);\n\n\u{1F600} permit (principal, action, resource);";
        let mut counter = LineCounter::default();
        for offset in [0, 5, 38, 40, 50, 52, text.len() - 5, text.len()] {
            let p = Problem::error(None, String::new()).at_offset(text, offset, 1);
            assert_eq!(
                counter.locate(text, offset),
                (p.line.unwrap_or(0), p.column.unwrap_or(0)),
                "offset {offset}"
            );
        }
        // Going back starts over.
        assert_eq!(counter.locate(text, 0), (1, 1));
    }

    #[test]
    fn policies_of_a_large_file_are_located_exactly() {
        let schema = "entity U { n: Long }; action a appliesTo { principal: U, resource: U };";
        let mut text = String::new();
        let n = 1_100;
        for i in 0..n {
            if i == 507 || i == 3 {
                // `nope` is no attribute of `U`: a validation error.
                text.push_str(
                    "permit (principal, action, resource) when { principal.nope > 1 };\n",
                );
            } else {
                text.push_str(&format!(
                    "permit (principal == U::\"u{i}\", action, resource);\n"
                ));
            }
        }
        let sources = Sources {
            dir: PathBuf::from("mem"),
            policies: vec![("big.cedar".into(), text)],
            schema: ("s.cedarschema".into(), schema.into()),
            entities: None,
            fingerprint: 0,
        };
        let Err(problems) = build(&sources, 1) else {
            panic!("two invalid policies must fail the build");
        };
        let lines: Vec<Option<usize>> = problems.errors().map(|p| p.line).collect();
        assert_eq!(lines, vec![Some(4), Some(508)], "{problems:?}");

        // Without them, every policy is there, with its line.
        let valid = sources.policies[0]
            .1
            .replace("principal.nope > 1", "principal.n > 1");
        let sources = Sources {
            policies: vec![("big.cedar".into(), valid)],
            ..sources
        };
        let snapshot = build(&sources, 1).expect("valid");
        assert_eq!(snapshot.policy_count(), n);
        assert_eq!(snapshot.origins["big.cedar:1000"].line, 1001);
        assert_eq!(snapshot.index.len(), n);
    }

    /// Entity data and policies must name resources by the normal form of their
    /// URI: any other spelling would never be a request's resource.
    #[test]
    fn resource_ids_must_be_in_normal_form() {
        let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let sources = read_sources(&reference).expect("reference policies");
        build(&sources, 1).expect("the reference policies are in normal form");
        let (rel, entities) = sources.entities.clone().expect("entity data");
        let budget = "docs/docs://finance/budget-2026";
        let with_entity = |id: &str| Sources {
            entities: Some((rel.clone(), entities.replace(budget, id))),
            ..sources.clone()
        };
        let with_policy = |id: &str| {
            let mut s = sources.clone();
            s.policies.push((
                "extra.cedar".into(),
                format!(
                    "@id(\"extra\")\nforbid (principal, action == Mcp::Action::\"resources/read\", resource)\nwhen {{ resource in [Mcp::Resource::\"docs/docs://titan/q1-strategy\", Mcp::Resource::\"{id}\"] }};\n"
                ),
            ));
            s
        };
        let first_error = |s: &Sources| match build(s, 1) {
            Ok(_) => panic!("accepted"),
            Err(p) => p.errors().next().cloned().expect("an error"),
        };
        for (alias, normal) in [
            ("docs/DOCS://finance/budget-2026", budget),
            ("docs/docs://FINANCE/budget-2026", budget),
            ("docs/docs://finance/x/../budget-2026", budget),
            ("docs/docs://finance/%62udget-2026", budget),
            ("docs/docs://finance/budget%2d2026", budget),
            ("docs/docs://finance/%c3%a9", "docs/docs://finance/%C3%A9"),
            ("docs/docs://finance/é", "docs/docs://finance/%C3%A9"),
            ("docs/DOCS://finance/{id}", "docs/docs://finance/{id}"),
        ] {
            for (what, s) in [
                ("entity", with_entity(alias)),
                ("policy", with_policy(alias)),
            ] {
                let p = first_error(&s);
                assert!(
                    p.message.contains("is not in normal form")
                        && p.message.contains(&format!("Mcp::Resource::\"{normal}\"")),
                    "{what} {alias}: {p}"
                );
                assert!(p.line.is_some(), "{what} {alias}: located");
            }
        }
        for refused in [
            "docs/docs://@finance/budget-2026",
            "docs/docs://finance:/budget-2026",
            "docs/docs://finance/budget-2026#x",
            "docs/docs://finance//budget-2026",
            "docs/ docs://finance/budget-2026",
        ] {
            for (what, s) in [
                ("entity", with_entity(refused)),
                ("policy", with_policy(refused)),
            ] {
                let p = first_error(&s);
                assert!(
                    p.message
                        .contains("names a resource URI that requests may not use"),
                    "{what} {refused}: {p}"
                );
            }
        }
        // Not `server/uri` at all: a warning, the directory still loads.
        for odd in ["docs", "docs/budget-2026", "s0/r0"] {
            for (what, s) in [("entity", with_entity(odd)), ("policy", with_policy(odd))] {
                let snapshot = build(&s, 1).unwrap_or_else(|p| panic!("{what} {odd}: {p}"));
                assert!(
                    snapshot.warnings.warnings().any(|w| w
                        .message
                        .contains("names no resource a request can be about")),
                    "{what} {odd}: {:?}",
                    snapshot.warnings
                );
            }
        }
    }
}
