//! A scope index over a snapshot's policies: for a request, which policies can
//! possibly apply to it.
//!
//! Cedar evaluates every policy of a set for every request, so a decision costs
//! time in proportion to the number of policies (issue 8: 10,001 policies take
//! about 10 ms). Most of those policies cannot apply: a permit for one tool and
//! one group says nothing about any other tool.
//!
//! # Why skipping a policy changes nothing
//!
//! Cedar evaluates a policy as `principal-scope && (action-scope &&
//! (resource-scope && conditions))`, left to right, stopping at the first
//! `false`. The scope parts cannot fail: the request's principal, action and
//! resource are entities, and a scope compares them with entity literals (`==`,
//! `in`), entity types (`is`) or a set of action literals (`in [...]`). `e in u`
//! is true when `e == u` or `u` is one of `e`'s ancestors in the entity data
//! (an entity missing from the data has none). So a policy whose scope is false
//! for a request is neither satisfied nor in error: Cedar reports nothing about
//! it. Leaving it out of the evaluated set leaves the decision, the determining
//! policies and the errors exactly as they were.
//!
//! # How candidates are found
//!
//! Each static policy is filed once per scope variable: under the entity its
//! `==`, `in` or `is ... in` constraint names, under the type its `is` constraint
//! names, or among the unconstrained ones (`action in [a, b]` is filed under each
//! action it lists). For a request, the principal, action and resource each give
//! the buckets they can match: their own uid and each of their ancestors in this
//! request's entity data (so per-request parents such as groups from a token, a
//! tool synthesized as a child of its server, and the schema's action groups all
//! count, exactly as Cedar sees them), their type, and the unconstrained bucket.
//! The variable with the fewest policies in its buckets is chosen, and each of
//! those policies is kept only if its whole scope holds (all three variables,
//! with the same `==`/`in`/`is` semantics as Cedar's).
//!
//! Template-linked policies are not filed: they are candidates of every
//! request. Templates themselves are never evaluated by Cedar.
//!
//! # How candidates are evaluated
//!
//! A candidate's scope holds, so what is left to evaluate of it is its
//! conditions. A filed candidate without a `when` or `unless` is satisfied as it
//! stands: Cedar would find it so and report it among the determining policies,
//! and the decision counts it the same way ([`Query::select_split`]). The others,
//! in the order of the snapshot's set (the order Cedar evaluates and reports
//! errors in), become a `PolicySet` of their own, each filed one with its scope
//! left out (it holds, and evaluating it cannot fail): Cedar evaluates their
//! conditions only, with the same ids, effects and errors. A mesh has few
//! distinct candidate lists (about one per tool and group combination), so the
//! built sets are kept in a bounded cache keyed by the list; it belongs to the
//! snapshot and goes with it on reload. When most of the snapshot's policies are
//! candidates anyway, the snapshot's own set is evaluated instead.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use serde_json::Value;

use cedar_policy::{
    ActionConstraint, Entities, EntityTypeName, EntityUid, Policy, PolicyId, PolicySet,
    PrincipalConstraint, ResourceConstraint, Template,
};

/// Tuning of a [`PolicyIndex`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexOptions {
    /// Capacity of the cache of candidate sets, counted in policies (a cached set
    /// of `n` policies weighs `n + 1`). `0` caches nothing: every evaluation
    /// builds its candidate set.
    pub cache_policies: u64,
    /// Evaluate the whole set instead of the candidates when they are more than
    /// this percentage of it (copying most of a set buys nothing). `100` always
    /// evaluates the candidates.
    pub whole_set_above_percent: usize,
}

impl Default for IndexOptions {
    fn default() -> Self {
        // Measured (benches/scaling.rs): filled to this capacity with sets of one or
        // two policies, the cache takes about 13 MiB. Small sets are as cheap to
        // rebuild as to look up (the benchmark sees no difference without the
        // cache); it pays for requests that match hundreds of policies.
        Self {
            cache_policies: 16 * 1024,
            whole_set_above_percent: 50,
        }
    }
}

/// Counts describing a [`PolicyIndex`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexStats {
    /// Policies (static and template-linked) in the indexed set.
    pub policies: usize,
    /// Policies filed by their scope.
    pub indexed: usize,
    /// Policies evaluated for every request (template-linked ones).
    pub always: usize,
    /// Candidate sets in the cache now (after its pending maintenance).
    pub cached_sets: u64,
}

