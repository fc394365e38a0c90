//! What the core tells the rest of the service about the decisions it makes, and
//! why a decision is what it is.
//!
//! The core knows no metrics and no decision log: it calls a [`Recorder`] once per
//! decision, and the service's telemetry implements it. The core's types stay the
//! core's: the recorder receives the request, the outcome and the caller's
//! metadata as they are.

use std::fmt;

use serde::Serialize;

use super::{DecisionMeta, DecisionRequest, Interface, Outcome, ShadowCompared};

/// One decision, as the core hands it to its [`Recorder`].
#[derive(Debug, Clone, Copy)]
pub struct Decided<'a> {
    /// The interface the request came in through.
    pub interface: Interface,
    /// The request, or `None` when an adapter refused what it received before it
    /// became a request ([`Engine::reject`](super::Engine::reject)).
    pub request: Option<&'a DecisionRequest>,
    /// The decision, its id and how long it took.
    pub outcome: &'a Outcome,
    /// The caller's trace context and request id.
    pub meta: &'a DecisionMeta,
}

/// Where the core reports its decisions: implemented by the service's telemetry
/// (metrics and the decision log), by nothing in tests ([`NoRecorder`]).
///
/// Called on the request's path: an implementation must not block (queue, count,
/// return).
pub trait Recorder: Send + Sync + fmt::Debug {
    /// A decision was made (or refused before evaluation).
    fn decided(&self, decided: Decided<'_>);

    /// The decision cache answered (`hit`) or a decision was computed.
    fn cache_lookup(&self, hit: bool);

    /// A live decision was decided again on a shadow (called on the shadow's
    /// worker thread, never on the request's path).
    fn shadow_compared(&self, _compared: ShadowCompared<'_>) {}

    /// A live decision was not shadowed: the shadow's queue was full.
    fn shadow_dropped(&self) {}
}

/// A recorder that records nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoRecorder;

impl Recorder for NoRecorder {
    fn decided(&self, _: Decided<'_>) {}

    fn cache_lookup(&self, _: bool) {}
}

/// What kind of answer a decision is: the part of its [`Reason`] an adapter may
/// act on (an HTTP status, a gRPC code, a metric label), never parsed from text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonKind {
    /// Every evaluation allowed.
    Allowed,
    /// Evaluated, and at least one evaluation denied: no policy permits, a
    /// forbid applies, or a policy failed to evaluate (the evaluations say which).
    Denied,
    /// The request does not fit the policies: no principal, an unknown action,
    /// context or entity data the schema refuses, context only the service fills.
    Invalid,
    /// A deployment rule ([`Rules`](super::Rules)) refused it before evaluation.
    Rule,
    /// A call of a tool (a `prompts/get` of a prompt) that a server with imported
    /// tools (prompts) does not declare: denied by default.
    UndeclaredTool,
    /// A call of a declared tool or prompt with an argument it does not declare:
    /// denied by default.
    UndeclaredArgument,
    /// The interface refused what it received before it became a request (an
    /// entity type the schema does not know, a refused token, ...).
    Rejected,
}

/// Why a decision is what it is: its kind and one sentence safe to show the
/// caller. Prints and serializes as the sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    kind: ReasonKind,
    text: String,
}

impl Reason {
    /// A reason of `kind` that says `text`.
    pub fn new(kind: ReasonKind, text: impl Into<String>) -> Self {
        Self {
            kind,
            text: text.into(),
        }
    }

    /// Its kind.
    pub fn kind(&self) -> ReasonKind {
        self.kind
    }

    /// The sentence.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the sentence contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.text.contains(needle)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
}
