//! `kvctl import [FILE]`: the keys of an export, written in atomic batches.
//! The whole file is checked first (its first and last lines, and that the
//! last line's counts match), so a file cut short writes nothing. Leases
//! are granted anew with the time they had left (under their old ids where
//! those are free) and kept alive while the import runs, and their keys
//! put on them; a key whose lease had ended by the export is left out.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kv_store_client::types::{BatchOp, GrantRequest, Method};
use serde::Deserialize;
use serde_json::json;

use super::export::{End, Header, KeyLine, LeaseLine, VERSION};
use super::{Ctx, parse, read_input};
use crate::cli::Output;
use crate::connect::Patience;
use crate::failure::Failure;
use crate::output;

#[derive(Deserialize)]
#[serde(untagged)]
enum Line {
    Key(KeyLine),
    Lease(LeaseLine),
}

pub async fn run(ctx: &Ctx, file: Option<&Path>, batch_size: u64) -> Result<(), Failure> {
    // A file is read twice (checked whole, then written) and never held;
    // standard input, which cannot be read twice, is held in memory.
    let input = match file {
        Some(path) if path != Path::new("-") => Input::File(path.to_owned()),
        _ => Input::Text(read_input(None).await?),
    };
    let (keys, leases) = check(input.lines()?)?;
    let mut leases = grant(ctx, &leases).await?;
    let progress = ProgressBar::with_draw_target(Some(keys), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} keys {per_sec} {eta}") {
        progress.set_style(style);
    }
    let mut written = 0u64;
    let mut skipped = 0u64;
    let mut batch = Vec::new();
    let size = usize::try_from(batch_size).unwrap_or(usize::MAX);
    for line in input.lines()? {
        let line = line?;
        let Ok(Line::Key(key)) = serde_json::from_str::<Line>(&line) else {
            continue;
        };
        let lease = match &key.lease {
            Some(old) => match leases.get(old.as_str()) {
                Some(lease) => Some(parse("lease", &lease.id)?),
                None => {
                    skipped += 1;
                    continue;
                }
            },
            None => None,
        };
        batch.push(BatchOp {
            method: Method::Put,
            key: parse("key", &key.key)?,
            value: Some(key.value),
            ttl: key.ttl.and_then(NonZeroU64::new),
            lease,
            expected: None,
        });
        if batch.len() == size {
            written += send(ctx, &mut batch, written).await?;
            progress.set_position(written + skipped);
            keep_alive(ctx, &mut leases).await?;
        }
    }
    written += send(ctx, &mut batch, written).await?;
    progress.finish_and_clear();
    let leases = leases.len();
    match ctx.output {
        Output::Json => {
            output::json(&json!({"keys": written, "leases": leases, "skipped": skipped}))
        }
        Output::Table => output::table(
            &["KEYS", "LEASES", "SKIPPED"],
            &[vec![
                written.to_string(),
                leases.to_string(),
                skipped.to_string(),
            ]],
        ),
        Output::Simple => output::line(&format!(
            "imported {written} keys and {leases} leases ({skipped} keys skipped: their lease had ended)"
        )),
    }
}

/// Where the export comes from.
enum Input {
    File(PathBuf),
    Text(String),
}

impl Input {
    fn lines(&self) -> Result<Box<dyn Iterator<Item = Result<String, Failure>> + '_>, Failure> {
        match self {
            Input::File(path) => {
                let file = std::fs::File::open(path)
                    .map_err(|error| Failure::Local(format!("{}: {error}", path.display())))?;
                Ok(Box::new(BufReader::new(file).lines().map(move |line| {
                    line.map_err(|error| Failure::Local(format!("{}: {error}", path.display())))
                })))
            }
            Input::Text(text) => Ok(Box::new(text.lines().map(|line| Ok(line.to_owned())))),
        }
    }
}

/// A lease of the export as granted here: its id, its TTL, and when it
/// was last renewed.
struct Granted {
    id: String,
    ttl: Duration,
    renewed: Instant,
}

