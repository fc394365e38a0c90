//! The `mcp-authz` command.

/// mimalloc: a decision allocates and frees many small values on every worker
/// thread; glibc's allocator spent about a sixth of the server's time on them
/// under load (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    mcp_authz::cli::main()
}