/// The scope index of one policy set. Build it with the set it indexes
/// ([`PolicyIndex::new`]) and use it only with that set.
pub struct PolicyIndex {
    /// Every policy of the set, in the set's order.
    entries: Vec<IndexEntry>,
    /// The uids the scopes name, numbered.
    names: Names,
    principal: EntityBuckets,
    action: ActionBuckets,
    resource: EntityBuckets,
    /// Policies that are candidates of every request, in the set's order.
    always: Vec<u32>,
    /// The set's templates, for linking template-linked candidates.
    templates: HashMap<PolicyId, Template>,
    /// Candidate sets already built, keyed by the positions of their policies.
    cache: Option<moka::sync::Cache<Arc<[u32]>, Arc<PolicySet>>>,
    /// The set of no policy.
    empty: Arc<PolicySet>,
    /// False when the set cannot be indexed (more policies than positions): every
    /// request evaluates the whole set.
    usable: bool,
    whole_set_above_percent: usize,
    /// The entity literals written in the conditions (`when`/`unless`) of the
    /// set's policies and templates; `None` if some condition could not be read.
    condition_literals: Option<Vec<EntityUid>>,
}

struct IndexEntry {
    policy: Policy,
    /// `None`: not filed, a candidate of every request.
    scope: Option<Scope>,
    /// A filed policy with no `when` or `unless`: its scope is all of it, so as a
    /// candidate (its scope holds) it is satisfied without being evaluated.
    scope_only: bool,
    /// What Cedar evaluates of it as a candidate ([`IndexEntry::evaluated`]), made
    /// the first time it is.
    evaluated: OnceLock<Policy>,
}

impl IndexEntry {
    /// The policy Cedar evaluates when this entry is a candidate. A filed policy is
    /// a candidate only when its scope holds, so it is evaluated without its scope:
    /// the same id, effect, annotations and conditions, with `principal, action,
    /// resource` unconstrained. Cedar evaluates a scope first and it cannot fail or
    /// look up anything but the request's own entities, so leaving a scope that holds
    /// out changes neither whether the policy is satisfied nor its errors; it saves
    /// Cedar building and evaluating it (an `action in [...]` builds a set each time).
    /// A template-linked policy (not filed: its scope was not checked), or one that
    /// cannot be rewritten, is evaluated as it is.
    fn evaluated(&self) -> &Policy {
        self.evaluated.get_or_init(|| {
            self.scope
                .as_ref()
                .and_then(|_| without_scope(&self.policy))
                .unwrap_or_else(|| self.policy.clone())
        })
    }
}

/// `policy` with its scope unconstrained (`principal, action, resource`), written
/// through Cedar's JSON form; `None` if it cannot be.
fn without_scope(policy: &Policy) -> Option<Policy> {
    let mut json = policy.to_json().ok()?;
    let fields = json.as_object_mut()?;
    for variable in ["principal", "action", "resource"] {
        fields.insert(variable.to_owned(), serde_json::json!({ "op": "All" }));
    }
    Policy::from_json(Some(policy.id().clone()), json).ok()
}

/// A static policy's scope, with the uids it names numbered ([`Names`]).
struct Scope {
    principal: EntityScope<Name>,
    action: ActionScope<Name>,
    resource: EntityScope<Name>,
}

/// A principal or resource scope constraint, naming entities by `U`: their uids
/// as Cedar gives them, then their numbers in the index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum EntityScope<U> {
    Any,
    Eq(U),
    In(U),
    Is(EntityTypeName),
    IsIn(EntityTypeName, U),
}

impl From<PrincipalConstraint> for EntityScope<EntityUid> {
    fn from(c: PrincipalConstraint) -> Self {
        match c {
            PrincipalConstraint::Any => Self::Any,
            PrincipalConstraint::Eq(u) => Self::Eq(u),
            PrincipalConstraint::In(u) => Self::In(u),
            PrincipalConstraint::Is(t) => Self::Is(t),
            PrincipalConstraint::IsIn(t, u) => Self::IsIn(t, u),
        }
    }
}

impl From<ResourceConstraint> for EntityScope<EntityUid> {
    fn from(c: ResourceConstraint) -> Self {
        match c {
            ResourceConstraint::Any => Self::Any,
            ResourceConstraint::Eq(u) => Self::Eq(u),
            ResourceConstraint::In(u) => Self::In(u),
            ResourceConstraint::Is(t) => Self::Is(t),
            ResourceConstraint::IsIn(t, u) => Self::IsIn(t, u),
        }
    }
}

