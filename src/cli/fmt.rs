//! `mcp-authz fmt`: the policy files of a directory in Cedar's own layout
//! (`cedar-policy-formatter`, the formatter of the `cedar` CLI), comments and
//! annotations kept.
//!
//! Every `*.cedar` file the loader would read (recursively, hidden entries skipped) is
//! formatted in memory first; nothing is written unless every file parses and formats.
//! A formatted file must mean what it meant: its policies and templates, in Cedar's JSON
//! form (annotations included), and its comments must be the same before and after, or
//! the file is refused (exit 2). A changed file is written to a hidden temporary file
//! beside it and renamed over it. `--check` writes nothing and exits 1 when a file would
//! change, for CI.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;

use cedar_policy::PolicySet;
use cedar_policy_formatter::{Config, policies_str_to_pretty};
use clap::Args;
use serde_json::Value;

use super::{EXIT_DENY, EXIT_ERROR};
use crate::policy::{Problem, Problems, Severity, nesting_problem, read_policy_files};

/// Most diff lines shown per file by `--check`.
const DIFF_LINES: usize = 40;

/// `fmt` arguments.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 when every file is formatted (or was rewritten), 1 with \
`--check` when a file would change, 2 when a file does not parse or cannot be formatted (then \
nothing is written).

Examples:
  mcp-authz fmt                      # rewrite ./policies in place
  mcp-authz fmt --check policies     # in CI: list the files that would change, exit 1 if any
  mcp-authz fmt --line-width 100 --indent 4 policies"
)]
pub struct FmtArgs {
    /// Policy directory
    #[arg(value_name = "DIR", default_value = "policies")]
    dir: PathBuf,
    /// Change nothing: print each file that would change with the lines that would,
    /// and exit 1 if any would
    #[arg(long)]
    check: bool,
    /// Longest line the formatter aims for
    #[arg(long, value_name = "N", default_value_t = 80,
          value_parser = clap::value_parser!(u16).range(20..=1000))]
    line_width: u16,
    /// Spaces per indentation level
    #[arg(long, value_name = "N", default_value_t = 2,
          value_parser = clap::value_parser!(u8).range(0..=16))]
    indent: u8,
}

/// One policy file and its formatted text.
struct Formatted {
    rel: String,
    path: PathBuf,
    before: String,
    after: String,
}

/// Run `fmt`.
pub fn run(args: &FmtArgs) -> ExitCode {
    let config = Config {
        line_width: usize::from(args.line_width),
        indent_width: isize::from(args.indent),
    };
    let files = match read_policy_files(&args.dir) {
        Ok(files) => files,
        Err(problems) => return refuse(&args.dir, &problems),
    };
    if files.is_empty() {
        eprintln!(
            "error: no `*.cedar` policy files in `{}`",
            args.dir.display()
        );
        return ExitCode::from(EXIT_ERROR);
    }
    let total = files.len();
    let changed = match format_all_with_big_stack(files, &config) {
        Ok(changed) => changed,
        Err(problems) => return refuse(&args.dir, &problems),
    };

    if args.check {
        for f in &changed {
            println!("would reformat: {}", f.rel);
            print!("{}", diff_excerpt(&f.before, &f.after));
        }
        return if changed.is_empty() {
            println!(
                "ok: {total} file{} formatted",
                if total == 1 { "" } else { "s" }
            );
            ExitCode::SUCCESS
        } else {
            println!(
                "{} of {total} files would be reformatted (run `mcp-authz fmt {}`)",
                changed.len(),
                args.dir.display()
            );
            ExitCode::from(EXIT_DENY)
        };
    }

    for f in &changed {
        if let Err(e) = write_replacing(&f.path, &f.after) {
            eprintln!("error: cannot write `{}`: {e}", f.path.display());
            return ExitCode::from(EXIT_ERROR);
        }
        println!("formatted: {}", f.rel);
    }
    println!(
        "{} of {total} files formatted, {} already formatted",
        changed.len(),
        total - changed.len()
    );
    ExitCode::SUCCESS
}

fn refuse(dir: &Path, problems: &Problems) -> ExitCode {
    eprint!("{problems}");
    eprintln!(
        "error: nothing formatted in `{}`: {} file problem{}",
        dir.display(),
        problems.0.len(),
        if problems.0.len() == 1 { "" } else { "s" }
    );
    ExitCode::from(EXIT_ERROR)
}

