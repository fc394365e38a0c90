//! The one decision core: a [`DecisionRequest`] in, a [`Decision`] out.
//!
//! Two principals: a request made by an application for a user is allowed only
//! if both evaluations allow it — Cedar with `principal = user` and with
//! `principal = application`, each with the same context (which carries both).
//! One principal alone decides alone; none is a deny. Every failure (an unknown
//! action, a context that does not fit the schema, an evaluation error in any
//! policy) is a deny with a reason, never an allow.

mod cache;
mod context;
mod indexed;
pub mod names;
pub mod polling;
mod record;
pub mod replayable;
mod shadow;

use std::sync::Arc;

use cedar_policy::{Authorizer, Context, Entities, Entity, EntityUid, Request};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::policy::{PolicyStore, Shape, Snapshot, ToolAction};

pub use cache::{CacheSettings, CacheStats, DecisionCache};
pub use context::{build_context, mcp_profile, service_filled_attribute, service_filled_in};
pub use record::{Decided, NoRecorder, Reason, ReasonKind, Recorder};
pub use shadow::{
    DEFAULT_SHADOW_QUEUE, Shadow, ShadowCompared, ShadowSet, ShadowSettings, decide_uncached,
    difference,
};

/// Extra data about one entity, for this request only (e.g. groups from a token).
#[derive(Debug, Clone, PartialEq)]
pub struct RequestEntity {
    /// The entity.
    pub uid: EntityUid,
    /// Parents added to those the entity data gives it.
    pub parents: Vec<EntityUid>,
    /// Attributes, used where the entity data does not set them.
    pub attrs: Map<String, Value>,
}

/// Everything a decision depends on, already taken out of its wire format.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionRequest {
    /// The end user, if the request is made for one.
    pub user: Option<EntityUid>,
    /// The calling application, if known.
    pub application: Option<EntityUid>,
    /// The action, e.g. `Mcp::Action::"tools/call"`.
    pub action: EntityUid,
    /// The resource, e.g. `Mcp::Tool::"docs/get_document"`.
    pub resource: EntityUid,
    /// The MCP server the resource belongs to: the parent of a resource that the
    /// entity data does not list, and `context.server`.
    pub server: Option<EntityUid>,
    /// The context attributes the request itself brings (`arguments`, `request`,
    /// an AuthZEN caller's own attributes, ...). What the schema does not declare for
    /// the action is left out. For actions of the MCP profile it never holds what
    /// the service fills in ([`SERVICE_FILLED`]): such a request is denied.
    pub context: Map<String, Value>,
    /// What a verified token says beyond the principals: `context.scopes` and
    /// `context.claims`. Only identity verification sets it.
    pub token: Option<TokenFacts>,
    /// Per-request entity data, merged over the policy directory's.
    pub entities: Vec<RequestEntity>,
}

/// What a verified token brings into the context.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenFacts {
    /// `context.scopes`: the token's scopes.
    pub scopes: Vec<String>,
    /// `context.claims`: the token's selected claims.
    pub claims: Map<String, Value>,
}

/// Context attributes that only the service fills, from verified identity and
/// the request's own fields (method, target, server), never from a caller's
/// context, on any interface (DESIGN: service-filled context).
pub const SERVICE_FILLED: &[&str] = &["application", "user", "server", "scopes", "claims"];

/// Deployment-wide rules that every decision follows, whatever the interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rules {
    /// Allow a request of the MCP profile that has a user but no application to
    /// be decided by the user's evaluation alone. Off by default: a request for a
    /// user names the application acting for them, or it is denied. (Other
    /// namespaces have no application principal: a lone subject decides there.)
    pub allow_user_only: bool,
    /// Allow a `tools/call` of a tool (a `prompts/get` of a prompt) that the schema
    /// does not declare, on a server that has imported tools (prompts)
    /// (`tools/<server>.cedarschema`): evaluated with the untyped method's action.
    /// Off by default: such a call is denied.
    pub allow_undeclared_tools: bool,
    /// Allow a call of a declared tool (or prompt) with arguments its action does not
    /// declare: they are left out of the context. Off by default: such a call is
    /// denied, naming the arguments.
    pub allow_undeclared_arguments: bool,
}

impl Rules {
    /// The reason `request` is denied before any evaluation, if it is.
    pub fn refusal(&self, request: &DecisionRequest) -> Option<Reason> {
        if self.allow_user_only || !mcp_profile(&request.action) {
            return None;
        }
        match (&request.user, &request.application) {
            (Some(user), None) => Some(Reason::new(
                ReasonKind::Rule,
                format!(
                    "the request for {user} names no application: a request made for a user must \
                 say which application acts for them (a token's application claim, the caller's \
                 SPIFFE ID, or AuthZEN's `context.agent`)"
                ),
            )),
            _ => None,
        }
    }
}

impl DecisionRequest {
    /// A request for `action` on `resource`, with no principal or context yet.
    pub fn new(action: EntityUid, resource: EntityUid) -> Self {
        Self {
            user: None,
            application: None,
            action,
            resource,
            server: None,
            context: Map::new(),
            token: None,
            entities: Vec::new(),
        }
    }
}

/// Which principal an evaluation was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The end user.
    User,
    /// The calling application.
    Application,
}

