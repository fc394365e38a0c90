//! The `mcp-authz` command.

fn main() -> std::process::ExitCode {
    mcp_authz::cli::main()
}
