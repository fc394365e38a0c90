//! Deciding the cases of suites, and what they covered.

use std::collections::BTreeSet;
use std::sync::Arc;

use cedar_policy::Effect;

use super::{Case, Expect, ExpectedPolicies, Suite};
use crate::authz::{Decision, Engine, ReasonKind, Role};
use crate::policy::Snapshot;

/// What a case got: the decision's verdict, or `invalid` when the request was refused
/// before evaluation.
pub type Got = Expect;

/// The result of one case.
#[derive(Debug, Clone)]
pub struct CaseResult<'a> {
    /// Its suite.
    pub suite: &'a Suite,
    /// The case.
    pub case: &'a Case,
    /// The decision the core made.
    pub decision: Arc<Decision>,
    /// What that decision is, in the terms of an expectation.
    pub got: Got,
    /// What did not match what the case expects (empty: it passed).
    pub failures: Vec<String>,
}

impl CaseResult<'_> {
    /// Whether everything matched.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The determining policies of `role`'s evaluation, if there was one.
    pub fn policies(&self, role: Role) -> Option<&[String]> {
        self.decision
            .evaluations
            .iter()
            .find(|e| e.role == role)
            .map(|e| e.policies.as_slice())
    }
}

/// The results of a run, in the suites' and cases' order.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    /// One per case.
    pub results: Vec<CaseResult<'a>>,
}

/// Which policies some case made determining.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coverage {
    /// Every policy of the snapshot: its id, whether it is a forbid, and whether some
    /// case made it determining (for a forbid: some case hit it), sorted by id.
    pub policies: Vec<(String, bool, bool)>,
}

impl Coverage {
    /// How many policies some case made determining.
    pub fn covered(&self) -> usize {
        self.policies.iter().filter(|(_, _, c)| *c).count()
    }

    /// The covered share, in percent (100 for a set without policies).
    pub fn percent(&self) -> f64 {
        if self.policies.is_empty() {
            return 100.0;
        }
        #[expect(
            clippy::cast_precision_loss,
            reason = "policy counts are far below 2^52"
        )]
        let share = self.covered() as f64 / self.policies.len() as f64;
        share * 100.0
    }
}

impl Report<'_> {
    /// How many cases passed.
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed()).count()
    }

    /// How many cases failed.
    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }

    /// Which policies of `snapshot` some case made determining.
    pub fn coverage(&self, snapshot: &Snapshot) -> Coverage {
        let hit: BTreeSet<&str> = self
            .results
            .iter()
            .flat_map(|r| r.decision.evaluations.iter())
            .flat_map(|e| e.policies.iter().map(String::as_str))
            .collect();
        let mut policies: Vec<(String, bool, bool)> = snapshot
            .policies
            .policies()
            .map(|p| {
                let id = p.id().to_string();
                let covered = hit.contains(id.as_str());
                (id, p.effect() == Effect::Forbid, covered)
            })
            .collect();
        policies.sort();
        Coverage { policies }
    }
}

/// Decide every case of `suites` with `engine` (give it the deployment's rules, and no
/// cache), on one snapshot: the entry point of every interface, without recording.
pub fn run<'a>(engine: &Engine, suites: &'a [Suite]) -> Report<'a> {
    /// Fewer cases than this are decided on the calling thread.
    const PARALLEL_FROM: usize = 512;
    let snapshot = engine.snapshot();
    let cases: Vec<(&'a Suite, &'a Case)> = suites
        .iter()
        .flat_map(|suite| suite.cases.iter().map(move |case| (suite, case)))
        .collect();
    let decide = |&(suite, case): &(&'a Suite, &'a Case)| {
        let decision = engine.evaluate(&snapshot, &case.request);
        let got = got(&decision);
        let failures = failures(case, &decision, got);
        CaseResult {
            suite,
            case,
            decision,
            got,
            failures,
        }
    };
    // The cases in contiguous chunks, one thread per core, the results in case order.
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let results =
        crate::parallel::map_in_order(&cases, &mut vec![(); threads], PARALLEL_FROM, |(), c| {
            decide(c)
        });
    Report { results }
}

/// A decision in the terms of an expectation.
pub fn got(decision: &Decision) -> Got {
    if decision.allow {
        return Expect::Allow;
    }
    match decision.reason.kind() {
        ReasonKind::Allowed | ReasonKind::Denied => Expect::Deny,
        ReasonKind::Invalid
        | ReasonKind::Rule
        | ReasonKind::UndeclaredTool
        | ReasonKind::UndeclaredArgument
        | ReasonKind::Rejected => Expect::Invalid,
    }
}

fn failures(case: &Case, decision: &Decision, got: Got) -> Vec<String> {
    let mut out = Vec::new();
    if got != case.expect {
        out.push(format!(
            "expected {}, got {}",
            case.expect.as_str(),
            got.as_str()
        ));
    }
    if let Some(ExpectedPolicies { user, application }) = &case.policies {
        for (role, name, want) in [
            (Role::User, "user", user),
            (Role::Application, "application", application),
        ] {
            let Some(want) = want else { continue };
            let have = decision.evaluations.iter().find(|e| e.role == role);
            let want_set: BTreeSet<&str> = want.iter().map(String::as_str).collect();
            match have {
                Some(e) => {
                    let have_set: BTreeSet<&str> = e.policies.iter().map(String::as_str).collect();
                    if have_set != want_set {
                        out.push(format!(
                            "expected the {name}'s determining policies [{}], got [{}]",
                            want.join(", "),
                            e.policies.join(", ")
                        ));
                    }
                }
                None => out.push(format!(
                    "expected the {name}'s determining policies [{}], got no {name} evaluation",
                    want.join(", ")
                )),
            }
        }
    }
    if let Some(reason) = &case.reason
        && !decision.reason.to_string().contains(reason.as_str())
    {
        out.push(format!("expected a reason containing `{reason}`"));
    }
    out
}
