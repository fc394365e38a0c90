//! Which policies an evaluation hands to Cedar: the candidates the snapshot's
//! [`PolicyIndex`](crate::policy::PolicyIndex) finds for it, or every policy.
//! See `src/policy/index.rs` for why the two give the same decisions.

use std::sync::Arc;

use cedar_policy::{Entities, EntityUid, PolicySet};

use super::DecisionRequest;
use crate::policy::Snapshot;

/// How an evaluation selects its policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Selection {
    /// Only those whose scope can match the request (the index).
    Indexed,
    /// All of the snapshot's (Cedar unaided).
    Whole,
}

/// The policies to evaluate for `principal` and `request`, or `None` for all of
/// the snapshot's. `entities` is the data the request is evaluated with (the
/// snapshot's, with this request's additions).
pub(super) fn policies_for(
    snapshot: &Snapshot,
    selection: Selection,
    principal: &EntityUid,
    request: &DecisionRequest,
    entities: &Entities,
) -> Option<Arc<PolicySet>> {
    match selection {
        Selection::Whole => None,
        // An index that was not built from this set (its policies replaced
        // afterwards) is not used.
        Selection::Indexed if !snapshot.index_is_current() => None,
        Selection::Indexed => {
            snapshot
                .index
                .select(principal, &request.action, &request.resource, entities)
        }
    }
}

#[cfg(test)]
mod tests;