impl EntityScope<EntityUid> {
    fn named(self, names: &mut Names) -> EntityScope<Name> {
        match self {
            Self::Any => EntityScope::Any,
            Self::Eq(u) => EntityScope::Eq(names.number(u)),
            Self::In(u) => EntityScope::In(names.number(u)),
            Self::Is(t) => EntityScope::Is(t),
            Self::IsIn(t, u) => EntityScope::IsIn(t, names.number(u)),
        }
    }
}

impl EntityScope<Name> {
    /// Whether Cedar's scope expression holds for `e` (`==`, `in`, `is`, `is ... in`).
    fn holds(&self, e: &Lineage<'_>) -> bool {
        match self {
            Self::Any => true,
            Self::Eq(n) => e.own == Some(*n),
            Self::In(n) => e.is_in(*n),
            Self::Is(t) => e.uid.type_name() == t,
            Self::IsIn(t, n) => e.uid.type_name() == t && e.is_in(*n),
        }
    }
}

/// An action scope constraint, naming actions by `U` (as [`EntityScope`]).
#[derive(Debug, Clone, PartialEq, Eq)]
enum ActionScope<U> {
    Any,
    Eq(U),
    In(Vec<U>),
}

impl From<ActionConstraint> for ActionScope<EntityUid> {
    fn from(c: ActionConstraint) -> Self {
        match c {
            ActionConstraint::Any => Self::Any,
            ActionConstraint::Eq(u) => Self::Eq(u),
            ActionConstraint::In(us) => Self::In(us),
        }
    }
}

impl ActionScope<EntityUid> {
    fn named(self, names: &mut Names) -> ActionScope<Name> {
        match self {
            Self::Any => ActionScope::Any,
            Self::Eq(u) => ActionScope::Eq(names.number(u)),
            Self::In(us) => ActionScope::In(us.into_iter().map(|u| names.number(u)).collect()),
        }
    }
}

impl ActionScope<Name> {
    fn holds(&self, e: &Lineage<'_>) -> bool {
        match self {
            Self::Any => true,
            Self::Eq(n) => e.own == Some(*n),
            Self::In(ns) => ns.iter().any(|&n| e.is_in(n)),
        }
    }
}

impl Scope {
    fn holds(&self, principal: &Lineage<'_>, action: &Lineage<'_>, resource: &Lineage<'_>) -> bool {
        self.principal.holds(principal)
            && self.action.holds(action)
            && self.resource.holds(resource)
    }
}

/// The maps looked up for every decision, keyed by what policies name (never by
/// what a request brings): a fast seeded hash rather than SipHash.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The number of a uid that some policy's scope names.
type Name = usize;

/// The uids the policies' scopes name, numbered from 0: a request's entities are
/// looked up here once, and scopes and buckets then compare numbers, not uids.
#[derive(Default)]
struct Names(FastMap<EntityUid, Name>);

impl Names {
    /// The number of `uid`, numbering it if it is new.
    fn number(&mut self, uid: EntityUid) -> Name {
        let next = self.0.len();
        *self.0.entry(uid).or_insert(next)
    }

    fn get(&self, uid: &EntityUid) -> Option<Name> {
        self.0.get(uid).copied()
    }
}

/// A request's principal, action or resource with its ancestors in the entity
/// data the request is evaluated with, as far as the policies' scopes name them.
struct Lineage<'a> {
    uid: &'a EntityUid,
    /// The number of the uid itself, if a scope names it.
    own: Option<Name>,
    /// The numbers of the uid and of its ancestors that scopes name.
    named: Vec<Name>,
}

impl<'a> Lineage<'a> {
    fn new(uid: &'a EntityUid, entities: &'a Entities, names: &Names) -> Self {
        let own = names.get(uid);
        let mut named: Vec<Name> = own.into_iter().collect();
        if let Some(ancestors) = entities.ancestors(uid) {
            named.extend(ancestors.filter_map(|a| names.get(a)));
        }
        Self { uid, own, named }
    }

    /// Cedar's `uid in u` for the uid numbered `n`: equal, or an ancestor.
    fn is_in(&self, n: Name) -> bool {
        self.named.contains(&n)
    }
}

/// Policies filed under the numbers of the uids their scopes name.
#[derive(Default)]
struct ByName(Vec<Vec<u32>>);

impl ByName {
    fn file(&mut self, n: Name, at: u32) {
        if self.0.len() <= n {
            self.0.resize_with(n + 1, Vec::new);
        }
        if let Some(bucket) = self.0.get_mut(n) {
            bucket.push(at);
        }
    }