/// One Cedar evaluation, for one principal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evaluation {
    /// Which principal.
    pub role: Role,
    /// The principal, as Cedar prints it.
    pub principal: String,
    /// Whether this evaluation allows.
    pub allow: bool,
    /// The policies that determined it: the permits that allowed, or the forbids that denied.
    pub policies: Vec<String>,
    /// Errors met while evaluating (each one makes the evaluation a deny).
    pub errors: Vec<String>,
    /// The tool or prompt action evaluated (`Mcp::Action::"tools/call/S/T"`, as
    /// Cedar prints it) when it is not the request's action.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Whether a policy this evaluation was decided against carries `@scopes`.
    #[serde(skip)]
    pub step_up: StepUpHint,
}

/// Whether more scope could change an evaluation's outcome into one that names
/// scopes: some policy it was evaluated against (the index's candidates, or every
/// policy unindexed) carries `@scopes` ([`Engine::step_up_scope`]). A hint about
/// how the decision was reached, not part of it: two hints are always equal, so
/// decisions reached with and without the index compare as the decisions they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepUpHint(pub bool);

impl PartialEq for StepUpHint {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for StepUpHint {}

/// The answer to a [`DecisionRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Allow only if every evaluation allowed.
    pub allow: bool,
    /// Why, in one sentence safe to show the caller.
    pub reason: Reason,
    /// One evaluation per principal (none if the request failed before evaluation).
    pub evaluations: Vec<Evaluation>,
    /// The snapshot generation that decided.
    pub generation: u64,
    /// The content digest of the snapshot that decided (`sha256:<hex>` of its
    /// policies, schema and entity data, [`ContentDigests::content`](crate::policy::ContentDigests)):
    /// equal on every replica serving the same files, unlike the generation.
    #[serde(serialize_with = "serialize_shared_str")]
    pub policy_digest: Arc<str>,
}

fn serialize_shared_str<S: serde::Serializer>(
    s: &Arc<str>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(s)
}

impl Decision {
    /// A deny decided on `snapshot` before any evaluation.
    fn denied_before_evaluation(reason: Reason, snapshot: &Snapshot) -> Self {
        Self {
            allow: false,
            reason,
            evaluations: Vec::new(),
            generation: snapshot.generation,
            policy_digest: snapshot.digests.content.clone(),
        }
    }

    /// `"allow"` or `"deny"`.
    pub fn verdict(&self) -> &'static str {
        if self.allow { "allow" } else { "deny" }
    }
}

/// Which interface a request came in through (for the decision log and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Interface {
    /// The gateway's gRPC API.
    Grpc,
    /// Envoy ext_authz over gRPC.
    ExtAuthzGrpc,
    /// Envoy ext_authz over HTTP.
    ExtAuthzHttp,
    /// Envoy ext_proc: MCP list responses filtered on the way back.
    ExtProc,
    /// OpenID AuthZEN over HTTP.
    Authzen,
    /// The command line.
    Cli,
}

impl Interface {
    /// The label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Interface::Grpc => "grpc",
            Interface::ExtAuthzGrpc => "ext_authz_grpc",
            Interface::ExtAuthzHttp => "ext_authz_http",
            Interface::ExtProc => "ext_proc",
            Interface::Authzen => "authzen",
            Interface::Cli => "cli",
        }
    }
}

/// A decision as an interface returns it: with its id and how long it took.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The decision (shared with the cache).
    pub decision: Arc<Decision>,
    /// Unique id of this decision (returned to the caller, and in the decision log).
    pub decision_id: String,
    /// Time spent deciding.
    pub latency: std::time::Duration,
}

/// A new decision id: a UUIDv7 (time-ordered), as text.
pub fn new_decision_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Facts about the call a decision is made for, kept in its decision log record.
#[derive(Debug, Clone, Default)]
pub struct DecisionMeta {
    /// The caller's W3C trace context (`traceparent`), if valid.
    pub trace: Option<crate::trace::TraceContext>,
    /// The caller's request id (e.g. `X-Request-ID`), already made safe to log.
    pub request_id: Option<String>,
    /// Where the interface took the request's MCP server from, when it chose among
    /// several sources (Envoy ext_authz: `route`, `principal`, `authority`, `default`).
    pub server_source: Option<&'static str>,
}

/// The decision engine: evaluates requests on a policy snapshot, under the
/// deployment's [`Rules`], through the decision cache when it has one, and reports
/// every decision to its [`Recorder`].
///
/// Its entries, one per request shape; a request (and every part of a batch)
/// takes one snapshot ([`Engine::snapshot`]) and is decided on it:
/// - [`Engine::decide`]: one decision, given an id, timed and recorded;
/// - [`Engine::reject`]: a request an interface refused before it became a
///   [`DecisionRequest`], recorded like a decision;
/// - [`Engine::evaluate`]: one of the many decisions of a list or a search,
///   neither timed nor recorded (the interface records the list once).
#[derive(Debug, Clone)]
pub struct Engine {
    store: Arc<PolicyStore>,
    recorder: Arc<dyn Recorder>,
    cache: Option<Arc<DecisionCache>>,
    rules: Rules,
    shadow: Option<Arc<Shadow>>,
}

impl Engine {
    /// An engine deciding on the store's snapshots that records nothing and has no
    /// cache.
    pub fn new(store: Arc<PolicyStore>) -> Self {
        Self::with_recorder(store, Arc::new(NoRecorder))
    }

    /// An engine reporting its decisions to `recorder`.
    pub fn with_recorder(store: Arc<PolicyStore>, recorder: Arc<dyn Recorder>) -> Self {
        Self {
            store,
            recorder,
            cache: None,
            rules: Rules::default(),
            shadow: None,
        }
    }

