//! The `kv-store` binary: reads the configuration and runs the server.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use kv_store::auth::new_token;
use kv_store::config::{Command, Config, LogFormat, NewToken, Restore, TokenCommand};
use kv_store::{api, backup, server};
use tracing_subscriber::EnvFilter;

/// jemalloc, configured in `.cargo/config.toml` to give freed memory back
/// to the OS within seconds (glibc's malloc kept 900 MB resident after a
/// bulk delete of 600 MB): see the README's "Memory".
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    match &config.command {
        Some(Command::Token(TokenCommand::New(new))) => return new_token(new),
        Some(Command::Restore(restore)) => return restored(restore),
        None => {}
    }
    if config.print_openapi {
        println!("{}", api::spec_json());
        return ExitCode::SUCCESS;
    }
    init_logging(config.log_format);
    match server::run(&config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err @ server::StartError::DataDir(_)) => {
            tracing::error!(error = %err, "cannot use the data dir");
            ExitCode::from(2)
        }
        Err(err @ (server::StartError::Config(_) | server::StartError::Etcd(_))) => {
            tracing::error!(error = %err, "cannot start the server");
            ExitCode::from(2)
        }
        Err(err) => {
            tracing::error!(listen = %config.listen, error = %err, "cannot start the server");
            ExitCode::FAILURE
        }
    }
}

/// `kv-store token new`: the token on the first line (for scripts), then
/// the block for the auth file.
fn new_token(new: &NewToken) -> ExitCode {
    let token = match new_token::generate() {
        Ok(token) => token,
        Err(err) => {
            eprintln!("error: the system gave no random bytes: {err}");
            return ExitCode::FAILURE;
        }
    };
    let printed = format!(
        "{token}\n\n# The token above is shown once; only its hash is kept. Add this to the\n# \
         auth file, then send the server SIGHUP:\n{}",
        new_token::block(&token, &new.name, &new.read, &new.write, new.admin)
    );
    // Written, not printed: `| head -1` closes the pipe early, and that is
    // no reason to panic.
    match std::io::stdout().lock().write_all(printed.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: cannot write the token: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `kv-store restore`: what it built, or why not (exit code 2: the file
/// or the data dir is not fit).
fn restored(restore: &Restore) -> ExitCode {
    match backup::restore(&restore.from, &restore.data_dir) {
        Ok(done) => {
            println!(
                "restored {} keys and {} leases at revision {} into {}",
                done.keys,
                done.leases,
                done.revision,
                restore.data_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only for a person at a terminal, never into a file or a pipe.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