    /// The non-empty buckets of the numbers `e` names.
    fn buckets<'s>(&'s self, e: &Lineage<'_>) -> impl Iterator<Item = &'s [u32]> {
        e.named
            .iter()
            .filter_map(|&n| self.0.get(n))
            .filter(|b| !b.is_empty())
            .map(Vec::as_slice)
    }
}

/// Principal or resource buckets.
#[derive(Default)]
struct EntityBuckets {
    /// `== u`, `in u`, `is T in u`: filed under `u`.
    by_name: ByName,
    /// `is T`: filed under `T`.
    by_type: FastMap<EntityTypeName, Vec<u32>>,
    /// Unconstrained.
    any: Vec<u32>,
}

impl EntityBuckets {
    fn file(&mut self, scope: &EntityScope<Name>, at: u32) {
        match scope {
            EntityScope::Any => self.any.push(at),
            EntityScope::Eq(n) | EntityScope::In(n) | EntityScope::IsIn(_, n) => {
                self.by_name.file(*n, at);
            }
            EntityScope::Is(t) => self.by_type.entry(t.clone()).or_default().push(at),
        }
    }

    /// Every bucket `e` can match. A policy is in at most one of them.
    fn lookup<'s>(&'s self, e: &Lineage<'_>, out: &mut Vec<&'s [u32]>) {
        out.clear();
        out.extend(self.by_name.buckets(e));
        if let Some(b) = self.by_type.get(e.uid.type_name()) {
            out.push(b);
        }
        out.push(&self.any);
    }
}

/// Action buckets.
#[derive(Default)]
struct ActionBuckets {
    /// `== a`, and `in [.., a, ..]` under each action listed.
    by_name: ByName,
    /// Unconstrained.
    any: Vec<u32>,
}

impl ActionBuckets {
    fn file(&mut self, scope: &ActionScope<Name>, at: u32) {
        match scope {
            ActionScope::Any => self.any.push(at),
            ActionScope::Eq(n) => self.by_name.file(*n, at),
            ActionScope::In(ns) => {
                let mut seen: Vec<Name> = Vec::with_capacity(ns.len());
                for &n in ns {
                    if !seen.contains(&n) {
                        seen.push(n);
                        self.by_name.file(n, at);
                    }
                }
            }
        }
    }

    /// Every bucket `e` can match. A policy listing several of the action's
    /// ancestors is in several of them.
    fn lookup<'s>(&'s self, e: &Lineage<'_>, out: &mut Vec<&'s [u32]>) {
        out.clear();
        out.extend(self.by_name.buckets(e));
        out.push(&self.any);
    }
}

fn total(buckets: &[&[u32]]) -> usize {
    buckets.iter().map(|b| b.len()).sum()
}

/// One request's action and resource as the index sees them, for selecting the
/// policies of each of its principals ([`PolicyIndex::query`]): a request's
/// principals (user, application) share its action and resource, whose ancestors
/// and buckets are found once. It holds the index and the entity data it was
/// made with, so that its buckets are only ever read against that index and the
/// principal's ancestors come from the same data.
pub struct Query<'q> {
    index: &'q PolicyIndex,
    entities: &'q Entities,
    a: Lineage<'q>,
    r: Lineage<'q>,
    a_buckets: Vec<&'q [u32]>,
    r_buckets: Vec<&'q [u32]>,
}

