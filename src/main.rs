//! The `starling` command: parse, set up logging, hand over to the library.

#![forbid(unsafe_code)]

use clap::Parser;

/// jemalloc, with background threads that return freed memory to the OS (see Cargo.toml).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    // Without background threads jemalloc purges only while the process allocates, so an idle
    // node would keep what a flood used.
    let background = tikv_jemalloc_ctl::background_thread::write(true);
    let cli = starling::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
                // warp logs every client that hangs up mid-request as an error.
                .add_directive("warp::server=off".parse().expect("static directive"))
                // openraft warns about every stale message after an election, which is normal;
                // leadership changes are logged by the replication layer.
                .add_directive("openraft=error".parse().expect("static directive")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = background {
        tracing::warn!(error = %e, "jemalloc background purging is off: memory freed after a load peak may not return to the OS");
    }
    starling::cli::main(cli)
}
