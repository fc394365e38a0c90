//! The policy directory as an immutable, validated [`Snapshot`], and the
//! [`PolicyStore`] that holds the current one and swaps in new ones on reload.
//!
//! A policy directory holds every `*.cedar` file under it (recursively; entries whose
//! name starts with `.` are skipped), exactly one `*.cedarschema`, and optional entity
//! data in `entities.json` at its top level. Imported servers add, in `tools/`, a
//! schema fragment `tools/<server>.cedarschema` and entity data
//! `tools/<server>.entities.json` each: the base schema and every fragment make one
//! schema, `entities.json` and every `tools/*.entities.json` one entity set. Every policy is validated against the
//! schema in strict mode, and so is the entity data. The authoring checks of
//! `authoring.rs` apply wherever a directory is loaded (`validate`, startup, reload):
//! an impossible `forbid`, or `action ==` an action that has member actions, is an
//! error; an entity literal the entity data does not define is a warning; with
//! [`LoadOptions::deny_warnings`] every warning is an error.

mod authoring;
mod diagnostics;
mod fits;
mod index;
mod load;
mod scoped;
mod scopes;
mod shadow;
mod shape;
mod store;
mod tools;
mod watch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::SystemTime;

use cedar_policy::{Entities, EntityTypeName, EntityUid, PolicySet, Schema};

pub use authoring::LoadOptions;
pub use diagnostics::{Problem, Problems, Severity, error_chain};
pub use fits::ContextFits;
pub use index::{IndexOptions, IndexStats, PolicyIndex, Query, Selected};
pub(crate) use load::nesting_problem;
pub use load::{
    ContentDigests, ENTITIES_FILE, ENTITIES_FRAGMENT_SUFFIX, MAX_FILE_BYTES, PolicyDiff,
    SchemaFormat, Sources, TOOLS_DIR, build, build_with, combined_schema, files_under,
    read_policy_files, read_sources,
};
pub use scopes::{PolicyScopes, SCOPES_ANNOTATION};
pub use shadow::{SHADOW_ANNOTATION, is_shadow};
pub use shape::{Extension, Leaf, Shape, alias_in, name_key, reads_as};
pub use store::{LastReload, MAX_LOGGED_IDS, PolicyStore, ReloadOutcome, ReloadStatus};
pub use tools::{ToolAction, ToolActions, TypedMethod};
#[cfg(test)]
pub(crate) use tools::{reference_arguments, typed_policy_dir};
pub use watch::{WatchOptions, spawn_watcher};

/// Where a policy was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyOrigin {
    /// File path relative to the policy directory.
    pub file: String,
    /// 1-based line of the policy's first character.
    pub line: usize,
    /// 1-based column of the policy's first character.
    pub column: usize,
}

/// The (principal type, action, resource type) combinations a schema allows.
pub type RequestEnvs = std::collections::HashSet<
    (EntityTypeName, EntityUid, EntityTypeName),
    foldhash::fast::RandomState,
>;

/// One validated, immutable state of the policy directory.
#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one with every snapshot swapped in; decisions report it.
    pub generation: u64,
    /// The directory it was loaded from.
    pub dir: PathBuf,
    /// All policies, under their stable ids.
    pub policies: PolicySet,
    /// The schema.
    pub schema: Schema,
    /// The entity data, with the schema's action entities.
    pub entities: Entities,
    /// The declared context of each action (keyed by the action uid as Cedar prints it).
    pub context_shapes: HashMap<cedar_policy::EntityUid, Shape>,
    /// The tool and prompt actions the schema declares (`tools/call/S/T`), by the
    /// tool or prompt they type.
    pub tool_actions: ToolActions,
    /// The (principal type, action, resource type) combinations the schema allows
    /// (asked once per evaluation: hashed with a fast seeded hash).
    pub request_envs: RequestEnvs,
    /// The schema's entity types by basename, folded to ASCII lower case: what a
    /// bare type name (an AuthZEN `user`, `Tool`) can refer to, without a scan of
    /// the schema per name (`authz::names`).
    pub types_by_basename: TypesByBasename,
    /// Where each policy id was written.
    pub origins: HashMap<String, PolicyOrigin>,
    /// Hash of the input files; equal fingerprints mean equal inputs.
    pub fingerprint: u64,
    /// Warnings found while loading (errors never make a snapshot).
    pub warnings: Problems,
    /// When it was built.
    pub loaded_at: SystemTime,
    /// How many policy files it came from.
    pub policy_files: usize,
    /// The scope index of `policies`, built with them: which policies a request
    /// can match. Rebuild it if `policies` is changed.
    pub index: PolicyIndex,
    /// For each entity of `entities` whose attributes or tags hold entity
    /// references, those references (what an evaluation can reach from it besides
    /// its ancestors). `None` if they could not be read: requests are then
    /// evaluated with the whole entity data.
    pub entity_refs: Option<HashMap<EntityUid, Vec<EntityUid>>>,
    /// Digests of its policies, schema and entity data (what a reload changed).
    /// They cover every policy of the files, `@shadow` ones included.
    pub digests: ContentDigests,
    /// The ids of the policies annotated `@shadow` (sorted). In a snapshot that
    /// has an [`all_enforced`](Snapshot::all_enforced) view they are left out of
    /// [`Snapshot::policies`]; in that view they are among its policies.
    pub shadow_policies: Vec<String>,
    /// The same files with every `@shadow` policy enforced (see `shadow.rs`);
    /// `None` when there are none.
    pub all_enforced: Option<std::sync::Arc<Snapshot>>,
    /// The `@scopes` of `policies` (`scopes.rs`): what a step-up evaluation adds to a
    /// token's scopes; a deny decided against no declaring policy cannot be allowed
    /// by more scope.
    pub scopes: PolicyScopes,
    /// The contexts Cedar's validation accepted for this schema, by signature
    /// (`fits.rs`): shared by the snapshots of the same files.
    pub context_fits: std::sync::Arc<ContextFits>,
}

