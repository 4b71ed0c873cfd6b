//! `kvctl get KEY`: the value as it is (simple), or with its revision.

use serde_json::json;

use super::{Ctx, parse};
use crate::cli::Output;
use crate::connect::{Patience, etag_revision, read_all};
use crate::failure::Failure;
use crate::output;

pub async fn run(ctx: &Ctx, key: &str) -> Result<(), Failure> {
    let key_arg = parse("key", key)?;
    let answer = ctx
        .endpoints
        .call(Patience::Bounded, async |client| {
            client.get_key(&key_arg, None, None).await
        })
        .await?;
    let revision = etag_revision(answer.headers());
    let value = read_all(answer.into_inner()).await?;
    let value = String::from_utf8_lossy(&value);
    match ctx.output {
        // The value as stored, ending in a line break (one is added if it
        // has none).
        Output::Simple if value.ends_with('\n') => output::raw(value.as_bytes()),
        Output::Simple => output::line(&value),
        Output::Json => output::json(&json!({"key": key, "value": value, "revision": revision})),
        Output::Table => output::table(
            &["KEY", "VALUE", "REVISION"],
            &[vec![key.to_owned(), value.into_owned(), show(revision)]],
        ),
    }
}

/// A number, or nothing when there is none.
pub fn show(number: Option<u64>) -> String {
    number.map(|number| number.to_string()).unwrap_or_default()
}