impl Query<'_> {
    /// The positions of the candidates for `principal`, ascending.
    fn positions(&self, principal: &EntityUid) -> Vec<u32> {
        let index = self.index;
        let p = Lineage::new(principal, self.entities, &index.names);
        let mut p_buckets: Vec<&[u32]> = Vec::new();
        index.principal.lookup(&p, &mut p_buckets);
        // The scope variable whose buckets hold the fewest policies (the first of
        // equals, resource, principal, action).
        let best = [&self.r_buckets[..], &p_buckets[..], &self.a_buckets[..]]
            .into_iter()
            .min_by_key(|b| total(b))
            .unwrap_or_default();
        let mut out: Vec<u32> = best
            .iter()
            .flat_map(|b| b.iter().copied())
            .filter(|&at| {
                index
                    .entries
                    .get(at as usize)
                    .and_then(|e| e.scope.as_ref())
                    .is_some_and(|s| s.holds(&p, &self.a, &self.r))
            })
            .collect();
        out.extend_from_slice(&index.always);
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The policies to evaluate for `principal` with the query's action and
    /// resource: a set of the candidates, or `None` to evaluate the whole set the
    /// index was built from (most of its policies are candidates anyway).
    pub fn select(&self, principal: &EntityUid) -> Option<Arc<PolicySet>> {
        let ids = self.positions(principal);
        if self.whole_set_for(&ids) {
            return None;
        }
        self.index.set_of(ids)
    }

    /// [`Query::select`], with the candidates that need no evaluation set apart:
    /// a candidate without a `when` or `unless` is satisfied (its scope holds, and
    /// a scope cannot fail), so Cedar evaluates only the others. `None` to
    /// evaluate the whole set, as `select`.
    pub fn select_split(&self, principal: &EntityUid) -> Option<Selected<'_>> {
        let mut ids = self.positions(principal);
        if self.whole_set_for(&ids) {
            return None;
        }
        let entries = &self.index.entries;
        let mut satisfied = Vec::new();
        ids.retain(|&at| match entries.get(at as usize) {
            Some(e) if e.scope_only => {
                satisfied.push(&e.policy);
                false
            }
            _ => true,
        });
        Some(Selected {
            evaluated: self.index.set_of(ids)?,
            satisfied,
        })
    }

    /// Whether `ids`, the candidates of one principal, are so many of the set's
    /// policies that evaluating the whole set is as cheap.
    fn whole_set_for(&self, ids: &[u32]) -> bool {
        let index = self.index;
        ids.len().saturating_mul(100)
            > index
                .entries
                .len()
                .saturating_mul(index.whole_set_above_percent)
    }
}

/// One principal's candidates ([`Query::select_split`]): those Cedar evaluates,
/// and those satisfied by their scope alone.
pub struct Selected<'q> {
    /// Candidates with a condition (and template-linked ones), in the set's order.
    pub evaluated: Arc<PolicySet>,
    /// Candidates without a condition, in the set's order: each is satisfied.
    pub satisfied: Vec<&'q Policy>,
}

impl PolicyIndex {
    /// Index `policies` with the default options.
    pub fn new(policies: &PolicySet) -> Self {
        Self::with_options(policies, IndexOptions::default())
    }

