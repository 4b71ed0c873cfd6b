//! One file per command. Each takes the endpoints and the output format
//! and answers with the process's exit code, or a failure.

mod del;
mod export;
mod get;
mod import;
mod keep_alive;
mod lease;
mod lock;
mod ls;
mod put;
mod snapshot;
mod status;
mod txn;
mod watch;

use std::path::Path;
use std::process::ExitCode;
use std::str::FromStr;

use tokio::io::AsyncReadExt;

use crate::cli::{Cli, Command, Output};
use crate::connect::Endpoints;
use crate::failure::Failure;

/// What every command works with.
pub struct Ctx {
    pub endpoints: Endpoints,
    pub output: Output,
}

pub async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    let ctx = Ctx {
        endpoints: Endpoints::new(&cli.connection)?,
        output: cli.output,
    };
    match cli.command {
        Command::Get { key } => get::run(&ctx, &key).await?,
        Command::Put {
            key,
            value,
            file,
            ttl,
            lease,
            if_match,
            if_absent,
            fence,
        } => {
            let value = match (value, file) {
                (Some(value), _) => value,
                (None, file) => read_input(file.as_deref()).await?,
            };
            let condition = match (if_match, if_absent) {
                (Some(revision), _) => put::Condition::At(revision),
                (None, true) => put::Condition::Absent,
                (None, false) => put::Condition::None,
            };
            let lifetime = put::Lifetime { ttl, lease };
            put::run(&ctx, &key, value, lifetime, condition, fence.as_deref()).await?
        }
        Command::Del {
            key,
            prefix,
            if_match,
            fence,
        } => del::run(&ctx, &key, prefix, if_match, fence.as_deref()).await?,
        Command::Ls {
            prefix,
            keys_only,
            page_size,
        } => ls::run(&ctx, prefix.as_deref(), keys_only, page_size).await?,
        Command::Watch {
            keys,
            prefix,
            since,
            snapshot,
            count,
            exec,
        } => {
            let watch = watch::Watch {
                keys,
                prefixes: prefix,
                since,
                snapshot,
                count,
                exec,
            };
            watch::run(&ctx, watch).await?
        }
        Command::Status => status::run(&ctx).await?,
        Command::Snapshot(crate::cli::Snapshot::Save { file }) => {
            snapshot::save(&ctx, &file).await?
        }
        Command::Export {
            prefix,
            file,
            page_size,
        } => export::run(&ctx, prefix.as_deref(), file.as_deref(), page_size).await?,
        Command::Import { file, batch_size } => {
            import::run(&ctx, file.as_deref(), batch_size).await?
        }
        Command::Lease(command) => lease::run(&ctx, command).await?,
        Command::Txn { file } => txn::run(&ctx, &read_input(file.as_deref()).await?).await?,
        Command::Lock {
            name,
            ttl,
            wait,
            command,
        } => return lock::run(&ctx, &name, ttl, wait, &command).await,
    }
    Ok(ExitCode::SUCCESS)
}

/// A file's text, or standard input's when there is no file or it is `-`.
async fn read_input(file: Option<&Path>) -> Result<String, Failure> {
    match file {
        Some(path) if path != Path::new("-") => tokio::fs::read_to_string(path)
            .await
            .map_err(|error| Failure::Local(format!("{}: {error}", path.display()))),
        _ => {
            let mut text = String::new();
            tokio::io::stdin()
                .read_to_string(&mut text)
                .await
                .map_err(|error| Failure::Local(format!("standard input: {error}")))?;
            Ok(text)
        }
    }
}

/// An argument as one of the generated client's checked types (a key, a
/// lease id), or a usage failure naming it.
fn parse<T: FromStr>(what: &str, text: &str) -> Result<T, Failure>
where
    T::Err: std::fmt::Display,
{
    text.parse()
        .map_err(|error| Failure::Usage(format!("{what} {text:?}: {error}")))
}

/// `If-Match` for a revision: its entity tag, quoted as the server's ETag.
fn if_match<T: FromStr>(revision: u64) -> Result<T, Failure>
where
    T::Err: std::fmt::Display,
{
    parse("revision", &format!("\"{revision}\""))
}
