//! `kvctl ls [PREFIX]`: every page of a listing, all at the first page's
//! revision (the server's cursor carries it).

use std::num::NonZeroU64;

use kv_store_client::types::{Listed, Listing};

use super::Ctx;
use super::get::show;
use crate::cli::Output;
use crate::connect::Patience;
use crate::failure::Failure;
use crate::output;

pub async fn run(
    ctx: &Ctx,
    prefix: Option<&str>,
    keys_only: bool,
    page_size: u64,
) -> Result<(), Failure> {
    let mut rows = Vec::new();
    each_page(ctx, prefix, keys_only, page_size, |page| {
        for item in page.items {
            match ctx.output {
                Output::Simple if keys_only => output::line(&item.key)?,
                Output::Simple => {
                    output::line(&format!("{}\t{}", item.key, item.value.unwrap_or_default()))?
                }
                Output::Json => output::json(&item)?,
                Output::Table => rows.push(row(item, keys_only)),
            }
        }
        Ok(())
    })
    .await?;
    if ctx.output == Output::Table {
        let header: &[&str] = if keys_only {
            &["KEY", "REVISION", "VERSION", "LEASE", "TTL"]
        } else {
            &["KEY", "VALUE", "REVISION", "VERSION", "LEASE", "TTL"]
        };
        output::table(header, &rows)?;
    }
    Ok(())
}

fn row(item: Listed, keys_only: bool) -> Vec<String> {
    let mut row = vec![item.key];
    if !keys_only {
        row.push(item.value.unwrap_or_default());
    }
    row.extend([
        item.revision.to_string(),
        item.version.to_string(),
        item.lease.unwrap_or_default(),
        show(item.ttl),
    ]);
    row
}

/// Hands each page of the listing to `take`, in key order; answers the
/// revision they all show.
pub async fn each_page(
    ctx: &Ctx,
    prefix: Option<&str>,
    keys_only: bool,
    page_size: u64,
    mut take: impl FnMut(Listing) -> Result<(), Failure>,
) -> Result<u64, Failure> {
    let limit = NonZeroU64::new(page_size);
    let mut cursor: Option<String> = None;
    loop {
        let page = ctx
            .endpoints
            .call(Patience::Bounded, async |client| {
                client
                    .list_keys(None, cursor.as_deref(), Some(keys_only), limit, prefix)
                    .await
            })
            .await?
            .into_inner();
        let revision = page.revision;
        cursor = page.next.clone();
        take(page)?;
        if cursor.is_none() {
            return Ok(revision);
        }
    }
}
