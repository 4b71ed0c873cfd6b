//! `kvctl del KEY` (exit 3 if there is no such key) and `kvctl del --prefix P`.

use serde_json::json;

use super::{Ctx, parse};
use crate::cli::Output;
use crate::connect::Patience;
use crate::failure::Failure;
use crate::output;

pub async fn run(
    ctx: &Ctx,
    key: &str,
    prefix: bool,
    if_match: Option<u64>,
    fence: Option<&str>,
) -> Result<(), Failure> {
    let (deleted, revision) = if prefix {
        let fence = fence.map(|fence| parse("fence", fence)).transpose()?;
        let prefix_arg = parse("prefix", key)?;
        let answer = ctx
            .endpoints
            .call(Patience::Bounded, async |client| {
                client.delete_prefix(&prefix_arg, fence.as_ref()).await
            })
            .await?
            .into_inner();
        (answer.deleted, Some(answer.revision))
    } else {
        let key_arg = parse("key", key)?;
        let fence = fence.map(|fence| parse("fence", fence)).transpose()?;
        let if_match = if_match.map(super::if_match).transpose()?;
        let answer = ctx
            .endpoints
            .call(Patience::Bounded, async |client| {
                client
                    .delete_key(&key_arg, fence.as_ref(), if_match.as_ref())
                    .await
            })
            .await?;
        (1, crate::connect::etag_revision(answer.headers()))
    };
    match ctx.output {
        Output::Simple => output::line(&deleted.to_string()),
        Output::Json => output::json(&json!({"deleted": deleted, "revision": revision})),
        Output::Table => output::table(
            &["DELETED", "REVISION"],
            &[vec![deleted.to_string(), super::get::show(revision)]],
        ),
    }
}
