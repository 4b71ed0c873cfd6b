//! `kvctl status`: the server's state and counters.

use super::Ctx;
use crate::cli::Output;
use crate::connect::Patience;
use crate::failure::Failure;
use crate::output;

pub async fn run(ctx: &Ctx) -> Result<(), Failure> {
    let status = ctx
        .endpoints
        .call(Patience::Bounded, async |client| client.status().await)
        .await?
        .into_inner();
    if ctx.output == Output::Json {
        return output::json(&status);
    }
    let fields =
        serde_json::to_value(&status).map_err(|error| Failure::Local(error.to_string()))?;
    let rows: Vec<Vec<String>> = fields
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, value)| {
            let value = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            vec![name.clone(), value]
        })
        .collect();
    match ctx.output {
        Output::Table => output::table(&["FIELD", "VALUE"], &rows),
        _ => {
            let text: String = rows
                .iter()
                .map(|row| format!("{}: {}\n", row[0], row[1]))
                .collect();
            output::raw(text.as_bytes())
        }
    }
}
