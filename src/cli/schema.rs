//! `mcp-authz schema import` and `schema check`: a server's saved `tools/list` (and
//! `prompts/list`) as the generated files of a policy directory, and whether the server
//! still lists what was imported.
//!
//! `import` writes `DIR/tools/<server>.cedarschema` (one action per tool and prompt, the
//! mapping is [`crate::mcp::import`]) and `DIR/tools/<server>.entities.json`, after
//! checking that Cedar accepts the fragment together with the directory's base schema and
//! the entities against both. A file whose text would not change is not rewritten.
//! `check` maps the listing the same way and compares it with the imported fragment:
//! exit 0 when equal, 1 listing the differences, 2 on bad input.
//!
//! With `--url URL` instead of FILE both list the live server ([`client`]): its tools,
//! and its prompts when it declares the `prompts` capability (then `check` compares the
//! prompts too: a server without the capability has none).
//!
//! `export` prints the directory's base schema and fragments as one schema
//! ([`crate::policy::combined_schema`]), for tools that read one schema file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

mod client;

use super::{EXIT_DENY, EXIT_ERROR};
use crate::mcp::import::{
    self, Base, Declared, PromptDef, Provenance, ToolDef, Untypable, check_server_name,
};
use crate::policy::TOOLS_DIR;

/// `schema` arguments.
#[derive(Debug, Args)]
pub struct SchemaArgs {
    #[command(subcommand)]
    command: SchemaCommand,
}

#[derive(Debug, Subcommand)]
enum SchemaCommand {
    /// Import a server's tools (and prompts) from a saved `tools/list` result or live
    /// (`--url`): writes `DIR/tools/SERVER.cedarschema` and `DIR/tools/SERVER.entities.json`
    Import(ImportArgs),
    /// Compare a server's saved `tools/list` result (or its live listing, `--url`) with
    /// what was imported: exit 0 when equal, 1 listing the differences, 2 on bad input
    Check(ImportArgs),
    /// Print the policy directory's schema (the base schema and every imported fragment)
    /// as one schema, for tools that read a single schema file (the `cedar` CLI)
    Export(ExportArgs),
}

/// Arguments of `schema export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Policy directory
    #[arg(long, value_name = "DIR", default_value = "policies")]
    policies: PathBuf,
    /// Cedar's schema syntax, or its JSON schema format
    #[arg(long, value_enum, default_value_t = ExportFormat::Cedar)]
    format: ExportFormat,
}

/// The format `schema export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ExportFormat {
    /// Cedar's schema syntax (`.cedarschema`)
    Cedar,
    /// Cedar's JSON schema format (`.cedarschema.json`)
    Json,
}

/// Arguments of `schema import` and `schema check`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The server's name, as in `Mcp::Server::"SERVER"`
    #[arg(long, value_name = "SERVER")]
    server: String,
    /// A saved `tools/list` result (`{"tools": [...]}`, or the whole JSON-RPC response),
    /// every page in one list
    #[arg(
        value_name = "FILE",
        required_unless_present = "url",
        conflicts_with = "url"
    )]
    tools: Option<PathBuf>,
    /// A saved `prompts/list` result
    #[arg(long, value_name = "FILE", conflicts_with = "url")]
    prompts: Option<PathBuf>,
    /// List the live server instead (its MCP endpoint, streamable HTTP): its tools, and
    /// its prompts when it declares the `prompts` capability
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// A request header for `--url`, e.g. `Authorization: Bearer TOKEN` (repeatable;
    /// never printed or written)
    #[arg(long = "header", value_name = "NAME: VALUE", requires = "url")]
    headers: Vec<String>,
    /// With `--url`: bound of each request, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 30, requires = "url")]
    timeout: u64,
    /// With `--url`: most pages read of one list
    #[arg(long, value_name = "N", default_value_t = 100, requires = "url")]
    max_pages: usize,
    /// Policy directory: its top-level `*.cedarschema` is the base schema
    #[arg(long, value_name = "DIR", default_value = "policies")]
    policies: PathBuf,
    /// `import`: write the files even when the policy directory would not load with
    /// them (a policy names a tool the server no longer lists, say)
    #[arg(long)]
    force: bool,
}

/// Run `schema import` or `schema check`.
pub fn run(args: &SchemaArgs) -> ExitCode {
    let result = match &args.command {
        SchemaCommand::Import(a) => import(a),
        SchemaCommand::Check(a) => check(a),
        SchemaCommand::Export(a) => export(a),
    };
    result.unwrap_or_else(|message| {
        eprintln!("error: {message}");
        ExitCode::from(EXIT_ERROR)
    })
}