    /// The same engine with a shadow: every decision of [`Engine::decide`] (or the
    /// configured sample) is decided again, off the request's path, on the shadow
    /// store (if given) and on the live snapshot's `@shadow` policies, and the
    /// comparison reported to the engine's recorder. Starts the shadow's worker
    /// thread.
    pub fn with_shadow(
        mut self,
        store: Option<Arc<PolicyStore>>,
        settings: ShadowSettings,
    ) -> std::io::Result<Self> {
        self.shadow = Some(Arc::new(Shadow::start(
            store,
            settings,
            Arc::clone(&self.recorder),
        )?));
        Ok(self)
    }

    /// The shadow, if the engine has one.
    pub fn shadow(&self) -> Option<&Arc<Shadow>> {
        self.shadow.as_ref()
    }

    /// The same engine following `rules`.
    pub fn with_rules(mut self, rules: Rules) -> Self {
        self.rules = rules;
        self
    }

    /// The rules every decision follows.
    pub fn rules(&self) -> Rules {
        self.rules
    }

    /// The same engine with a decision cache (none if `settings` disable it).
    pub fn with_cache(mut self, settings: &CacheSettings) -> Self {
        self.cache = settings
            .enabled
            .then(|| Arc::new(DecisionCache::new(settings)));
        self
    }

    /// The policy store.
    pub fn store(&self) -> &Arc<PolicyStore> {
        &self.store
    }

    /// The snapshot serving now: take it once per request (and once per batch).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.store.snapshot()
    }

    /// The decision cache, if there is one.
    pub fn cache(&self) -> Option<&Arc<DecisionCache>> {
        self.cache.as_ref()
    }

    /// Decide `request` on `snapshot` for `interface`: the decision gets an id, is
    /// timed and is reported to the recorder (metrics, decision log).
    pub fn decide(
        &self,
        snapshot: &Snapshot,
        interface: Interface,
        request: &DecisionRequest,
        meta: &DecisionMeta,
    ) -> Outcome {
        let started = std::time::Instant::now();
        let decision = self.evaluate(snapshot, request);
        let outcome = Outcome {
            decision,
            decision_id: new_decision_id(),
            latency: started.elapsed(),
        };
        self.recorder.decided(Decided {
            interface,
            request: Some(request),
            outcome: &outcome,
            meta,
        });
        if let Some(shadow) = &self.shadow {
            shadow.offer(snapshot, interface, request, &outcome, meta, self.rules);
        }
        outcome
    }

    /// Decide `request` on `snapshot`, under the engine's rules and through its
    /// cache, without an id and without recording it: one of the many decisions of
    /// a list or a search, which its interface records once.
    pub fn evaluate(&self, snapshot: &Snapshot, request: &DecisionRequest) -> Arc<Decision> {
        if let Some(reason) = self.rules.refusal(request) {
            return Arc::new(Decision::denied_before_evaluation(reason, snapshot));
        }
        match &self.cache {
            Some(cache) => {
                let (decision, hit) = cache.get_or_compute(snapshot.generation, request, || {
                    decide_with_rules(snapshot, request, self.rules)
                });
                self.recorder.cache_lookup(hit);
                decision
            }
            None => Arc::new(decide_with_rules(snapshot, request, self.rules)),
        }
    }

    /// The scopes a denied request's client should ask for, if more scope would allow
    /// it (MCP 2025-11-25 step-up; `policy::scopes`): for a request with a token, on
    /// a deny, decide once more with the token's scopes and every `@scopes` scope of
    /// the snapshot added; if that allows, the token's scopes and the `@scopes` of the
    /// policies that allowed it, space-separated. `None`: no token, no annotated
    /// policy, or more scope would not help (a plain 403).
    pub fn step_up_scope(
        &self,
        snapshot: &Snapshot,
        denied: &DecisionRequest,
        decision: &Decision,
    ) -> Option<String> {
        let token = denied.token.as_ref()?;
        // Only a policy carrying `@scopes` can name a scope, and the decision with more
        // scope is evaluated against the same policies as `decision` was (the
        // candidates depend on the principals, action, resource and entity data, not
        // on the token's scopes): when none of them carried `@scopes`, more scope
        // cannot produce a challenge. Decided on another snapshot: decide again.
        if decision.generation == snapshot.generation
            && !decision.evaluations.iter().any(|e| e.step_up.0)
        {
            return None;
        }
        let missing: Vec<&String> = snapshot
            .scopes
            .all()
            .iter()
            .filter(|s| !token.scopes.contains(s))
            .collect();
        if missing.is_empty() {
            return None;
        }
        let mut more = denied.clone();
        if let Some(t) = more.token.as_mut() {
            t.scopes.extend(missing.into_iter().cloned());
        }
        let decision = self.evaluate(snapshot, &more);
        if !decision.allow {
            return None;
        }
        let mut scopes = token.scopes.clone();
        for id in decision.evaluations.iter().flat_map(|e| &e.policies) {
            for scope in snapshot.scopes.of_policy(&cedar_policy::PolicyId::new(id)) {
                if !scopes.contains(scope) {
                    scopes.push(scope.clone());
                }
            }
        }
        (scopes.len() > token.scopes.len()).then(|| scopes.join(" "))
    }

    /// Whether a list entry whose use is `request` is shown, under the engine's rules
    /// (see [`listed`]): without the cache, one of the many decisions of a list.
    pub fn listed(&self, snapshot: &Snapshot, request: &DecisionRequest) -> bool {
        if self.rules.refusal(request).is_some() {
            return false;
        }
        match tool_action(snapshot, request, self.rules) {
            // Not a declared tool: decided as its use, through the cache.
            Ok(None) => self.evaluate(snapshot, request).allow,
            Ok(Some(typed)) => listed_typed(snapshot, request, typed, indexed::Selection::Indexed),
            Err(_) => false,
        }
    }

    /// A deny decided before any evaluation, for a request an interface could not
    /// turn into a [`DecisionRequest`] (say an entity type the schema does not
    /// know): given an id, counted and logged like every other decision.
    pub fn reject(
        &self,
        snapshot: &Snapshot,
        interface: Interface,
        reason: impl Into<String>,
        meta: &DecisionMeta,
    ) -> Outcome {
        let outcome = Outcome {
            decision: Arc::new(Decision::denied_before_evaluation(
                Reason::new(ReasonKind::Rejected, reason),
                snapshot,
            )),
            decision_id: new_decision_id(),
            latency: std::time::Duration::ZERO,
        };
        self.recorder.decided(Decided {
            interface,
            request: None,
            outcome: &outcome,
            meta,
        });
        outcome
    }
}