/// Format every file; the files that change, or every problem. On a thread with a
/// generous stack, as the loader does: Cedar's parser and the formatter recurse over the
/// syntax tree, and a policy file is input we do not control.
fn format_all_with_big_stack(
    files: Vec<(String, PathBuf, String)>,
    config: &Config,
) -> Result<Vec<Formatted>, Problems> {
    let format_all = move || {
        let mut problems = Vec::new();
        let mut changed = Vec::new();
        for (rel, path, text) in files {
            match format_file(&rel, &text, config) {
                Ok(after) if after != text => changed.push(Formatted {
                    rel,
                    path,
                    before: text,
                    after,
                }),
                Ok(_) => {}
                Err(p) => problems.push(*p),
            }
        }
        if problems.is_empty() {
            Ok(changed)
        } else {
            Err(Problems(problems))
        }
    };
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("policy-fmt".into())
            .stack_size(256 * 1024 * 1024)
            .spawn_scoped(s, format_all);
        match handle {
            Ok(h) => h.join().unwrap_or_else(|_| {
                Err(Problems(vec![Problem::error(
                    None,
                    "internal error while formatting",
                )]))
            }),
            Err(e) => Err(Problems(vec![Problem::error(
                None,
                format!("cannot start the formatter: {e}"),
            )])),
        }
    })
}

/// The formatted text of one policy file, checked to mean what `text` means.
fn format_file(rel: &str, text: &str, config: &Config) -> Result<String, Box<Problem>> {
    format_with(rel, text, |t| policies_str_to_pretty(t, config))
}

/// [`format_file`] with the formatter given: a file that does not parse is refused, and
/// so is a result that does not mean what `text` means.
fn format_with(
    rel: &str,
    text: &str,
    pretty: impl FnOnce(&str) -> miette::Result<String>,
) -> Result<String, Box<Problem>> {
    if let Some(p) = nesting_problem(rel, text) {
        return Err(Box::new(p));
    }
    // Cedar's own parser first: its errors carry the place, the formatter's do not.
    let before = match PolicySet::from_str(text) {
        Ok(set) => set,
        Err(e) => {
            let located = e
                .iter()
                .flat_map(|err| {
                    Problem::from_diagnostic(err, Some(rel), Some(text), Severity::Error)
                })
                .next();
            return Err(Box::new(
                located.unwrap_or_else(|| Problem::error(Some(rel), e.to_string())),
            ));
        }
    };
    // Only comments (or nothing): nothing to lay out. The formatter would add a
    // blank first line.
    if before.policies().next().is_none() && before.templates().next().is_none() {
        return Ok(text.to_owned());
    }
    let changed_meaning = || {
        Problem::error(
            Some(rel),
            format!("the formatter changed the meaning of `{rel}`"),
        )
        .with_help(Some("the file is left as it is".into()))
    };
    let after = match pretty(text) {
        Ok(after) => after,
        Err(e) => {
            let message = e
                .chain()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(": ");
            // The formatter checks its own output; a failure of that check is a change of meaning.
            if message.contains("formatter changed") || message.contains("formatter produced") {
                return Err(Box::new(changed_meaning()));
            }
            return Err(Box::new(Problem::error(
                Some(rel),
                format!("the formatter cannot format this file: {message}"),
            )));
        }
    };
    let Ok(reparsed) = PolicySet::from_str(&after) else {
        return Err(Box::new(changed_meaning()));
    };
    if meaning(&before) != meaning(&reparsed) || comments(text) != comments(&after) {
        return Err(Box::new(changed_meaning()));
    }
    Ok(after)
}

/// Each policy and template of a set in Cedar's JSON form (annotations included, no
/// source positions), in Cedar's per-file order (`policy0`, `policy1`, ...).
fn meaning(set: &PolicySet) -> Vec<(String, Option<Value>)> {
    let mut out: Vec<(String, Option<Value>)> = set
        .policies()
        .map(|p| (p.id().to_string(), p.to_json().ok()))
        .chain(
            set.templates()
                .map(|t| (t.id().to_string(), t.to_json().ok())),
        )
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The text of every `//` comment of a policy file (outside strings), trimmed, sorted:
/// the formatter may move a comment, never drop or change one.
fn comments(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if c == '/' && chars.peek().is_some_and(|(_, n)| *n == '/') {
            let rest = text.get(i..).unwrap_or_default();
            let end = rest.find('\n').unwrap_or(rest.len());
            let comment = rest.get(2..end).unwrap_or_default();
            out.push(comment.trim());
            // Skip to the end of the line.
            while chars.peek().is_some_and(|(_, n)| *n != '\n') {
                chars.next();
            }
        }
    }
    out.sort_unstable();
    out
}

