//! `kvctl import [FILE]`: the keys of an export, written in atomic batches.
//! The whole file is checked first (its first and last lines, and that the
//! last line's counts match), so a file cut short writes nothing. Leases
//! are granted anew with the time they had left, and their keys put on
//! the new ones; a key whose lease had ended by the export is left out.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::path::Path;

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
    let text = read_input(file).await?;
    let (keys, leases) = check(&text)?;
    let mut granted = HashMap::new();
    for lease in &leases {
        let request = GrantRequest {
            id: None,
            ttl: NonZeroU64::new(lease.ttl).unwrap_or(NonZeroU64::MIN),
        };
        let new = ctx
            .endpoints
            .call(Patience::Bounded, async |client| {
                client.grant_lease(&request).await
            })
            .await?
            .into_inner();
        granted.insert(lease.lease.as_str(), new.id);
    }
    let progress =
        ProgressBar::with_draw_target(Some(keys.len() as u64), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} keys {per_sec} {eta}") {
        progress.set_style(style);
    }
    let mut written = 0u64;
    let mut skipped = 0u64;
    let mut batch = Vec::new();
    let size = usize::try_from(batch_size).unwrap_or(usize::MAX);
    for key in &keys {
        let lease = match &key.lease {
            Some(old) => match granted.get(old.as_str()) {
                Some(new) => Some(parse("lease", new)?),
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
            value: Some(key.value.clone()),
            ttl: key.ttl.and_then(NonZeroU64::new),
            lease,
            expected: None,
        });
        if batch.len() == size {
            written += send(ctx, &mut batch, written).await?;
            progress.set_position(written + skipped);
        }
    }
    written += send(ctx, &mut batch, written).await?;
    progress.finish_and_clear();
    let leases = granted.len();
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

/// The export's keys and leases, once the whole file has been found sound.
fn check(text: &str) -> Result<(Vec<KeyLine>, Vec<LeaseLine>), Failure> {
    let bad = |why: String| Failure::Local(format!("not an export kvctl can import: {why}"));
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty());
    let header: Header = match lines.next() {
        Some((_, line)) => serde_json::from_str(line)
            .map_err(|error| bad(format!("line 1 is not an export's header: {error}")))?,
        None => return Err(bad("the file is empty".to_owned())),
    };
    if header.kv_store_export != VERSION {
        return Err(bad(format!(
            "it is of version {}, this kvctl reads {VERSION}",
            header.kv_store_export
        )));
    }
    let mut keys = Vec::new();
    let mut leases = Vec::new();
    let mut end: Option<End> = None;
    for (at, line) in lines {
        if end.is_some() {
            return Err(bad(format!("line {} follows the last line", at + 1)));
        }
        if let Ok(last) = serde_json::from_str::<End>(line) {
            end = Some(last);
            continue;
        }
        match serde_json::from_str(line)
            .map_err(|error| bad(format!("line {}: {error}", at + 1)))?
        {
            Line::Key(key) => keys.push(key),
            Line::Lease(lease) => leases.push(lease),
        }
    }
    let end = end.ok_or_else(|| bad("it was cut short (no last line)".to_owned()))?;
    if !end.end || end.keys != keys.len() as u64 || end.leases != leases.len() as u64 {
        return Err(bad(format!(
            "its last line counts {} keys and {} leases, the file holds {} and {}",
            end.keys,
            end.leases,
            keys.len(),
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