/// The entity types of a schema, by basename folded to ASCII lower case.
#[derive(Debug, Clone, Default)]
pub struct TypesByBasename(HashMap<String, Vec<EntityTypeName>, foldhash::fast::RandomState>);

impl TypesByBasename {
    /// The table of `schema`'s entity types.
    pub fn new(schema: &Schema) -> Self {
        let mut table: HashMap<String, Vec<EntityTypeName>, foldhash::fast::RandomState> =
            HashMap::default();
        for ty in schema.entity_types() {
            table
                .entry(ty.basename().to_ascii_lowercase())
                .or_default()
                .push(ty.clone());
        }
        Self(table)
    }

    /// The types whose basename equals `name` ignoring ASCII case (a name of any
    /// namespace; none if `name` has `::`).
    pub fn matching(&self, name: &str) -> &[EntityTypeName] {
        let found = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            self.0.get(&name.to_ascii_lowercase())
        } else {
            self.0.get(name)
        };
        found.map_or(&[], Vec::as_slice)
    }
}

impl Snapshot {
    /// A policy id with where it is written, as JSON: `{"id", "file", "line"}`
    /// (`{"id"}` alone for an id the snapshot does not know).
    pub fn origin_json(&self, id: &str) -> serde_json::Value {
        match self.origins.get(id) {
            Some(o) => serde_json::json!({ "id": id, "file": o.file, "line": o.line }),
            None => serde_json::json!({ "id": id }),
        }
    }

    /// Read and validate a policy directory (with the default [`LoadOptions`]).
    pub fn load(dir: &std::path::Path, generation: u64) -> Result<Snapshot, Problems> {
        Self::load_with(dir, generation, LoadOptions::default())
    }

    /// Read and validate a policy directory with `options`.
    pub fn load_with(
        dir: &std::path::Path,
        generation: u64,
        options: LoadOptions,
    ) -> Result<Snapshot, Problems> {
        let sources = read_sources(dir)?;
        build_with_big_stack(&sources, generation, options)
    }

    /// Whether the schema allows `principal` to do `action` on `resource` (by type).
    pub fn allows_request(
        &self,
        principal: &EntityUid,
        action: &EntityUid,
        resource: &EntityUid,
    ) -> bool {
        // Keyed by owned values; the set is small and the clones are of interned names.
        self.request_envs.contains(&(
            principal.type_name().clone(),
            action.clone(),
            resource.type_name().clone(),
        ))
    }

    /// Whether `index` was built from `policies` as they are (a set changed after
    /// its index was built, as tests do, is evaluated without the index).
    pub fn index_is_current(&self) -> bool {
        self.index.len() == self.policies.num_of_policies()
    }

    /// Number of policies (templates and `@shadow` policies included).
    pub fn policy_count(&self) -> usize {
        // The enforced view leaves its `@shadow` policies out of its set; the
        // all-enforced view (which has no view of its own) holds them.
        let left_out = if self.all_enforced.is_some() {
            self.shadow_policies.len()
        } else {
            0
        };
        self.policies.num_of_policies() + self.policies.num_of_templates() + left_out
    }
}

/// Every entity reference in `value` (a JSON form of Cedar data): objects with an
/// `__entity` escape, and objects with string `type` and `id` that name an entity
/// (as entity references may be written where the schema expects one). Finds a
/// superset of the references, never fewer.
pub fn entity_refs_in(value: &serde_json::Value, out: &mut Vec<EntityUid>) {
    use serde_json::Value;
    match value {
        Value::Object(obj) => {
            if let (Some(Value::String(ty)), Some(Value::String(id))) =
                (obj.get("type"), obj.get("id"))
                && let Ok(ty) = ty.parse::<EntityTypeName>()
            {
                out.push(EntityUid::from_type_name_and_id(
                    ty,
                    cedar_policy::EntityId::new(id),
                ));
            }
            for v in obj.values() {
                entity_refs_in(v, out);
            }
        }
        Value::Array(items) => {
            for v in items {
                entity_refs_in(v, out);
            }
        }
        _ => {}
    }
}

/// [`Snapshot::entity_refs`] of `entities`: the references held in each entity's
/// attributes and tags. `None` if an entity cannot be written as JSON.
pub fn attribute_refs(entities: &Entities) -> Option<HashMap<EntityUid, Vec<EntityUid>>> {
    let mut out = HashMap::new();
    for entity in entities.iter() {
        let json = entity.to_json_value().ok()?;
        let mut refs = Vec::new();
        for key in ["attrs", "tags"] {
            if let Some(v) = json.get(key) {
                entity_refs_in(v, &mut refs);
            }
        }
        if !refs.is_empty() {
            refs.sort_by_cached_key(ToString::to_string);
            refs.dedup();
            out.insert(entity.uid(), refs);
        }
    }
    Some(out)
}

/// Build on a thread with a generous stack: Cedar's parser and validator recurse over
/// the syntax tree, and a policy file is input we do not control.
pub fn build_with_big_stack(
    sources: &Sources,
    generation: u64,
    options: LoadOptions,
) -> Result<Snapshot, Problems> {
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("policy-load".into())
            .stack_size(256 * 1024 * 1024)
            .spawn_scoped(s, || build_with(sources, generation, options));
        match handle {
            Ok(h) => h.join().unwrap_or_else(|_| {
                Err(Problems(vec![Problem::error(
                    None,
                    "internal error while building the policy snapshot",
                )]))
            }),
            Err(e) => Err(Problems(vec![Problem::error(
                None,
                format!("cannot start the policy loader: {e}"),
            )])),
        }
    })
}