/// A unified-style diff of two texts by lines: hunks with a line of context, headed
/// `@@ -LINE +LINE @@`, at most [`DIFF_LINES`] lines in all. Files with very many
/// lines get one hunk from the first to the last changed line.
fn diff_excerpt(before: &str, after: &str) -> String {
    let a: Vec<&str> = before.lines().collect();
    let b: Vec<&str> = after.lines().collect();
    let ops = if a.len().saturating_mul(b.len()) <= 4_000_000 {
        line_diff(&a, &b)
    } else {
        trimmed_diff(&a, &b)
    };
    // Which ops to show: the changes and one line of context around each.
    let near_change = |k: usize| {
        (k.saturating_sub(1)..=k + 1).any(|i| ops.get(i).is_some_and(|(sign, ..)| *sign != ' '))
    };
    let mut out = String::new();
    let mut shown = 0;
    let mut in_hunk = false;
    for (k, (sign, (la, lb), line)) in ops.iter().enumerate() {
        if !near_change(k) {
            in_hunk = false;
            continue;
        }
        if shown == DIFF_LINES {
            let rest = ops.iter().skip(k).filter(|(s, ..)| *s != ' ').count();
            if rest > 0 {
                out.push_str(&format!("  ... {rest} more changed lines\n"));
            }
            break;
        }
        if !in_hunk {
            out.push_str(&format!("@@ -{la} +{lb} @@\n"));
            in_hunk = true;
        }
        out.push_str(&format!("{sign} {line}\n"));
        shown += 1;
    }
    out
}

/// One line of a diff: ` `, `-` or `+`, the 1-based line numbers in both texts where it
/// stands, and the line.
type DiffOp<'a> = (char, (usize, usize), &'a str);

/// A shortest edit script by longest common subsequence.
fn line_diff<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<DiffOp<'a>> {
    let (n, m) = (a.len(), b.len());
    // lcs[i * (m + 1) + j]: the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![0u32; (n + 1) * (m + 1)];
    let at = |lcs: &[u32], i: usize, j: usize| lcs.get(i * (m + 1) + j).copied().unwrap_or(0);
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            let v = if a.get(i) == b.get(j) {
                at(&lcs, i + 1, j + 1) + 1
            } else {
                at(&lcs, i + 1, j).max(at(&lcs, i, j + 1))
            };
            if let Some(cell) = lcs.get_mut(i * (m + 1) + j) {
                *cell = v;
            }
        }
    }
    let mut ops = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        let (x, y) = (a.get(i), b.get(j));
        match (x, y) {
            (Some(x), Some(y)) if x == y => {
                ops.push((' ', (i + 1, j + 1), *x));
                i += 1;
                j += 1;
            }
            (Some(x), Some(_)) if at(&lcs, i + 1, j) >= at(&lcs, i, j + 1) => {
                ops.push(('-', (i + 1, j + 1), *x));
                i += 1;
            }
            (Some(x), None) => {
                ops.push(('-', (i + 1, j + 1), *x));
                i += 1;
            }
            (_, Some(y)) => {
                ops.push(('+', (i + 1, j + 1), *y));
                j += 1;
            }
            (None, None) => break,
        }
    }
    ops
}

/// The lines between the common first and last lines, all removed then all added.
fn trimmed_diff<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<DiffOp<'a>> {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suffix = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count()
        .min(a.len().saturating_sub(prefix))
        .min(b.len().saturating_sub(prefix));
    let removed = a.get(prefix..a.len() - suffix).unwrap_or_default();
    let added = b.get(prefix..b.len() - suffix).unwrap_or_default();
    let at = (prefix + 1, prefix + 1);
    removed
        .iter()
        .map(|l| ('-', at, *l))
        .chain(added.iter().map(|l| ('+', at, *l)))
        .collect()
}