/// Cedar's authorizer holds no state of its own: one serves every decision.
static AUTHORIZER: std::sync::LazyLock<Authorizer> = std::sync::LazyLock::new(Authorizer::new);

/// Decide `request` on `snapshot`. Each evaluation looks only at the policies
/// whose scope can match it (the snapshot's [`PolicyIndex`](crate::policy::PolicyIndex));
/// the decision, determining policies and errors are those of evaluating every policy.
///
/// A `tools/call` of a tool the schema declares (`Mcp::Action::"tools/call/S/T"`)
/// is evaluated with that action, and so is a `prompts/get` of a declared prompt
/// (see [`tool_action`]); undeclared tools of a server with imported tools and
/// undeclared arguments are denied under the default [`Rules`].
pub fn decide(snapshot: &Snapshot, request: &DecisionRequest) -> Decision {
    decide_selected(
        snapshot,
        request,
        indexed::Selection::Indexed,
        Rules::default(),
    )
}

/// [`decide`] under `rules` (their relaxations of typed tools; the refusals of
/// [`Rules::refusal`] are the [`Engine`]'s).
pub fn decide_with_rules(snapshot: &Snapshot, request: &DecisionRequest, rules: Rules) -> Decision {
    decide_selected(snapshot, request, indexed::Selection::Indexed, rules)
}

/// Decide `request` on `snapshot` the way Cedar does it unaided: every policy of
/// the snapshot evaluated for every principal. The reference [`decide`] is checked
/// against (tests) and measured against (benchmarks).
pub fn decide_unindexed(snapshot: &Snapshot, request: &DecisionRequest) -> Decision {
    decide_selected(
        snapshot,
        request,
        indexed::Selection::Whole,
        Rules::default(),
    )
}

/// The tool or prompt action to evaluate `request` with, when the schema declares
/// one for its resource (`Mcp::Action::"tools/call/S/T"` for `tools/call` on
/// `Mcp::Tool::"S/T"`, likewise `prompts/get/S/P`); `None` to evaluate the
/// request's own action. The one place every interface's requests are typed.
/// A `tools/call` of a tool that the schema does not declare on a server that has
/// imported tools is refused, unless `rules` allow undeclared tools.
pub fn tool_action<'s>(
    snapshot: &'s Snapshot,
    request: &DecisionRequest,
    rules: Rules,
) -> Result<Option<&'s ToolAction>, Reason> {
    let tools = &snapshot.tool_actions;
    if tools.is_empty() {
        return Ok(None);
    }
    let Some(method) = tools.method_of(&request.action) else {
        return Ok(None);
    };
    if let Some(typed) = tools.action_for(&request.action, &request.resource) {
        return Ok(Some(typed));
    }
    if rules.allow_undeclared_tools
        || request.resource.type_name().basename() != method.target_type()
    {
        return Ok(None);
    }
    let id = request.resource.id().unescaped();
    let noun = method.noun();
    match id.split_once('/') {
        Some((server, name)) if tools.server_has(method, server) => Err(Reason::new(
            ReasonKind::UndeclaredTool,
            format!(
                "{noun} `{name}` is not declared for server `{server}`, whose {noun}s are \
                 imported into the schema: calls of undeclared {noun}s are denied (import the \
                 server's {noun}s again, or set `decisions.allow_undeclared_tools`)"
            ),
        )),
        _ => Ok(None),
    }
}

/// Whether an entry of a list (`tools/list`, `prompts/list`) is shown: `request`
/// is its use with no arguments (a `tools/call` of the tool). An entry is shown
/// unless every use of it would be denied. A declared tool's (or prompt's) use is
/// decided with its tool action and `context.arguments` unknown (Cedar's partial
/// evaluation): hidden only on a definite deny (a forbid that holds whatever the
/// arguments, no permit that can hold, or a policy error that does not depend on
/// them) for the user or the application. Any other entry is decided as the use
/// itself, as before.
///
/// Like [`decide`], each partial evaluation looks only at the policies whose scope
/// can match it (the scope is known: only `context.arguments` is unknown), on the
/// slice of the entity data it can reach.
pub fn listed(snapshot: &Snapshot, request: &DecisionRequest, rules: Rules) -> bool {
    listed_selected(snapshot, request, rules, indexed::Selection::Indexed)
}

