//! `mcp-authz fmt`: the reference policies are formatted, formatting rewrites only what
//! changes and never what a policy means, and a broken file stops everything.

use std::path::Path;
use std::str::FromStr;

use cedar_policy::PolicySet;

use crate::support::process::{bin, run, text};
use crate::support::{copy_dir, copy_of_reference, reference_policies, repo};

fn fmt(args: &[&str], dir: &Path) -> (i32, String, String) {
    let out = run(bin().arg("fmt").args(args).arg(dir));
    let (o, e) = text(&out);
    (out.status.code().unwrap_or(-1), o, e)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).expect("read")
}

/// Each policy and template of a file in Cedar's JSON form, in order.
fn meaning(text: &str) -> Vec<serde_json::Value> {
    let set = PolicySet::from_str(text).expect("parses");
    let mut items: Vec<(String, serde_json::Value)> = set
        .policies()
        .map(|p| (p.id().to_string(), p.to_json().expect("json")))
        .chain(
            set.templates()
                .map(|t| (t.id().to_string(), t.to_json().expect("json"))),
        )
        .collect();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    items.into_iter().map(|(_, v)| v).collect()
}

/// Every `*.cedar` file under `dir`, relative path and text.
fn cedar_files(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(cedar_files(&path));
        } else if path.extension().is_some_and(|e| e == "cedar") {
            out.push((path.display().to_string(), read(&path)));
        }
    }
    out.sort();
    out
}

/// The same policies, laid out badly: indentation dropped and every line break after
/// a comma or an opening bracket removed.
fn mangle(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let line = line.trim_start();
        out.push_str(line);
        if !line.contains("//") && (line.ends_with(',') || line.ends_with('(')) {
            out.push(' ');
        } else {
            out.push('\n');
        }
    }
    out
}

#[test]
fn reference_policies_are_formatted() {
    let (code, out, err) = fmt(&["--check"], &reference_policies());
    assert_eq!(code, 0, "run `mcp-authz fmt policies`:\n{out}{err}");
    assert!(out.contains("ok: 3 files formatted"), "{out}");
}

#[test]
fn formatting_never_changes_what_policies_mean() {
    // The reference policies, the typed fixtures and the AuthZEN fixtures, laid out
    // badly, then formatted: each file's policies are the same in Cedar's JSON form.
    for fixture in [
        reference_policies(),
        repo().join("tests/fixtures/typed"),
        repo().join("tests/fixtures/authzen"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_dir(&fixture, dir.path());
        let originals = cedar_files(dir.path());
        assert!(!originals.is_empty(), "{}", fixture.display());
        for (path, text) in &originals {
            std::fs::write(path, mangle(text)).expect("write");
        }
        let (code, out, err) = fmt(&["--check"], dir.path());
        assert_eq!(code, 1, "{out}{err}");
        let (code, out, err) = fmt(&[], dir.path());
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains("formatted: "), "{out}");
        for ((path, original), (_, formatted)) in originals.iter().zip(cedar_files(dir.path())) {
            assert_eq!(meaning(original), meaning(&formatted), "{path}");
            // Comments and ids are kept.
            for line in original.lines().map(str::trim) {
                if line.starts_with("//") || line.starts_with("@id(") {
                    assert!(
                        formatted.contains(line),
                        "{path} lost `{line}`:\n{formatted}"
                    );
                }
            }
        }
        let (code, out, err) = fmt(&["--check"], dir.path());
        assert_eq!(code, 0, "formatting is stable: {out}{err}");
    }
    // And the formatted reference set still validates.
    let dir = copy_of_reference();
    let users = dir.path().join("users.cedar");
    std::fs::write(&users, mangle(&read(&users))).expect("write");
    assert_eq!(fmt(&[], dir.path()).0, 0);
    let out = run(bin().arg("validate").arg(dir.path()));
    assert!(out.status.success(), "{}", text(&out).1);
    assert!(text(&out).0.contains("ok: 18 policies in 3 files"));
}

#[test]
fn check_lists_the_changes_and_writes_nothing() {
    let dir = copy_of_reference();
    let users = dir.path().join("users.cedar");
    let mangled = mangle(&read(&users));
    std::fs::write(&users, &mangled).expect("write");
    let (code, out, err) = fmt(&["--check"], dir.path());
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("would reformat: users.cedar\n"), "{out}");
    assert!(!out.contains("applications.cedar"), "{out}");
    assert!(out.contains("@@ -"), "a diff excerpt: {out}");
    assert!(out.contains("1 of 3 files would be reformatted"), "{out}");
    assert_eq!(read(&users), mangled, "--check writes nothing");

    let (code, out, err) = fmt(&[], dir.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("formatted: users.cedar\n"), "{out}");
    assert!(
        out.contains("1 of 3 files formatted, 2 already formatted"),
        "{out}"
    );
    assert_eq!(
        read(&users),
        read(&reference_policies().join("users.cedar"))
    );
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains(".tmp")), "{names:?}");
}