/// `schema export`: the combined schema on stdout, or the directory's problems.
fn export(args: &ExportArgs) -> Result<ExitCode, String> {
    let format = match args.format {
        ExportFormat::Cedar => crate::policy::SchemaFormat::Cedar,
        ExportFormat::Json => crate::policy::SchemaFormat::Json,
    };
    let combined = crate::policy::read_sources(&args.policies)
        .and_then(|sources| crate::policy::combined_schema(&sources, format));
    match combined {
        Ok(text) => {
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Err(problems) => Err(format!(
            "`{}` has no valid schema:\n{problems}",
            args.policies.display()
        )),
    }
}

/// What an import produces from its inputs, before anything is written.
struct Imported {
    base: Base,
    declared: Declared,
    notes: Vec<Untypable>,
    /// Whether the listing holds the server's prompts (for `check`).
    compare_prompts: bool,
    /// The server's entities that the directory's `entities.json` defines (shown as
    /// `Mcp::Tool::"S/T"`): left out of the generated entity file.
    kept_out: Vec<String>,
    schema: String,
    entities: String,
}

/// Largest input file read (as the policy directory's loader).
const MAX_FILE_BYTES: u64 = crate::policy::MAX_FILE_BYTES;

fn read(path: &Path) -> Result<String, String> {
    if let Ok(meta) = std::fs::metadata(path)
        && meta.len() > MAX_FILE_BYTES
    {
        return Err(format!(
            "`{}` is {} bytes, more than the limit of {MAX_FILE_BYTES}",
            path.display(),
            meta.len()
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))
}

/// The base schema of a policy directory: its one top-level `*.cedarschema` file.
fn base_schema(dir: &Path) -> Result<(PathBuf, String), String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read policy directory `{}`: {e}", dir.display()))?;
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension().is_some_and(|x| x == "cedarschema")
                && !p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    found.sort();
    match found.as_slice() {
        [one] => {
            let text = read(one)?;
            Ok((one.clone(), text))
        }
        [] => Err(format!("no `*.cedarschema` file in `{}`", dir.display())),
        many => Err(format!(
            "more than one `*.cedarschema` file in `{}`: {}",
            dir.display(),
            many.iter()
                .map(|p| format!("`{}`", p.display()))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn generate(args: &ImportArgs) -> Result<Imported, String> {
    check_server_name(&args.server).map_err(|e| e.to_string())?;
    let (base_path, base_text) = base_schema(&args.policies)?;
    let base = Base::from_cedarschema(&base_text)
        .map_err(|e| format!("`{}`: {e}", base_path.display()))?;
    let listed = listing(args)?;
    let tools: Vec<ToolDef> = import::read_tools(&listed.tools)
        .map_err(|e| format!("`{}`: {e}", listed.from.tools_file))?;
    let prompts: Vec<PromptDef> = match (&listed.prompts, &listed.from.prompts_file) {
        (Some(text), Some(name)) => {
            import::read_prompts(text).map_err(|e| format!("`{name}`: {e}"))?
        }
        _ => Vec::new(),
    };
    let (declared, notes) = import::declare(&tools, &prompts);
    let from = listed.from;
    let schema = import::render_fragment(&from, &tools, &prompts, &declared, &notes, &base)
        .map_err(|e| format!("`{}`: {e}", base_path.display()))?;
    let defined = defined_entities(&args.policies)?;
    let kept_out: Vec<String> = defined_of_server(&args.server, &tools, &prompts, &defined);
    let entities = import::render_entities_except(&args.server, &tools, &prompts, &base, &defined);
    accepted_by_cedar(&base_text, &schema, &entities)?;
    Ok(Imported {
        base,
        declared,
        notes,
        compare_prompts: listed.compare_prompts,
        kept_out,
        schema,
        entities,
    })
}

/// The listing an import reads, from files or from the live server.
struct Listed {
    tools: String,
    prompts: Option<String>,
    /// Where it came from (file names, or the URL without secrets).
    from: Provenance,
    /// Whether the prompts are the server's whole list: given as a file, or listed live
    /// (a server without the `prompts` capability has none).
    compare_prompts: bool,
}

fn listing(args: &ImportArgs) -> Result<Listed, String> {
    if let Some(url) = &args.url {
        return live(args, url);
    }
    let Some(tools_file) = &args.tools else {
        return Err("give a `tools/list` FILE or `--url URL`".to_owned());
    };
    let prompts = match &args.prompts {
        Some(p) => Some(read(p)?),
        None => None,
    };
    Ok(Listed {
        tools: read(tools_file)?,
        prompts,
        from: Provenance {
            server: args.server.clone(),
            tools_file: tools_file.display().to_string(),
            prompts_file: args.prompts.as_ref().map(|p| p.display().to_string()),
            live: false,
        },
        compare_prompts: args.prompts.is_some(),
    })
}

fn live(args: &ImportArgs, url: &str) -> Result<Listed, String> {
    let url = client::endpoint(url).map_err(|e| e.to_string())?;
    let mut headers = reqwest::header::HeaderMap::new();
    for spec in &args.headers {
        client::add_header(&mut headers, spec).map_err(|e| e.to_string())?;
    }
    let (shown, hidden) = client::public_url(&url);
    if hidden {
        eprintln!(
            "note: the generated files name the server `{shown}`: the URL's user, password, query and fragment are left out"
        );
    }
    let options = client::Live {
        url,
        headers,
        timeout: std::time::Duration::from_secs(args.timeout.max(1)),
        max_pages: args.max_pages.max(1),
        max_bytes: MAX_FILE_BYTES,
    };
    let listing = client::list(&options).map_err(|e| e.to_string())?;
    eprintln!(
        "listed `{shown}` (protocol {}): tools{}",
        listing.protocol_version,
        if listing.prompts.is_some() {
            " and prompts"
        } else {
            ""
        }
    );
    Ok(Listed {
        tools: listing.tools,
        from: Provenance {
            server: args.server.clone(),
            tools_file: shown.clone(),
            prompts_file: listing.prompts.is_some().then_some(shown),
            live: true,
        },
        prompts: listing.prompts,
        compare_prompts: true,
    })
}

/// The `(type, id)` of every entity the policy directory's own `entities.json`
/// defines (none without the file).
fn defined_entities(dir: &Path) -> Result<BTreeSet<(String, String)>, String> {
    let path = dir.join(crate::policy::ENTITIES_FILE);
    if !path.exists() {
        return Ok(BTreeSet::new());
    }
    let text = read(&path)?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("`{}` is not valid JSON: {e}", path.display()))?;
    let Some(items) = json.as_array() else {
        return Err(format!(
            "`{}` is not a JSON array of entities",
            path.display()
        ));
    };
    Ok(items
        .iter()
        .filter_map(|item| {
            let uid = item.get("uid")?;
            let uid = uid.get("__entity").unwrap_or(uid);
            Some((
                uid.get("type")?.as_str()?.to_owned(),
                uid.get("id")?.as_str()?.to_owned(),
            ))
        })
        .collect())
}

/// Which of the server's tool and prompt entities `defined` holds, as Cedar writes them.
fn defined_of_server(
    server: &str,
    tools: &[ToolDef],
    prompts: &[PromptDef],
    defined: &BTreeSet<(String, String)>,
) -> Vec<String> {
    let named = tools
        .iter()
        .map(|t| ("Mcp::Tool", &t.name))
        .chain(prompts.iter().map(|p| ("Mcp::Prompt", &p.name)));
    named
        .filter_map(|(ty, name)| {
            let id = format!("{server}/{name}");
            defined
                .contains(&(ty.to_owned(), id.clone()))
                .then(|| format!("{ty}::{}", serde_json::Value::String(id)))
        })
        .collect()
}

/// Cedar accepts the fragment with the base schema, and the entities against both.
fn accepted_by_cedar(base: &str, fragment: &str, entities: &str) -> Result<(), String> {
    use cedar_policy::{Entities, Schema, SchemaFragment};
    let internal = |what: &str, e: &dyn std::fmt::Display| {
        format!("the generated {what} is not accepted by Cedar: {e}")
    };
    let base = SchemaFragment::from_cedarschema_str(base)
        .map_err(|e| internal("base schema", &e))?
        .0;
    let generated = SchemaFragment::from_cedarschema_str(fragment)
        .map_err(|e| internal("schema", &e))?
        .0;
    let schema =
        Schema::from_schema_fragments([base, generated]).map_err(|e| internal("schema", &e))?;
    Entities::from_json_str(entities, Some(&schema)).map_err(|e| internal("entities", &e))?;
    Ok(())
}

fn paths(args: &ImportArgs) -> (PathBuf, PathBuf) {
    let dir = args.policies.join(TOOLS_DIR);
    (
        dir.join(format!("{}.cedarschema", args.server)),
        dir.join(format!("{}.entities.json", args.server)),
    )
}

/// Write `text` to `path` unless it already holds it (through a temporary file renamed
/// over it, so a watching service never reads half a file). Whether it was written.
fn write_if_changed(path: &Path, text: &str) -> Result<bool, String> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("generated");
    // A hidden name: the policy directory's loader skips it while it exists.
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("cannot write `{}`: {e}", path.display())
        })?;
    Ok(true)
}

/// The policy directory as it would be with `imported`'s files: whether it loads
/// (its policies validate against the new fragment), else its problems.
fn loads_with(args: &ImportArgs, imported: &Imported) -> Result<(), String> {
    let mut sources = crate::policy::read_sources(&args.policies).map_err(|p| p.to_string())?;
    let server = &args.server;
    let put = |files: &mut Vec<(String, String)>, rel: String, text: &str| {
        files.retain(|(r, _)| *r != rel);
        files.push((rel, text.to_owned()));
        files.sort();
    };
    put(
        &mut sources.fragments,
        format!("{TOOLS_DIR}/{server}.cedarschema"),
        &imported.schema,
    );
    put(
        &mut sources.entity_fragments,
        format!(
            "{TOOLS_DIR}/{server}{}",
            crate::policy::ENTITIES_FRAGMENT_SUFFIX
        ),
        &imported.entities,
    );
    crate::policy::build(&sources, 1)
        .map(drop)
        .map_err(|p| p.to_string())
}

fn import(args: &ImportArgs) -> Result<ExitCode, String> {
    let imported = generate(args)?;
    for note in &imported.notes {
        eprintln!("warning: {note}");
    }
    // A fragment that would break the directory's policies is not written: a running
    // service would refuse the reload, and `validate` would fail.
    if let Err(problems) = loads_with(args, &imported) {
        if !args.force {
            return Err(format!(
                "nothing written: with the imported server `{}` the policy directory `{}` does \
                 not load (fix the policies first, or write the files anyway with `--force`):\n{problems}",
                args.server,
                args.policies.display()
            ));
        }
        eprintln!(
            "warning: `--force`: the policy directory `{}` does not load with these files:\n{problems}",
            args.policies.display()
        );
    }
    let (schema_path, entities_path) = paths(args);
    for uid in &imported.kept_out {
        eprintln!(
            "note: `{uid}` is defined in `{}`: left out of `{}` (one entity, one file)",
            args.policies.join(crate::policy::ENTITIES_FILE).display(),
            entities_path.display()
        );
    }
    let dir = args.policies.join(TOOLS_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    for (path, text) in [
        (&schema_path, &imported.schema),
        (&entities_path, &imported.entities),
    ] {
        let verb = if write_if_changed(path, text)? {
            "wrote"
        } else {
            "unchanged"
        };
        println!("{verb}: `{}`", path.display());
    }
    println!(
        "ok: server `{}`: {} tools, {} prompts, {} not typed",
        args.server,
        imported.declared.tools.len(),
        imported.declared.prompts.len(),
        imported.notes.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn check(args: &ImportArgs) -> Result<ExitCode, String> {
    let current = generate(args)?;
    // An argument that became untypable shows as removed below: say why.
    for note in &current.notes {
        eprintln!("warning: {note}");
    }
    let (schema_path, entities_path) = paths(args);
    let text = std::fs::read_to_string(&schema_path).map_err(|e| {
        format!(
            "cannot read `{}` (was server `{}` imported?): {e}",
            schema_path.display(),
            args.server
        )
    })?;
    let imported = import::read_fragment(&args.server, &text)
        .map_err(|e| format!("`{}`: {e}", schema_path.display()))?;
    let mut changes = import::drift(&imported, &current.declared, current.compare_prompts);
    changes.extend(
        import::stale_actions(&args.server, &text, &current.base)
            .map_err(|e| format!("`{}`: {e}", schema_path.display()))?,
    );
    // The tool annotations the entities carry (when the base schema declares them).
    if let Ok(entities) = std::fs::read_to_string(&entities_path) {
        changes.extend(
            import::entity_drift(&args.server, &entities, &current.entities)
                .map_err(|e| format!("`{}`: {e}", entities_path.display()))?,
        );
    }
    if changes.is_empty() {
        println!(
            "ok: server `{}` lists what `{}` declares",
            args.server,
            schema_path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    for change in &changes {
        println!("{change}");
    }
    println!(
        "drift: server `{}` differs from `{}` in {} place{}: re-run `mcp-authz schema import`",
        args.server,
        schema_path.display(),
        changes.len(),
        if changes.len() == 1 { "" } else { "s" }
    );
    Ok(ExitCode::from(EXIT_DENY))
}