/// Replace a file's text: write a hidden temporary file beside the real file (a
/// symlink's target), with its permissions, then rename it over the file.
fn write_replacing(path: &Path, text: &str) -> std::io::Result<()> {
    let real = std::fs::canonicalize(path)?;
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = real.with_file_name(format!(".{name}.fmt-{}.tmp", std::process::id()));
    let result = std::fs::write(&tmp, text)
        .and_then(|()| std::fs::metadata(&real))
        .and_then(|meta| std::fs::set_permissions(&tmp, meta.permissions()))
        .and_then(|()| std::fs::rename(&tmp, &real));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            line_width: 80,
            indent_width: 2,
        }
    }

    #[test]
    fn formats_and_keeps_comments_and_ids() {
        let text =
            "// lead\n@id(\"a\") permit(principal,action,resource) when { // why\n true };\n";
        let out = format_file("a.cedar", text, &config()).expect("formats");
        assert!(out.contains("// lead"), "{out}");
        assert!(out.contains("// why"), "{out}");
        assert!(out.contains("@id(\"a\")"), "{out}");
        assert_eq!(format_file("a.cedar", &out, &config()).expect("again"), out);
    }

    #[test]
    fn a_parse_error_names_the_line() {
        let p = format_file(
            "a.cedar",
            "permit(principal,action,resource);\nforbid(",
            &config(),
        )
        .expect_err("bad");
        assert_eq!(p.file.as_deref(), Some("a.cedar"));
        assert_eq!(p.line, Some(2));
    }

    #[test]
    fn meaning_differs_when_a_policy_differs() {
        let a =
            PolicySet::from_str("permit(principal,action,resource) when { 1 < 2 };").expect("a");
        let b =
            PolicySet::from_str("permit(principal,action,resource) when { 2 < 1 };").expect("b");
        let c = PolicySet::from_str("permit (principal, action, resource)\nwhen { 1 < 2 };")
            .expect("c");
        assert_ne!(meaning(&a), meaning(&b));
        assert_eq!(meaning(&a), meaning(&c));
        let d = PolicySet::from_str("@id(\"x\") permit(principal,action,resource) when { 1 < 2 };")
            .expect("d");
        assert_ne!(meaning(&a), meaning(&d));
    }

    #[test]
    fn a_formatter_that_changes_meaning_is_refused() {
        let text = "// keep me\npermit(principal,action,resource) when { 1 < 2 };\n";
        let changed = |f: fn(&str) -> String| {
            let p = format_with("a.cedar", text, |t| Ok(f(t))).expect_err("refused");
            assert_eq!(p.message, "the formatter changed the meaning of `a.cedar`");
        };
        changed(|t| t.replace("1 < 2", "2 < 1"));
        changed(|t| t.replace("// keep me", "// kept"));
        changed(|t| t.replace("permit", "forbid"));
        changed(|t| t.replace(";", ""));
        changed(|t| format!("@id(\"new\")\n{t}"));
        let same = format_with("a.cedar", text, |t| Ok(t.replace("{ 1", "{\n  1")));
        assert!(same.is_ok());
    }

    #[test]
    fn files_without_policies_are_left_as_they_are() {
        for text in ["", "\n", "// nothing yet\n", "// one\n\n// two\n"] {
            let out = format_with("a.cedar", text, |t| policies_str_to_pretty(t, &config()));
            let out = out.unwrap_or_else(|p| panic!("{text:?}: {p}"));
            assert_eq!(out, text);
        }
    }

    #[test]
    fn comments_skip_strings() {
        let text = "// one\npermit(principal,action,resource) when { context.url == \"http://x\" }; // two\n";
        assert_eq!(comments(text), vec!["one", "two"]);
    }

    #[test]
    fn diff_shows_the_changed_lines() {
        let d = diff_excerpt("a\nb\nc\nd\ne\nf\n", "a\nB\nc\nd\ne\nf\ng\n");
        assert_eq!(
            d,
            "@@ -1 +1 @@\n  a\n- b\n+ B\n  c\n@@ -6 +6 @@\n  f\n+ g\n"
        );
        let d = trimmed_diff(&["a", "b", "c"], &["a", "c"]);
        assert_eq!(d, vec![('-', (2, 2), "b")]);
    }
}