/// [`listed`] with every policy and the whole entity data (Cedar unaided): the
/// reference the indexed listing is checked against.
#[cfg(test)]
pub(crate) fn listed_unindexed(
    snapshot: &Snapshot,
    request: &DecisionRequest,
    rules: Rules,
) -> bool {
    listed_selected(snapshot, request, rules, indexed::Selection::Whole)
}

fn listed_selected(
    snapshot: &Snapshot,
    request: &DecisionRequest,
    rules: Rules,
    selection: indexed::Selection,
) -> bool {
    match tool_action(snapshot, request, rules) {
        Ok(Some(typed)) => listed_typed(snapshot, request, typed, selection),
        Ok(None) => decide_with_rules(snapshot, request, rules).allow,
        Err(_) => false,
    }
}

/// Whether the use `request` of the declared tool (or prompt) `typed` is listed: its
/// tool action decided with the arguments unknown (see [`listed`]).
fn listed_typed(
    snapshot: &Snapshot,
    request: &DecisionRequest,
    typed: &ToolAction,
    selection: indexed::Selection,
) -> bool {
    let principals: Vec<&EntityUid> = [request.user.as_ref(), request.application.as_ref()]
        .into_iter()
        .flatten()
        .collect();
    if principals.is_empty() {
        return false;
    }
    let Some(declared) = snapshot
        .context_shapes
        .get(&typed.action)
        .and_then(Shape::attributes)
    else {
        return false;
    };
    // What is known of the context, read as for the untyped method (whose context the
    // tool action's repeats, `arguments` aside), then kept to what the tool action
    // declares, with the arguments unknown.
    let mut known = request.clone();
    known.context.remove("arguments");
    let Ok(context) = build_context(snapshot, &known) else {
        return false;
    };
    let pairs = context
        .into_iter()
        .filter(|(k, _)| k != "arguments" && declared.contains_key(k))
        .chain(declared.contains_key("arguments").then(|| {
            (
                "arguments".to_owned(),
                cedar_policy::RestrictedExpression::new_unknown("arguments"),
            )
        }));
    let Ok(context) = Context::from_pairs(pairs) else {
        return false;
    };
    let typed_request = DecisionRequest {
        action: typed.action.clone(),
        ..known
    };
    let merged;
    let entities = match request_entities(snapshot, &typed_request, selection) {
        Ok(None) => &snapshot.entities,
        Ok(Some(e)) => {
            merged = e;
            &merged
        }
        Err(_) => return false,
    };
    let selector = indexed::Selector::new(snapshot, selection, &typed_request, entities);
    principals.into_iter().all(|principal| {
        if !snapshot.allows_request(principal, &typed.action, &request.resource) {
            return false;
        }
        let Ok(cedar_request) = Request::new(
            principal.clone(),
            typed.action.clone(),
            request.resource.clone(),
            context.clone(),
            None,
        ) else {
            return false;
        };
        let selected = selector.policies_for(principal);
        let policies = selected.as_deref().unwrap_or(&snapshot.policies);
        let response = AUTHORIZER.is_authorized_partial(&cedar_request, policies, entities);
        response.decision() != Some(cedar_policy::Decision::Deny)
            && response.definitely_errored().next().is_none()
    })
}

/// The reason to deny a call of the declared `typed` action whose arguments the
/// action does not declare (at any depth), naming them; `None` if every argument
/// is declared.
fn undeclared_arguments(
    snapshot: &Snapshot,
    typed: &ToolAction,
    request: &DecisionRequest,
) -> Option<Reason> {
    /// Most argument names listed in a reason.
    const LISTED: usize = 5;
    let given = request.context.get("arguments")?;
    let declared = snapshot
        .context_shapes
        .get(&typed.action)?
        .attributes()?
        .get("arguments")?;
    let paths = declared.undeclared_paths(given);
    if paths.is_empty() {
        return None;
    }
    let mut names: Vec<String> = paths
        .iter()
        .take(LISTED)
        .map(|p| format!("`{p}`"))
        .collect();
    if paths.len() > LISTED {
        names.push(format!("and {} more", paths.len() - LISTED));
    }
    let noun = typed.method.noun();
    let target = request.resource.id().unescaped();
    Some(Reason::new(
        ReasonKind::UndeclaredArgument,
        format!(
            "{noun} `{target}` does not declare the argument{} {}: undeclared arguments are \
             denied (import the server's {noun}s again, or set \
             `decisions.allow_undeclared_arguments`)",
            if paths.len() == 1 { "" } else { "s" },
            names.join(", ")
        ),
    ))
}

