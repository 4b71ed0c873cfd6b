//! `kvctl export [PREFIX]`: every key under a prefix at one revision, as
//! JSON lines `kvctl import` reads back:
//!
//! ```text
//! {"kv_store_export":1,"prefix":"app/","revision":R}
//! {"key":"app/a","value":"1"}                          a line a key, with
//! {"key":"app/b","value":"2","ttl":30}                 its TTL left or its
//! {"key":"app/c","value":"3","lease":"00000000000000c1"}   lease
//! {"lease":"00000000000000c1","ttl":25,"granted_ttl":30}   a line a lease
//! {"end":true,"keys":3,"leases":1}
//! ```
//!
//! The last line tells a whole export from one cut short.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Ctx, parse};
use crate::cli::Output;
use crate::connect::Patience;
use crate::failure::Failure;
use crate::output;

/// The format's version, in the first line.
pub const VERSION: u64 = 1;

#[derive(Serialize, Deserialize)]
pub struct Header {
    pub kv_store_export: u64,
    pub prefix: String,
    pub revision: u64,
}

#[derive(Serialize, Deserialize)]
pub struct KeyLine {
    pub key: String,
    pub value: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ttl: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lease: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub struct LeaseLine {
    pub lease: String,
    pub ttl: u64,
    pub granted_ttl: u64,
}

#[derive(Serialize, Deserialize)]
pub struct End {
    pub end: bool,
    pub keys: u64,
    pub leases: u64,
}

pub async fn run(
    ctx: &Ctx,
    prefix: Option<&str>,
    file: Option<&Path>,
    page_size: u64,
) -> Result<(), Failure> {
    let local = |error: std::io::Error| Failure::Local(format!("writing the export: {error}"));
    // A file is written beside its name and takes it only once whole, so
    // an export that fails leaves an older one as it was.
    let partial = file.map(|path| {
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        std::path::PathBuf::from(partial)
    });
    let mut out: Box<dyn Write> = match &partial {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .map_err(|error| Failure::Local(format!("{}: {error}", path.display())))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut keys = 0u64;
    let mut leases = BTreeSet::new();
    let mut header_written = false;
    let revision = super::ls::each_page(ctx, prefix, false, page_size, |page| {
        if !header_written {
            emit(
                &mut out,
                &Header {
                    kv_store_export: VERSION,
                    prefix: prefix.unwrap_or_default().to_owned(),
                    revision: page.revision,
                },
            )?;
            header_written = true;
        }
        for item in page.items {
            if let Some(lease) = &item.lease {
                leases.insert(lease.clone());
            }
            emit(
                &mut out,
                &KeyLine {
                    key: item.key,
                    value: item.value.unwrap_or_default(),
                    ttl: item.ttl,
                    lease: item.lease,
                },
            )?;
            keys += 1;
        }
        Ok(())
    })
    .await?;
    let mut kept = 0;
    for lease in &leases {
        let id = parse("lease", lease)?;
        let found = ctx
            .endpoints
            .call(Patience::Bounded, async |client| {
                client.get_lease(&id, None).await
            })
            .await;
        match found {
            Ok(found) => {
                let found = found.into_inner();
                emit(
                    &mut out,
                    &LeaseLine {
                        lease: lease.clone(),
                        ttl: found.ttl,
                        granted_ttl: found.granted_ttl,
                    },
                )?;
                kept += 1;
            }
            // It ended after the listing: its keys are gone too, and an
            // import leaves them out.
            Err(Failure::Refused { status: 404, .. }) => {}
            Err(failure) => return Err(failure),
        }
    }
    emit(
        &mut out,
        &End {
            end: true,
            keys,
            leases: kept,
        },
    )?;
    out.flush().map_err(local)?;
    drop(out);
    let (Some(path), Some(partial)) = (file, partial) else {
        return Ok(());
    };
    std::fs::rename(&partial, path)
        .map_err(|error| Failure::Local(format!("{}: {error}", path.display())))?;
    let name = path.display().to_string();
    match ctx.output {
        Output::Json => {
            output::json(&json!({"file": name, "revision": revision, "keys": keys, "leases": kept}))
        }
        Output::Table => output::table(
            &["FILE", "REVISION", "KEYS", "LEASES"],
            &[vec![
                name,
                revision.to_string(),
                keys.to_string(),
                kept.to_string(),
            ]],
        ),
        Output::Simple => output::line(&format!(
            "exported {keys} keys and {kept} leases at revision {revision} to {name}"
        )),
    }
}

/// One line of the export.
fn emit(out: &mut dyn Write, line: &impl Serialize) -> Result<(), Failure> {
    let mut bytes = serde_json::to_vec(line).map_err(|error| Failure::Local(error.to_string()))?;
    bytes.push(b'\n');
    out.write_all(&bytes)
        .map_err(|error| Failure::Local(format!("writing the export: {error}")))
}