    /// Index `policies`. Time and memory are proportional to the number of policies.
    pub fn with_options(policies: &PolicySet, options: IndexOptions) -> Self {
        let mut index = Self {
            entries: Vec::with_capacity(policies.num_of_policies()),
            names: Names::default(),
            principal: EntityBuckets::default(),
            action: ActionBuckets::default(),
            resource: EntityBuckets::default(),
            always: Vec::new(),
            templates: policies
                .templates()
                .map(|t| (t.id().clone(), t.clone()))
                .collect(),
            cache: (options.cache_policies > 0).then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(options.cache_policies)
                    .weigher(|ids: &Arc<[u32]>, _: &Arc<PolicySet>| {
                        u32::try_from(ids.len())
                            .unwrap_or(u32::MAX)
                            .saturating_add(1)
                    })
                    .build()
            }),
            empty: Arc::new(PolicySet::new()),
            usable: true,
            whole_set_above_percent: options.whole_set_above_percent,
            condition_literals: condition_literals(policies),
        };
        for (position, policy) in policies.policies().enumerate() {
            let Ok(at) = u32::try_from(position) else {
                index.usable = false;
                break;
            };
            let scope = policy.is_static().then(|| Scope {
                principal: EntityScope::from(policy.principal_constraint()).named(&mut index.names),
                action: ActionScope::from(policy.action_constraint()).named(&mut index.names),
                resource: EntityScope::from(policy.resource_constraint()).named(&mut index.names),
            });
            match &scope {
                Some(s) => {
                    index.principal.file(&s.principal, at);
                    index.action.file(&s.action, at);
                    index.resource.file(&s.resource, at);
                }
                None => index.always.push(at),
            }
            index.entries.push(IndexEntry {
                scope_only: scope.is_some() && !policy.has_non_scope_constraint(),
                policy: policy.clone(),
                scope,
                evaluated: OnceLock::new(),
            });
        }
        index
    }

    /// Number of policies (static and template-linked) in the indexed set.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the indexed set has no policies.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Counts describing the index.
    pub fn stats(&self) -> IndexStats {
        IndexStats {
            policies: self.entries.len(),
            indexed: self.entries.iter().filter(|e| e.scope.is_some()).count(),
            always: self.always.len(),
            cached_sets: self.cache.as_ref().map_or(0, |c| {
                c.run_pending_tasks();
                c.entry_count()
            }),
        }
    }

    /// The policies whose scope holds for `principal`, `action` and `resource`
    /// (with ancestors taken from `entities`, the data the request is evaluated
    /// with), and those evaluated for every request, in the set's order.
    pub fn candidates<'s>(
        &'s self,
        principal: &EntityUid,
        action: &EntityUid,
        resource: &EntityUid,
        entities: &Entities,
    ) -> Vec<&'s PolicyId> {
        self.candidate_positions(principal, action, resource, entities)
            .into_iter()
            .filter_map(|at| self.entries.get(at as usize).map(|e| e.policy.id()))
            .collect()
    }

    fn candidate_positions(
        &self,
        principal: &EntityUid,
        action: &EntityUid,
        resource: &EntityUid,
        entities: &Entities,
    ) -> Vec<u32> {
        self.looked_up(action, resource, entities)
            .positions(principal)
    }

    /// The action's and the resource's side of a selection (their ancestors and
    /// buckets), found once for every principal of a request: see [`Query`].
    /// `None` when the set cannot be indexed: every principal evaluates the whole
    /// set, and nothing is looked up.
    pub fn query<'q>(
        &'q self,
        action: &'q EntityUid,
        resource: &'q EntityUid,
        entities: &'q Entities,
    ) -> Option<Query<'q>> {
        self.usable
            .then(|| self.looked_up(action, resource, entities))
    }

    fn looked_up<'q>(
        &'q self,
        action: &'q EntityUid,
        resource: &'q EntityUid,
        entities: &'q Entities,
    ) -> Query<'q> {
        let a = Lineage::new(action, entities, &self.names);
        let r = Lineage::new(resource, entities, &self.names);
        let mut a_buckets = Vec::new();
        let mut r_buckets = Vec::new();
        self.action.lookup(&a, &mut a_buckets);
        self.resource.lookup(&r, &mut r_buckets);
        Query {
            index: self,
            entities,
            a,
            r,
            a_buckets,
            r_buckets,
        }
    }

    /// The policies to evaluate for this request: a set of the candidates, or
    /// `None` to evaluate the whole set the index was built from (when it cannot
    /// be indexed, or most of its policies are candidates anyway).
    pub fn select(
        &self,
        principal: &EntityUid,
        action: &EntityUid,
        resource: &EntityUid,
        entities: &Entities,
    ) -> Option<Arc<PolicySet>> {
        self.query(action, resource, entities)?.select(principal)
    }

    /// The set of the policies at `ids` (ascending): the empty set, a cached set,
    /// or one built now and cached. `None` if one cannot be added (see
    /// [`PolicyIndex::build_set`]).
    fn set_of(&self, ids: Vec<u32>) -> Option<Arc<PolicySet>> {
        if ids.is_empty() {
            return Some(Arc::clone(&self.empty));
        }
        if let Some(cache) = &self.cache
            && let Some(set) = cache.get(&ids[..])
        {
            return Some(set);
        }
        let set = Arc::new(self.build_set(&ids)?);
        if let Some(cache) = &self.cache {
            cache.insert(Arc::from(ids), Arc::clone(&set));
        }
        Some(set)
    }

    /// A set of the policies at `ids` (ascending), in that order, each as Cedar
    /// evaluates it as a candidate ([`IndexEntry::evaluated`]: a filed policy without
    /// its scope). `None` if one cannot be added, which a set the index was built
    /// from never causes.
    fn build_set(&self, ids: &[u32]) -> Option<PolicySet> {
        let mut set = PolicySet::new();
        for &at in ids {
            let entry = self.entries.get(at as usize)?;
            let policy = &entry.policy;
            match policy.template_id() {
                None => set.add(entry.evaluated().clone()).ok()?,
                Some(template) => {
                    if set.template(template).is_none() {
                        set.add_template(self.templates.get(template)?.clone())
                            .ok()?;
                    }
                    set.link(
                        template.clone(),
                        policy.id().clone(),
                        policy.template_links()?,
                    )
                    .ok()?;
                }
            }
        }
        Some(set)
    }

    /// The entities named in the conditions of the set's policies and templates
    /// (scope constraints left out: they only compare, never look an entity up), or
    /// `None` if some condition could not be read. Evaluating a request may look up
    /// these entities' attributes and ancestors whatever the request is.
    pub fn condition_literals(&self) -> Option<&[EntityUid]> {
        self.condition_literals.as_deref()
    }

    /// Empty the cache of candidate sets (for measurements).
    pub fn clear_cache(&self) {
        if let Some(cache) = &self.cache {
            cache.invalidate_all();
        }
    }
}

