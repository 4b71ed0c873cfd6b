//! `kvctl`: a command-line client for kv-store, over the client generated
//! from the server's OpenAPI spec (`clients/rust`), so every request it
//! sends is one the spec declares.
//!
//! One file per command under `commands/`; `connect.rs` holds the
//! endpoints and their failover, `failure.rs` what can go wrong and the
//! exit code each kind gets, `output.rs` the three output formats.

mod cli;
mod commands;
mod connect;
mod failure;
mod output;
mod sse;

use std::process::ExitCode;

use clap::Parser;

use cli::Cli;
use failure::Failure;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // reqwest's TLS takes the process's crypto provider: ring, as the
    // server's. Installing fails only if one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return report(&Failure::Local(format!("cannot start: {error}"))),
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(failure) => report(&failure),
    }
}

fn report(failure: &Failure) -> ExitCode {
    if !matches!(failure, Failure::OutputClosed) {
        eprintln!("kvctl: {failure}");
    }
    ExitCode::from(failure.exit_code())
}