fn decide_selected(
    snapshot: &Snapshot,
    request: &DecisionRequest,
    selection: indexed::Selection,
    rules: Rules,
) -> Decision {
    let typed = match tool_action(snapshot, request, rules) {
        Ok(t) => t,
        Err(reason) => return Decision::denied_before_evaluation(reason, snapshot),
    };
    // A declared tool's call is evaluated with its own action, whose context types
    // its arguments.
    let typed_request;
    let request = match typed {
        Some(t) => {
            let mut r = DecisionRequest {
                action: t.action.clone(),
                ..request.clone()
            };
            // A call without arguments has none: `arguments` is required in a tool
            // action's context (so that `context.arguments has x` validates).
            if !r.context.contains_key("arguments")
                && snapshot
                    .context_shapes
                    .get(&t.action)
                    .and_then(Shape::attributes)
                    .is_some_and(|a| a.contains_key("arguments"))
            {
                r.context
                    .insert("arguments".to_owned(), Value::Object(Map::new()));
            }
            typed_request = r;
            &typed_request
        }
        None => request,
    };
    let principals: Vec<(Role, &EntityUid)> = [
        (Role::User, request.user.as_ref()),
        (Role::Application, request.application.as_ref()),
    ]
    .into_iter()
    .filter_map(|(role, p)| p.map(|p| (role, p)))
    .collect();
    if principals.is_empty() {
        return Decision::denied_before_evaluation(
            Reason::new(ReasonKind::Invalid, "no user or application to evaluate"),
            snapshot,
        );
    }
    let context = match build_context(snapshot, request) {
        Ok(c) => c,
        Err(reason) => {
            return Decision::denied_before_evaluation(
                Reason::new(ReasonKind::Invalid, reason),
                snapshot,
            );
        }
    };
    if let Some(typed) = typed
        && !rules.allow_undeclared_arguments
        && let Some(reason) = undeclared_arguments(snapshot, typed, request)
    {
        return Decision::denied_before_evaluation(reason, snapshot);
    }
    let merged;
    let entities = match request_entities(snapshot, request, selection) {
        Ok(None) => &snapshot.entities,
        Ok(Some(e)) => {
            merged = e;
            &merged
        }
        Err(reason) => {
            return Decision::denied_before_evaluation(
                Reason::new(ReasonKind::Invalid, reason),
                snapshot,
            );
        }
    };
    let selector = indexed::Selector::new(snapshot, selection, request, entities);
    // The typed action as the record shows it: written once, shared by both evaluations.
    let action_text = typed.map(|t| replayable::uid_text(&t.action));
    let evaluations: Vec<Evaluation> = principals
        .into_iter()
        .map(|(role, principal)| {
            evaluate(
                snapshot,
                &selector,
                &AUTHORIZER,
                role,
                principal,
                request,
                &context,
                entities,
            )
        })
        .map(|mut e| {
            e.action.clone_from(&action_text);
            e
        })
        .collect();
    let allow = evaluations.iter().all(|e| e.allow);
    let reason = summarize(&evaluations);
    Decision {
        allow,
        reason,
        evaluations,
        generation: snapshot.generation,
        policy_digest: snapshot.digests.content.clone(),
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "one evaluation needs each of these; a struct would only rename them"
)]
fn evaluate(
    snapshot: &Snapshot,
    selector: &indexed::Selector<'_>,
    authorizer: &Authorizer,
    role: Role,
    principal: &EntityUid,
    request: &DecisionRequest,
    context: &Context,
    entities: &Entities,
) -> Evaluation {
    let mut evaluation = Evaluation {
        role,
        principal: replayable::uid_text(principal),
        allow: false,
        policies: Vec::new(),
        errors: Vec::new(),
        action: None,
        step_up: StepUpHint::default(),
    };
    // The context was validated once for both principals (`build_context`); what is
    // left to check against the schema is which types may do the action.
    if !snapshot.allows_request(principal, &request.action, &request.resource) {
        evaluation.errors.push(format!(
            "request does not fit the schema: {} may not be the principal of {} on {}",
            principal.type_name(),
            request.action,
            request.resource.type_name()
        ));
        return evaluation;
    }
    // The candidates without a condition are satisfied as they stand; Cedar
    // evaluates the others (or, unindexed, every policy).
    let split = selector.split_for(principal);
    let (policies, satisfied) = match &split {
        Some(s) => (&*s.evaluated, &s.satisfied[..]),
        None => (&snapshot.policies, &[][..]),
    };
    if !snapshot.scopes.is_empty() {
        evaluation.step_up = StepUpHint(
            policies
                .policies()
                .chain(satisfied.iter().copied())
                .any(|p| snapshot.scopes.declares(p.id())),
        );
    }
    // Cedar's rule: a satisfied forbid denies, and the forbids satisfied are the
    // reason; otherwise a satisfied permit allows, and the permits are the reason.
    let mut permits: Vec<String> = Vec::new();
    let mut forbids: Vec<String> = Vec::new();
    for p in satisfied {
        match p.effect() {
            cedar_policy::Effect::Permit => permits.push(policy_id_text(p.id())),
            cedar_policy::Effect::Forbid => forbids.push(policy_id_text(p.id())),
        }
    }
    if !policies.is_empty() {
        let cedar_request = match Request::new(
            principal.clone(),
            request.action.clone(),
            request.resource.clone(),
            context.clone(),
            None,
        ) {
            Ok(r) => r,
            Err(e) => {
                evaluation
                    .errors
                    .push(format!("request does not fit the schema: {e}"));
                return evaluation;
            }
        };
        let response = authorizer.is_authorized(&cedar_request, policies, entities);
        let diagnostics = response.diagnostics();
        let reason = diagnostics.reason().map(policy_id_text);
        match response.decision() {
            cedar_policy::Decision::Allow => permits.extend(reason),
            cedar_policy::Decision::Deny => forbids.extend(reason),
        }
        evaluation.errors = diagnostics.errors().map(ToString::to_string).collect();
    }
    // Fail closed: an error in any policy (a forbid among them, perhaps) makes it a deny.
    evaluation.allow = forbids.is_empty() && !permits.is_empty() && evaluation.errors.is_empty();
    evaluation.policies = if forbids.is_empty() { permits } else { forbids };
    evaluation.policies.sort();
    evaluation
}

