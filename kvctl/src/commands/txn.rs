//! `kvctl txn [FILE]`: a transaction given as the API's JSON (`guards`,
//! `then`, `else`). Prints which branch ran and each result.

use kv_store_client::types::TxnRequest;

use super::Ctx;
use crate::cli::Output;
use crate::connect::Patience;
use crate::failure::Failure;
use crate::output;

pub async fn run(ctx: &Ctx, text: &str) -> Result<(), Failure> {
    let request: TxnRequest = serde_json::from_str(text)
        .map_err(|error| Failure::Usage(format!("the transaction is not a TxnRequest: {error}")))?;
    let answer = ctx
        .endpoints
        .call(Patience::Bounded, async |client| {
            client.txn(None, &request).await
        })
        .await?
        .into_inner();
    if ctx.output == Output::Json {
        return output::json(&answer);
    }
    let branch = if answer.succeeded {
        "SUCCESS"
    } else {
        "FAILURE"
    };
    let mut text = format!("{branch} revision {}", answer.revision);
    for result in &answer.results {
        text.push('\n');
        text.push_str(
            &serde_json::to_string(result).map_err(|error| Failure::Local(error.to_string()))?,
        );
    }
    output::line(&text)
}
