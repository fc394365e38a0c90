//! The workload every PDP gets: the same users, applications, tools, arguments and
//! expected decisions.
//!
//! - Users `user-0` .. `user-{N-1}`; user `i` is in group `GROUPS[i % 5]` (every one
//!   of them an employee) and uses the application `APPS[(i / 5) % 3]`, so 15
//!   consecutive users cover every group × application pair.
//! - Tools: the eight tools of the reference policies, on the `docs` and `projects`
//!   servers.
//! - Arguments: each tool gets the arguments its policies look at (`max_results`,
//!   `document_id`) and one declared string argument holding a *nonce*: ten digits
//!   the load driver rewrites in place for each request of a randomized run, so that
//!   no two requests are the same decision request (every one a decision cache miss)
//!   while the expected decision stays that of the case.
//!
//! [`Case::expected`] is the oracle: the reference policies (`policies/`) written out
//! by hand for this workload. `prepare` checks it against mcp-authz's own decision
//! core for every group × application × tool × argument variant before anything runs.

use serde_json::{Value, json};

/// The groups of the bench users (all of them members of `employees`).
pub const GROUPS: [&str; 5] = [
    "engineering",
    "finance",
    "contractors",
    "project-ops",
    "doc-admins",
];

/// The applications (`ops-console` is in `approved-apps`).
pub const APPS: [&str; 3] = ["corpassist", "summarizer", "ops-console"];

/// (server, tool) of the reference policies.
pub const TOOLS: [[&str; 2]; 8] = [
    ["docs", "search_documents"],
    ["docs", "get_document"],
    ["docs", "summarize_document"],
    ["docs", "delete_document"],
    ["projects", "find_project"],
    ["projects", "get_project_lead"],
    ["projects", "list_issues"],
    ["projects", "update_issue"],
];

/// The placeholder of the nonce in every encoded request: found once per encoded
/// request, then overwritten with ten digits.
pub const NONCE_MARK: &str = "N0NCE12345";
/// Length of the nonce.
pub const NONCE_LEN: usize = NONCE_MARK.len();

/// One request of the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Case {
    /// User index.
    pub user: u32,
    /// Index into [`TOOLS`].
    pub tool: usize,
    /// Drives the arguments the policies look at.
    pub n: u32,
}

impl Case {
    /// The user id.
    pub fn user_id(&self) -> String {
        format!("user-{}", self.user)
    }

    /// The user's group.
    pub fn group(&self) -> &'static str {
        group_of(self.user)
    }

    /// The application acting for the user.
    pub fn app(&self) -> &'static str {
        app_of(self.user)
    }

    /// The MCP server.
    pub fn server(&self) -> &'static str {
        TOOLS[self.tool][0]
    }

    /// The tool name.
    pub fn tool_name(&self) -> &'static str {
        TOOLS[self.tool][1]
    }

    /// `server/tool`.
    pub fn tool_id(&self) -> String {
        format!("{}/{}", self.server(), self.tool_name())
    }

    /// Whether the document argument names a finance document.
    fn finance(&self) -> bool {
        self.n.is_multiple_of(3)
    }

    fn max_results(&self) -> u32 {
        self.n % 100
    }

    /// The tool arguments, with the nonce placeholder (or `nonce` when given).
    pub fn arguments(&self, nonce: Option<&str>) -> Value {
        let nonce = nonce.unwrap_or(NONCE_MARK);
        match self.tool_name() {
            "search_documents" => json!({
                "query": format!("q{nonce}"),
                "max_results": self.max_results(),
            }),
            "get_document" | "summarize_document" | "delete_document" => json!({
                "document_id": format!(
                    "{}/{nonce}",
                    if self.finance() { "finance" } else { "eng" }
                ),
            }),
            "update_issue" => json!({ "issue_id": format!("i{nonce}"), "status": "done" }),
            "find_project" => json!({ "name": format!("p{nonce}") }),
            _ => json!({ "project": format!("p{nonce}") }),
        }
    }

    /// The decision the reference policies give: the user's evaluation AND the
    /// application's.
    pub fn expected(&self) -> bool {
        let app = self.app();
        let contractor_finance = self.group() == "contractors" && self.finance();
        match self.tool_name() {
            // `corpassist-never-deletes`, and `only-doc-admins-delete` denies every
            // application (none is a document administrator).
            "delete_document" => false,
            // CorpAssist searches in pages of at most 50; the summarizer may search.
            "search_documents" => {
                (app == "corpassist" && self.max_results() <= 50) || app == "summarizer"
            }
            "get_document" => app == "corpassist" && !contractor_finance,
            "summarize_document" => {
                (app == "corpassist" || app == "summarizer") && !contractor_finance
            }
            "find_project" | "get_project_lead" | "list_issues" => app == "corpassist",
            // project-ops, through an approved application.
            "update_issue" => app == "ops-console" && self.group() == "project-ops",
            other => unreachable!("unknown tool {other}"),
        }
    }
}

/// The group of user `i`.
pub fn group_of(user: u32) -> &'static str {
    GROUPS[(user % 5) as usize]
}

/// The application of user `i`.
pub fn app_of(user: u32) -> &'static str {
    APPS[((user / 5) % 3) as usize]
}

/// The one request of a repeated run: user-0 (engineering, CorpAssist) searches
/// documents, 20 results: allowed.
pub fn repeated() -> Case {
    Case {
        user: 0,
        tool: 0,
        n: 20,
    }
}

/// A handful of requests covering every rule, allowed and denied: each PDP must
/// answer all of them as expected before it is measured.
pub fn probes() -> Vec<Case> {
    let case = |user, tool, n| Case { user, tool, n };
    vec![
        case(0, 0, 20), // engineering, corpassist, search 20: allow
        case(0, 0, 70), // search 70: denied by corpassist-bounded-search
        case(5, 0, 70), // summarizer may search any page size: allow
        case(2, 1, 1),  // contractor, corpassist, get eng/ doc: allow
        case(2, 1, 3),  // contractor, get finance/ doc: deny
        case(1, 1, 3),  // finance user, get finance/ doc: allow
        case(5, 2, 1),  // summarizer summarizes: allow
        case(5, 1, 1),  // summarizer may not get documents: deny
        case(4, 3, 1),  // doc-admin through corpassist deletes: deny
        case(0, 4, 1),  // corpassist finds a project: allow
        case(10, 4, 1), // ops-console may not: deny
        case(13, 7, 1), // project-ops through ops-console updates an issue: allow
        case(3, 7, 1),  // project-ops through corpassist: deny
        case(10, 7, 1), // engineering through ops-console: deny
    ]
}

/// Every group × application × tool × argument variant (for checking the oracle).
pub fn all_variants() -> Vec<Case> {
    let mut out = Vec::new();
    for user in 0..15 {
        for tool in 0..TOOLS.len() {
            for n in [0, 1, 2, 20, 50, 51, 70] {
                out.push(Case { user, tool, n });
            }
        }
    }
    out
}

/// A small, fast, seedable generator (splitmix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` and `stream` (independent sequences per stream).
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut r = Self(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        r.next();
        r
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A random case among `users` users.
pub fn random_case(rng: &mut Rng, users: u32) -> Case {
    Case {
        user: rng.below(u64::from(users)) as u32,
        tool: rng.below(TOOLS.len() as u64) as usize,
        n: rng.below(1_000_000) as u32,
    }
}