/// A policy id as Cedar writes it (`Display`: the id through `str::escape_debug`);
/// an id that escaping leaves as it is (printable ASCII without quotes or a
/// backslash, as ids usually are) is copied without the formatter.
fn policy_id_text(id: &cedar_policy::PolicyId) -> String {
    let raw: &str = id.as_ref();
    if raw
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && !matches!(b, b'"' | b'\'' | b'\\'))
    {
        raw.to_owned()
    } else {
        id.to_string()
    }
}

fn summarize(evaluations: &[Evaluation]) -> Reason {
    if evaluations.iter().all(|e| e.allow) {
        return Reason::new(ReasonKind::Allowed, "allowed");
    }
    let mut parts = Vec::new();
    for e in evaluations.iter().filter(|e| !e.allow) {
        let who = match e.role {
            Role::User => "user",
            Role::Application => "application",
        };
        if let Some(err) = e.errors.first() {
            parts.push(format!("{who} {}: {err}", e.principal));
        } else if e.policies.is_empty() {
            parts.push(format!("no policy permits the {who} {}", e.principal));
        } else {
            let ids: Vec<String> = e.policies.iter().map(|p| format!("`{p}`")).collect();
            parts.push(format!(
                "the {who} {} is forbidden by {}",
                e.principal,
                ids.join(", ")
            ));
        }
    }
    Reason::new(ReasonKind::Denied, format!("denied: {}", parts.join("; ")))
}

/// One entity a request adds or changes, with what an evaluation can reach from it.
struct Addition {
    entity: Entity,
    /// Its ancestors in the entity data and the parents the request gives it.
    parents: Vec<EntityUid>,
    /// Entity references in its attributes.
    refs: Vec<EntityUid>,
}

/// The entity data to evaluate `request` with: `None` for the snapshot's when the
/// request adds nothing; otherwise the snapshot's with this request's additions.
/// For an indexed evaluation that is a slice (see [`slice`]); unindexed, the whole
/// entity data is copied, the way Cedar is given it unaided.
fn request_entities(
    snapshot: &Snapshot,
    request: &DecisionRequest,
    selection: indexed::Selection,
) -> Result<Option<Entities>, String> {
    let mut additions: Vec<Addition> = Vec::new();
    for extra in &request.entities {
        // Indexed, an entry that changes nothing is left out (unindexed, every entry
        // is upserted, as Cedar is given it: the reference the index is checked against).
        if selection == indexed::Selection::Indexed && changes_nothing(snapshot, request, extra) {
            continue;
        }
        additions.push(merge_entity(snapshot, extra)?);
    }
    // A tool, resource or prompt that the entity data does not list still belongs
    // to its server, so that server-wide policies apply to it.
    if let Some(server) = &request.server
        && &request.resource != server
        && snapshot.entities.get(&request.resource).is_none()
        && !request.entities.iter().any(|e| e.uid == request.resource)
    {
        additions.push(Addition {
            entity: Entity::new_no_attrs(
                request.resource.clone(),
                std::iter::once(server.clone()).collect(),
            ),
            parents: vec![server.clone()],
            refs: Vec::new(),
        });
    }
    if additions.is_empty() {
        return Ok(None);
    }
    if selection == indexed::Selection::Indexed
        && let Some(sliced) = slice(snapshot, request, additions.as_slice())
    {
        return sliced.map(Some);
    }
    snapshot
        .entities
        .clone()
        .upsert_entities(
            additions.into_iter().map(|a| a.entity),
            Some(&snapshot.schema),
        )
        .map(Some)
        .map_err(not_fitting)
}

fn not_fitting(e: cedar_policy::entities_errors::EntitiesError) -> String {
    format!("request entity data does not fit the schema: {e}")
}

/// The part of the snapshot's entity data an evaluation of `request` can look at:
/// every entity reachable from the principals, action, resource, the context's
/// entity references, the entities policy conditions name and read (see
/// [`PolicyIndex::condition_literals`](crate::policy::PolicyIndex::condition_literals))
/// and the request's additions, through ancestors and entity references in
/// attributes and tags.
/// Cedar looks an entity up only to read its attributes, tags or ancestors, and
/// only entities it holds as values; those are all reached from these roots, so
/// decisions on the slice are those on the whole data (`tests/index_differential.rs`
/// checks it). `None` when the snapshot cannot tell what is reachable.
///
/// The additions replace their entities in the slice, which becomes one Cedar
/// [`Entities`]: one transitive closure per request (an upsert over a built slice
/// computed it a second time). The additions are checked against the schema on
/// their own first, as an upsert would check them; the slice's other entities are
/// the snapshot's, checked when it was loaded.
fn slice(
    snapshot: &Snapshot,
    request: &DecisionRequest,
    additions: &[Addition],
) -> Option<Result<Entities, String>> {
    let refs = snapshot.entity_refs.as_ref()?;
    // An index built for another policy set cannot vouch for its conditions.
    if !snapshot.index_is_current() {
        return None;
    }
    let literals = snapshot.index.condition_literals()?;
    let mut queue: Vec<EntityUid> = Vec::with_capacity(16 + literals.len());
    queue.extend(request.user.iter().cloned());
    queue.extend(request.application.iter().cloned());
    queue.extend(request.server.iter().cloned());
    queue.push(request.action.clone());
    queue.push(request.resource.clone());
    for value in request.context.values() {
        crate::policy::entity_refs_in(value, &mut queue);
    }
    queue.extend(literals.iter().cloned());
    for a in additions {
        queue.extend(a.parents.iter().cloned());
        queue.extend(a.refs.iter().cloned());
    }
    let mut seen: std::collections::HashSet<EntityUid> =
        std::collections::HashSet::with_capacity(queue.len() * 2);
    let mut slice: Vec<Entity> = Vec::new();
    while let Some(uid) = queue.pop() {
        if !seen.insert(uid.clone()) {
            continue;
        }
        let Some(entity) = snapshot.entities.get(&uid) else {
            continue;
        };
        if let Some(ancestors) = snapshot.entities.ancestors(&uid) {
            queue.extend(ancestors.filter(|a| !seen.contains(*a)).cloned());
        }
        if let Some(r) = refs.get(&uid) {
            queue.extend(r.iter().filter(|a| !seen.contains(*a)).cloned());
        }
        slice.push(entity.clone());
    }
    if let Err(e) = Entities::empty().upsert_entities(
        additions.iter().map(|a| a.entity.clone()),
        Some(&snapshot.schema),
    ) {
        return Some(Err(not_fitting(e)));
    }
    // As an upsert: each addition replaces the entity of its uid, and of several
    // additions of one uid the last counts.
    let mut added: std::collections::HashSet<EntityUid> =
        std::collections::HashSet::with_capacity(additions.len());
    let mut last: Vec<Entity> = Vec::with_capacity(additions.len());
    for a in additions.iter().rev() {
        if added.insert(a.entity.uid()) {
            last.push(a.entity.clone());
        }
    }
    slice.retain(|e| !added.contains(&e.uid()));
    slice.extend(last);
    Entities::from_entities(slice, None).ok().map(Ok)
}

