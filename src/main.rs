//! The `starling` command: parse, set up logging, hand over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = starling::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
                // warp logs every client that hangs up mid-request as an error.
                .add_directive("warp::server=off".parse().expect("static directive")),
        )
        .with_writer(std::io::stderr)
        .init();
    starling::cli::main(cli)
}
