//! `kvctl lease grant|revoke|keep-alive|get|list`.

use std::time::Duration;

use kv_store_client::types::{GrantRequest, Lease as LeaseState};
use serde_json::json;
use tokio::time::Instant;

use super::{Ctx, parse};
use crate::cli::{Lease, Output};
use crate::connect::Patience;
use crate::failure::Failure;
use crate::output;

pub async fn run(ctx: &Ctx, command: Lease) -> Result<(), Failure> {
    match command {
        Lease::Grant { ttl, id } => {
            let request = GrantRequest {
                id: id.as_deref().map(|id| parse("lease", id)).transpose()?,
                ttl,
            };
            let lease = ctx
                .endpoints
                .call(Patience::Bounded, async |client| {
                    client.grant_lease(&request).await
                })
                .await?
                .into_inner();
            show(ctx, &lease)
        }
        Lease::Revoke { id } => {
            let id_arg = parse("lease", &id)?;
            let revoked = ctx
                .endpoints
                .call(Patience::Bounded, async |client| {
                    client.revoke_lease(&id_arg).await
                })
                .await?
                .into_inner();
            match ctx.output {
                Output::Json => output::json(&revoked),
                Output::Table => output::table(
                    &["LEASE", "REVISION"],
                    &[vec![id, revoked.revision.to_string()]],
                ),
                Output::Simple => output::line("OK"),
            }
        }
        Lease::KeepAlive { id } => keep_alive(ctx, &id).await,
        Lease::Get { id, keys } => {
            let id = parse("lease", &id)?;
            let lease = ctx
                .endpoints
                .call(Patience::Bounded, async |client| {
                    client.get_lease(&id, Some(keys)).await
                })
                .await?
                .into_inner();
            show(ctx, &lease)
        }
        Lease::List => {
            let mut after: Option<kv_store_client::types::ListLeasesAfter> = None;
            let mut rows = Vec::new();
            loop {
                let page = ctx
                    .endpoints
                    .call(Patience::Bounded, async |client| {
                        client.list_leases(after.as_ref(), None).await
                    })
                    .await?
                    .into_inner();
                for lease in &page.leases {
                    match ctx.output {
                        Output::Json => output::json(lease)?,
                        Output::Simple => output::line(&lease.id)?,
                        Output::Table => rows.push(vec![
                            lease.id.clone(),
                            lease.owner.clone().unwrap_or_default(),
                        ]),
                    }
                }
                match page.next {
                    Some(next) => after = Some(parse("lease", &next)?),
                    None => break,
                }
            }
            if ctx.output == Output::Table {
                output::table(&["LEASE", "OWNER"], &rows)?;
            }
            Ok(())
        }
    }
}

fn show(ctx: &Ctx, lease: &LeaseState) -> Result<(), Failure> {
    match ctx.output {
        Output::Json => output::json(lease),
        Output::Table => output::table(
            &["LEASE", "TTL", "GRANTED TTL", "KEYS"],
            &[vec![
                lease.id.clone(),
                lease.ttl.to_string(),
                lease.granted_ttl.to_string(),
                lease.keys.join(","),
            ]],
        ),
        Output::Simple => {
            let mut text = format!(
                "lease {} ttl {} granted {}",
                lease.id, lease.ttl, lease.granted_ttl
            );
            for key in &lease.keys {
                text.push('\n');
                text.push_str(key);
            }
            output::line(&text)
        }
    }
}

/// Keeps the lease alive until interrupted; exit 3 once it is gone. A
/// renewal that fails is tried again until the lease could run out.
async fn keep_alive(ctx: &Ctx, id: &str) -> Result<(), Failure> {
    let id_arg = parse("lease", id)?;
    let sent = Instant::now();
    let kept = ctx
        .endpoints
        .call(Patience::Bounded, async |client| {
            client.keep_lease_alive(&id_arg).await
        })
        .await?
        .into_inner();
    let show = |ttl: u64| match ctx.output {
        Output::Json => output::json(&json!({"lease": id_arg.as_str(), "ttl": ttl})),
        Output::Simple | Output::Table => {
            output::line(&format!("lease {} kept alive, ttl {ttl}", id_arg.as_str()))
        }
    };
    show(kept.ttl)?;
    let ttl = Duration::from_secs(kept.ttl.max(1));
    tokio::select! {
        stopped = super::keep_alive::keep_alive(ctx, &id_arg, ttl, sent + ttl, show) => Err(stopped),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