/// Whether `extra` leaves the snapshot's entity data as it is: its entity is there,
/// already has every attribute it brings (the entity data's win) and is already in
/// every parent it names; and it is the request's only entry for that entity (of
/// several, the last replaces the others). Merged, it would be the entity it
/// replaces, with the same ancestors, and as valid as it was when the entity data
/// was loaded: the usual case of a token's groups, those the directory also lists.
fn changes_nothing(snapshot: &Snapshot, request: &DecisionRequest, extra: &RequestEntity) -> bool {
    let Some(existing) = snapshot.entities.get(&extra.uid) else {
        return false;
    };
    extra.attrs.keys().all(|k| existing.attr(k).is_some())
        && extra
            .parents
            .iter()
            .all(|p| snapshot.entities.is_ancestor_of(p, &extra.uid))
        && request
            .entities
            .iter()
            .filter(|e| e.uid == extra.uid)
            .nth(1)
            .is_none()
}

fn merge_entity(snapshot: &Snapshot, extra: &RequestEntity) -> Result<Addition, String> {
    let existing = snapshot.entities.get(&extra.uid);
    let mut parents: Vec<EntityUid> = snapshot
        .entities
        .ancestors(&extra.uid)
        .map(|a| a.cloned().collect())
        .unwrap_or_default();
    parents.extend(extra.parents.iter().cloned());
    // The usual case, groups from a token and no attributes the entity data lacks:
    // the entity as it is, with more parents. Its data was validated when loaded,
    // the merged entity is validated when upserted.
    let adds_attributes = extra
        .attrs
        .keys()
        .any(|k| existing.is_none_or(|e| e.attr(k).is_none()));
    if !adds_attributes {
        let refs = snapshot
            .entity_refs
            .as_ref()
            .and_then(|r| r.get(&extra.uid))
            .cloned()
            .unwrap_or_default();
        match existing {
            None => {
                return Ok(Addition {
                    entity: Entity::new_no_attrs(
                        extra.uid.clone(),
                        extra.parents.iter().cloned().collect(),
                    ),
                    parents,
                    refs,
                });
            }
            // `into_inner` leaves tags out: entities with tags take the long way.
            Some(e) if e.tags().next().is_none() => {
                let (uid, attrs, mut own) = e.clone().into_inner();
                own.extend(extra.parents.iter().cloned());
                if let Ok(entity) = Entity::new(uid, attrs, own) {
                    return Ok(Addition {
                        entity,
                        parents,
                        refs,
                    });
                }
            }
            Some(_) => {}
        }
    }
    let mut json = match existing {
        Some(e) => e
            .to_json_value()
            .map_err(|e| format!("cannot merge entity data: {e}"))?,
        None => serde_json::json!({ "uid": uid_json(&extra.uid), "attrs": {}, "parents": [] }),
    };
    if let Some(attrs) = json.get_mut("attrs").and_then(Value::as_object_mut) {
        for (k, v) in &extra.attrs {
            // The policy directory's entity data is authoritative.
            attrs.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    if let Some(parents) = json.get_mut("parents").and_then(Value::as_array_mut) {
        for p in &extra.parents {
            let p = uid_json(p);
            if !parents.contains(&p) {
                parents.push(p);
            }
        }
    }
    let mut refs = Vec::new();
    for key in ["attrs", "tags"] {
        if let Some(v) = json.get(key) {
            crate::policy::entity_refs_in(v, &mut refs);
        }
    }
    let entity = Entity::from_json_value(json, Some(&snapshot.schema))
        .map_err(|e| format!("entity data for {} does not fit the schema: {e}", extra.uid))?;
    Ok(Addition {
        entity,
        parents,
        refs,
    })
}

/// `{"type": ..., "id": ...}` of an entity uid.
pub(crate) fn uid_json(uid: &EntityUid) -> Value {
    serde_json::json!({ "type": uid.type_name().to_string(), "id": uid.id().unescaped() })
}

#[cfg(test)]
mod tests;
