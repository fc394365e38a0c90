//! Which policies an evaluation hands to Cedar: the candidates the snapshot's
//! [`PolicyIndex`](crate::policy::PolicyIndex) finds for it, or every policy.
//! See `src/policy/index.rs` for why the two give the same decisions.

use std::sync::Arc;

use cedar_policy::{Entities, EntityUid, PolicySet};

use super::DecisionRequest;
use crate::policy::{Query, Selected, Snapshot};

/// How an evaluation selects its policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Selection {
    /// Only those whose scope can match the request (the index).
    Indexed,
    /// All of the snapshot's (Cedar unaided).
    Whole,
}

/// How the policies of a request's principals are selected: one request's action
/// and resource looked up in the index once ([`Query`]), each principal then.
pub(super) enum Selector<'q> {
    /// Every principal evaluates the whole set.
    Whole,
    /// The index's candidates.
    Indexed(Query<'q>),
}

impl<'q> Selector<'q> {
    /// The selector of `request` evaluated with `entities` (the snapshot's, with
    /// this request's additions).
    pub(super) fn new(
        snapshot: &'q Snapshot,
        selection: Selection,
        request: &'q DecisionRequest,
        entities: &'q Entities,
    ) -> Self {
        match selection {
            Selection::Whole => Self::Whole,
            // An index that was not built from this set (its policies replaced
            // afterwards) is not used.
            Selection::Indexed if !snapshot.index_is_current() => Self::Whole,
            Selection::Indexed => snapshot
                .index
                .query(&request.action, &request.resource, entities)
                .map_or(Self::Whole, Self::Indexed),
        }
    }

    /// The policies to evaluate for `principal`, or `None` for all of the
    /// snapshot's.
    pub(super) fn policies_for(&self, principal: &EntityUid) -> Option<Arc<PolicySet>> {
        match self {
            Self::Whole => None,
            Self::Indexed(query) => query.select(principal),
        }
    }

    /// The policies to evaluate for `principal` and those satisfied without
    /// evaluation ([`Query::select_split`]), or `None` for all of the snapshot's,
    /// each evaluated.
    pub(super) fn split_for(&self, principal: &EntityUid) -> Option<Selected<'_>> {
        match self {
            Self::Whole => None,
            Self::Indexed(query) => query.select_split(principal),
        }
    }
}

#[cfg(test)]
mod tests;