impl fmt::Debug for PolicyIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyIndex")
            .field("policies", &self.entries.len())
            .field("always", &self.always.len())
            .field("usable", &self.usable)
            .finish_non_exhaustive()
    }
}

/// The entity literals of every `when`/`unless` condition of `policies` (static
/// policies and templates; a linked policy's conditions are its template's) that
/// evaluation may look up, found in the policies' JSON form. `None` if a policy
/// cannot be written as JSON.
fn condition_literals(policies: &PolicySet) -> Option<Vec<EntityUid>> {
    let mut out = Vec::new();
    for policy in policies.policies() {
        if policy.is_static() && policy.has_non_scope_constraint() {
            conditions_of(&policy.to_json().ok()?, &mut out);
        }
    }
    for template in policies.templates() {
        if template.has_non_scope_constraint() {
            conditions_of(&template.to_json().ok()?, &mut out);
        }
    }
    out.sort_by_cached_key(ToString::to_string);
    out.dedup();
    Some(out)
}

fn conditions_of(policy_json: &Value, out: &mut Vec<EntityUid>) {
    let Some(Value::Array(conditions)) = policy_json.get("conditions") else {
        // Not the shape written below: every entity named anywhere in it.
        crate::policy::entity_refs_in(policy_json, out);
        return;
    };
    for condition in conditions {
        match condition.get("body") {
            Some(body) => looked_up(body, false, out),
            None => crate::policy::entity_refs_in(condition, out),
        }
    }
}