/// Grants each lease with the time it had left, under its old id when
/// that is free here.
async fn grant(ctx: &Ctx, leases: &[LeaseLine]) -> Result<HashMap<String, Granted>, Failure> {
    let mut granted = HashMap::new();
    for lease in leases {
        let ttl = NonZeroU64::new(lease.ttl).unwrap_or(NonZeroU64::MIN);
        let same = GrantRequest {
            id: Some(parse("lease", &lease.lease)?),
            ttl,
        };
        let renewed = Instant::now();
        let answer = ctx
            .endpoints
            .call(Patience::Bounded, async |client| {
                client.grant_lease(&same).await
            })
            .await;
        let new = match answer {
            Ok(new) => new,
            Err(Failure::Refused { status: 409, .. }) => {
                let any = GrantRequest { id: None, ttl };
                ctx.endpoints
                    .call(Patience::Bounded, async |client| {
                        client.grant_lease(&any).await
                    })
                    .await?
            }
            Err(failure) => return Err(failure),
        };
        let id = new.into_inner().id;
        let ttl = Duration::from_secs(ttl.get());
        granted.insert(lease.lease.clone(), Granted { id, ttl, renewed });
    }
    Ok(granted)
}

/// Keeps alive the leases a third of whose TTL has passed, so that none
/// runs out while its keys are still being written.
async fn keep_alive(ctx: &Ctx, leases: &mut HashMap<String, Granted>) -> Result<(), Failure> {
    for lease in leases.values_mut() {
        if lease.renewed.elapsed() < lease.ttl / 3 {
            continue;
        }
        let id = parse("lease", &lease.id)?;
        lease.renewed = Instant::now();
        ctx.endpoints
            .call(Patience::Bounded, async |client| {
                client.keep_lease_alive(&id).await
            })
            .await?;
    }
    Ok(())
}

/// How many keys the export holds, and its leases, once the whole of it
/// has been found sound.
fn check(
    mut lines: impl Iterator<Item = Result<String, Failure>>,
) -> Result<(u64, Vec<LeaseLine>), Failure> {
    let bad = |why: String| Failure::Local(format!("not an export kvctl can import: {why}"));
    let header: Header = match lines.next().transpose()? {
        Some(line) => serde_json::from_str(&line)
            .map_err(|error| bad(format!("line 1 is not an export's header: {error}")))?,
        None => return Err(bad("the file is empty".to_owned())),
    };
    if header.kv_store_export != VERSION {
        return Err(bad(format!(
            "it is of version {}, this kvctl reads {VERSION}",
            header.kv_store_export
        )));
    }
    let mut keys = 0u64;
    let mut leases = Vec::new();
    let mut end: Option<End> = None;
    for (at, line) in lines.enumerate() {
        let (at, line) = (at + 2, line?);
        if line.trim().is_empty() {
            continue;
        }
        if end.is_some() {
            return Err(bad(format!("line {at} follows the last line")));
        }
        if let Ok(last) = serde_json::from_str::<End>(&line) {
            end = Some(last);
            continue;
        }
        match serde_json::from_str(&line).map_err(|error| bad(format!("line {at}: {error}")))? {
            Line::Key(_) => keys += 1,
            Line::Lease(lease) => leases.push(lease),
        }
    }
    let end = end.ok_or_else(|| bad("it was cut short (no last line)".to_owned()))?;
    if !end.end || end.keys != keys || end.leases != leases.len() as u64 {
        return Err(bad(format!(
            "its last line counts {} keys and {} leases, the file holds {keys} and {}",
            end.keys,
            end.leases,
            leases.len()
        )));
    }
    Ok((keys, leases))
}

/// Writes one batch; answers how many keys it held.
async fn send(ctx: &Ctx, batch: &mut Vec<BatchOp>, before: u64) -> Result<u64, Failure> {
    if batch.is_empty() {
        return Ok(0);
    }
    let sent = ctx
        .endpoints
        .call(Patience::Bounded, async |client| {
            client.batch(None, batch).await
        })
        .await;
    if let Err(failure) = sent {
        eprintln!("kvctl: {before} keys were imported before this batch failed");
        return Err(failure);
    }
    let sent = batch.len() as u64;
    batch.clear();
    Ok(sent)
}