#[test]
fn a_file_that_does_not_parse_stops_everything() {
    let dir = copy_of_reference();
    let users = dir.path().join("users.cedar");
    let apps = dir.path().join("applications.cedar");
    let mangled = mangle(&read(&apps));
    std::fs::write(&apps, &mangled).expect("write");
    let broken = read(&users).replacen("permit (", "permit (\n  principal principal", 1);
    std::fs::write(&users, &broken).expect("write");
    let (code, out, err) = fmt(&[], dir.path());
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("--> users.cedar:"), "{err}");
    assert!(err.contains("nothing formatted"), "{err}");
    assert!(!out.contains("formatted:"), "{out}");
    assert_eq!(read(&apps), mangled, "nothing is written");
    assert_eq!(read(&users), broken);
    let (code, _, err) = fmt(&["--check"], dir.path());
    assert_eq!(code, 2, "{err}");
}

#[test]
fn subdirectories_are_formatted_and_hidden_entries_skipped() {
    let dir = copy_of_reference();
    std::fs::create_dir(dir.path().join("teams")).expect("mkdir");
    std::fs::write(
        dir.path().join("teams/extra.cedar"),
        "permit (principal == Mcp::User::\"erin\", action == Mcp::Action::\"ping\", resource) when {true};\n",
    )
    .expect("write");
    std::fs::create_dir(dir.path().join(".git")).expect("mkdir");
    std::fs::write(dir.path().join(".git/broken.cedar"), "this is not cedar").expect("write");
    std::fs::write(dir.path().join(".#users.cedar"), "editor lock file").expect("write");
    let (code, out, err) = fmt(&[], dir.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("formatted: teams/extra.cedar\n"), "{out}");
    assert!(out.contains("1 of 4 files formatted"), "{out}");
    assert_eq!(
        read(&dir.path().join(".git/broken.cedar")),
        "this is not cedar"
    );
}

#[test]
fn line_width_and_indent_are_options() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("p.cedar");
    std::fs::write(
        &file,
        "// a comment\n@id(\"p\")\npermit (principal, action, resource) when { context.alpha && context.beta && context.gamma && context.delta };\n",
    )
    .expect("write");
    let (code, out, err) = fmt(&["--indent", "4", "--line-width", "40"], dir.path());
    assert_eq!(code, 0, "{out}{err}");
    let formatted = read(&file);
    assert!(formatted.contains("\n    "), "{formatted}");
    assert!(
        formatted.contains("// a comment\n@id(\"p\")\n"),
        "{formatted}"
    );
    assert!(formatted.lines().all(|l| l.len() <= 40), "{formatted}");

    let (code, _, err) = fmt(&["--indent", "99"], dir.path());
    assert_eq!(code, 2, "{err}");
}

#[test]
fn bad_directories_are_errors() {
    let (code, _, err) = fmt(&[], Path::new("/nonexistent/policies"));
    assert_eq!(code, 2);
    assert!(err.contains("cannot read policy directory"), "{err}");
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, _, err) = fmt(&["--check"], dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("no `*.cedar` policy files"), "{err}");
}

#[test]
fn help_has_examples() {
    let out = run(bin().args(["fmt", "--help"]));
    let (o, _) = text(&out);
    assert!(out.status.success());
    assert!(o.contains("Examples:"), "{o}");
    assert!(o.contains("--check"), "{o}");
}

#[cfg(unix)]
#[test]
fn a_symlinked_file_is_rewritten_where_it_points() {
    // A Kubernetes ConfigMap mounts its files as symlinks into a hidden `..data` folder.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("..data")).expect("mkdir");
    let real = dir.path().join("..data/p.cedar");
    std::fs::write(&real, "permit(principal,action,resource);\n").expect("write");
    std::os::unix::fs::symlink("..data/p.cedar", dir.path().join("p.cedar")).expect("symlink");
    let (code, out, err) = fmt(&[], dir.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("formatted: p.cedar\n"), "{out}");
    assert_eq!(read(&real), "permit (principal, action, resource);\n");
    let link = std::fs::symlink_metadata(dir.path().join("p.cedar")).expect("metadata");
    assert!(link.file_type().is_symlink(), "still a symlink");
}