/// The entity literals of expression `expr` (Cedar's JSON policy format) whose
/// entity data evaluation may read: all of them, except literals only compared
/// (`==`, `!=`, `contains`...), used as the right side of `in` (the ancestors read
/// are those of the left side), or tested with `is` — when `compared` says `expr`
/// itself is in such a place. Anything not recognised counts as read.
fn looked_up(expr: &Value, compared: bool, out: &mut Vec<EntityUid>) {
    let Value::Object(node) = expr else {
        if !compared {
            crate::policy::entity_refs_in(expr, out);
        }
        return;
    };
    let operands = |op: &str| {
        node.get(op)
            .and_then(|o| Some((o.get("left")?, o.get("right")?)))
    };
    if node.len() == 1 {
        for op in ["==", "!=", "contains", "containsAll", "containsAny"] {
            if let Some((left, right)) = operands(op) {
                looked_up(left, true, out);
                looked_up(right, true, out);
                return;
            }
        }
        if let Some((left, right)) = operands("in") {
            looked_up(left, false, out);
            looked_up(right, true, out);
            return;
        }
        if let Some(Value::Object(is)) = node.get("is")
            && let Some(left) = is.get("left")
        {
            // `e is T` reads only `e`'s type; `e is T in x` reads `e`'s ancestors too.
            let within = is.get("in");
            looked_up(left, within.is_none(), out);
            if let Some(within) = within {
                looked_up(within, true, out);
            }
            return;
        }
        if let Some(Value::Array(items)) = node.get("Set") {
            for item in items {
                looked_up(item, compared, out);
            }
            return;
        }
        if let Some(value) = node.get("Value") {
            if !compared {
                crate::policy::entity_refs_in(value, out);
            }
            return;
        }
    }
    // Any other expression: its sub-expressions may be read.
    for value in node.values() {
        looked_up(value, false, out);
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn literals(src: &str) -> Vec<String> {
        let set = PolicySet::from_str(src).expect("policies");
        condition_literals(&set)
            .expect("readable")
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn literals_only_compared_are_left_out() {
        let src = r#"
            permit (principal in G::"scope", action, resource == T::"scope")
            when {
                principal in G::"rhs" && resource in [T::"a", T::"b"] &&
                [T::"c"].contains(resource) && context.who == U::"eq" && context.who != U::"ne" &&
                principal is U && U::"typed" is U && resource is T in S::"within"
            };
        "#;
        assert_eq!(literals(src), Vec::<String>::new());
    }

    #[test]
    fn literals_whose_data_is_read_are_kept() {
        let src = r#"
            permit (principal, action, resource) when { U::"attr".dept == "x" };
            permit (principal, action, resource) when { U::"has" has dept };
            permit (principal, action, resource) unless { U::"lhs" in G::"g" };
            permit (principal, action, resource) when { U::"isin" is U in G::"h" };
            permit (principal, action, resource) when { (if context.f then U::"branch" else principal) in G::"k" };
            permit (principal, action, resource) when { { m: U::"record" }.m.dept == "x" };
            permit (principal, action, resource) when { U::"tag".hasTag("t") };
            permit (principal == ?principal, action, resource) when { U::"template".dept == "x" };
        "#;
        assert_eq!(
            literals(src),
            [
                r#"U::"attr""#,
                r#"U::"branch""#,
                r#"U::"has""#,
                r#"U::"isin""#,
                r#"U::"lhs""#,
                r#"U::"record""#,
                r#"U::"tag""#,
                r#"U::"template""#,
            ]
        );
    }

    #[test]
    fn unconditional_candidates_are_set_apart_and_the_rest_lose_their_scope() {
        let mut set = PolicySet::new();
        for (id, src) in [
            (
                "plain",
                r#"permit (principal == U::"a", action == Action::"x", resource);"#,
            ),
            (
                "plain-forbid",
                r#"forbid (principal, action in [Action::"x", Action::"y"], resource == T::"t");"#,
            ),
            (
                "conditional",
                r#"@note("kept") permit (principal == U::"a", action, resource == T::"t")
                when { context.n > 1 } unless { principal in G::"g" };"#,
            ),
            (
                "other-user",
                r#"permit (principal == U::"b", action, resource);"#,
            ),
            (
                "other-action",
                r#"permit (principal, action == Action::"z", resource);"#,
            ),
            (
                "other-resource",
                r#"forbid (principal, action, resource == T::"u");"#,
            ),
            (
                "filler-1",
                r#"permit (principal == U::"c", action, resource);"#,
            ),
            (
                "filler-2",
                r#"permit (principal == U::"d", action, resource);"#,
            ),
        ] {
            set.add(Policy::parse(Some(PolicyId::new(id)), src).expect("policy"))
                .expect("add");
        }
        set.add_template(
            Template::parse(
                Some(PolicyId::new("template")),
                "permit (principal == ?principal, action, resource);",
            )
            .expect("template"),
        )
        .expect("add");
        set.link(
            PolicyId::new("template"),
            PolicyId::new("linked"),
            std::collections::HashMap::from([(
                cedar_policy::SlotId::principal(),
                EntityUid::from_str(r#"U::"a""#).expect("uid"),
            )]),
        )
        .expect("link");
        let index = PolicyIndex::new(&set);
        let uid = |s: &str| EntityUid::from_str(s).expect("uid");
        let (a, x, t) = (uid(r#"U::"a""#), uid(r#"Action::"x""#), uid(r#"T::"t""#));
        let entities = Entities::empty();
        let query = index.query(&x, &t, &entities).expect("indexable");
        let selected = query.select_split(&a).expect("few candidates");
        let satisfied: Vec<String> = selected
            .satisfied
            .iter()
            .map(|p| p.id().to_string())
            .collect();
        assert_eq!(satisfied, ["plain", "plain-forbid"]);
        let evaluated: Vec<&Policy> = selected.evaluated.policies().collect();
        let ids: Vec<String> = evaluated.iter().map(|p| p.id().to_string()).collect();
        assert_eq!(ids, ["conditional", "linked"]);
        // The filed conditional policy is evaluated without its scope, and nothing else
        // of it changes.
        let conditional = evaluated[0];
        let original = set.policy(&PolicyId::new("conditional")).expect("policy");
        assert_eq!(conditional.principal_constraint(), PrincipalConstraint::Any);
        assert_eq!(conditional.action_constraint(), ActionConstraint::Any);
        assert_eq!(conditional.resource_constraint(), ResourceConstraint::Any);
        assert_eq!(conditional.effect(), original.effect());
        assert_eq!(conditional.annotation("note"), Some("kept"));
        let conditions = |p: &Policy| p.to_json().expect("json")["conditions"].clone();
        assert_eq!(conditions(conditional), conditions(original));
        // The template-linked policy is not filed: evaluated as it is, scope and all.
        let linked = evaluated[1];
        assert_eq!(
            linked.principal_constraint(),
            PrincipalConstraint::Eq(a.clone())
        );
        // `select` (the listing's partial evaluation) gets every candidate.
        let all: Vec<String> = query
            .select(&a)
            .expect("few candidates")
            .policies()
            .map(|p| p.id().to_string())
            .collect();
        assert_eq!(all, ["plain", "plain-forbid", "conditional", "linked"]);
    }
}
