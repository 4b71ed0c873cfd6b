//! `kvctl put KEY [VALUE]`: a write, maybe conditional, maybe expiring.

use std::num::NonZeroU64;

use serde_json::json;

use super::get::show;
use super::{Ctx, parse};
use crate::cli::Output;
use crate::connect::{Patience, etag_revision};
use crate::failure::Failure;
use crate::output;

/// What must hold for the write to apply.
pub enum Condition {
    None,
    /// The key is at this revision (`If-Match`).
    At(u64),
    /// The key does not exist (`If-None-Match: *`).
    Absent,
}

/// How long the key lives: a TTL, a lease, or for good.
pub struct Lifetime {
    pub ttl: Option<NonZeroU64>,
    pub lease: Option<String>,
}

pub async fn run(
    ctx: &Ctx,
    key: &str,
    value: String,
    lifetime: Lifetime,
    condition: Condition,
    fence: Option<&str>,
) -> Result<(), Failure> {
    let key_arg = parse("key", key)?;
    let (ttl, lease) = (lifetime.ttl, lifetime.lease);
    let lease = lease.map(|lease| parse("lease", &lease)).transpose()?;
    let fence = fence.map(|fence| parse("fence", fence)).transpose()?;
    let if_match = match condition {
        Condition::At(revision) => Some(super::if_match(revision)?),
        _ => None,
    };
    let if_none_match = match condition {
        Condition::Absent => Some(parse("condition", "*")?),
        _ => None,
    };
    let answer = ctx
        .endpoints
        .call(Patience::Bounded, async |client| {
            client
                .put_key(
                    &key_arg,
                    lease.as_ref(),
                    ttl,
                    fence.as_ref(),
                    if_match.as_ref(),
                    if_none_match.as_ref(),
                    value.clone(),
                )
                .await
        })
        .await?;
    let revision = etag_revision(answer.headers());
    let created = answer.status() == reqwest::StatusCode::CREATED;
    match ctx.output {
        Output::Simple => output::line("OK"),
        Output::Json => {
            output::json(&json!({"key": key, "revision": revision, "created": created}))
        }
        Output::Table => output::table(
            &["KEY", "REVISION", "CREATED"],
            &[vec![key.to_owned(), show(revision), created.to_string()]],
        ),
    }
}
