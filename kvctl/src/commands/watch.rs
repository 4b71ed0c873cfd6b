//! `kvctl watch`: changes to keys and prefixes as they happen. After a
//! disconnect it reconnects (to the next endpoint if need be) with the
//! last event's id, so the server replays what was missed: nothing is lost
//! or printed twice.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::StreamExt;
use kv_store_client::types::{WatchBody, WatchSet};
use serde_json::{Map, Value};

use super::Ctx;
use crate::cli::Output;
use crate::connect::Patience;
use crate::failure::{Failure, chain};
use crate::output;
use crate::sse::{Event, Parser};

pub struct Watch {
    pub keys: Vec<String>,
    pub prefixes: Vec<String>,
    pub since: Option<u64>,
    pub snapshot: bool,
    pub count: Option<u64>,
    pub exec: Vec<String>,
}

/// Where the next connection starts.
enum From {
    /// A snapshot of the keys, then the changes after it.
    Snapshot,
    /// The changes after this revision.
    Revision(u64),
    /// The changes after this event (`R` or `R.N`).
    Event(String),
}

const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(5);

pub async fn run(ctx: &Ctx, watch: Watch) -> Result<(), Failure> {
    if watch.keys.is_empty() && watch.prefixes.is_empty() {
        return Err(Failure::Usage(
            "name a key to watch, or a --prefix".to_owned(),
        ));
    }
    let body = WatchBody::WatchSet(WatchSet {
        keys: watch.keys.clone(),
        prefixes: watch.prefixes.clone(),
    });
    let mut from = match watch.since {
        Some(revision) => From::Revision(revision),
        None if watch.snapshot => From::Snapshot,
        // From now on: the revision now, rather than a snapshot of keys
        // that would not be printed.
        None => From::Revision(
            ctx.endpoints
                .call(Patience::Bounded, async |client| client.status().await)
                .await?
                .into_inner()
                .revision,
        ),
    };
    let mut delivered = 0;
    let mut retry = FIRST_RETRY;
    // Snapshot events already printed: a stream cut before its `sync` is
    // opened again for a whole new snapshot, and those are not printed twice.
    let mut shown = HashSet::new();
    loop {
        if watch.count.is_some_and(|count| delivered >= count) {
            return Ok(());
        }
        let (since, last_event_id) = match &from {
            From::Snapshot => (None, None),
            From::Revision(revision) => (Some(*revision), None),
            From::Event(id) => (None, Some(id.as_str())),
        };
        let opened = ctx
            .endpoints
            .call(Patience::Streaming, async |client| {
                client.watch_keys(since, last_event_id, &body).await
            })
            .await;
        let mut heard = false;
        match opened {
            Ok(answer) => {
                let mut parser = Parser::default();
                let mut stream = answer.into_inner().into_inner();
                let why = loop {
                    let chunk = match stream.next().await {
                        Some(Ok(chunk)) => chunk,
                        Some(Err(error)) => break format!("watch cut ({})", chain(&error)),
                        None => break "watch ended by the server".to_owned(),
                    };
                    heard = true;
                    for event in parser.push(&chunk) {
                        match event.name.as_str() {
                            "snapshot" => {
                                if watch.snapshot && shown.insert(event.data.clone()) {
                                    deliver(ctx, &watch.exec, &event).await?;
                                }
                            }
                            "sync" => {
                                if let Some(id) = event.id {
                                    from = From::Event(id);
                                }
                            }
                            _ => {
                                if let Some(id) = &event.id {
                                    from = From::Event(id.clone());
                                }
                                deliver(ctx, &watch.exec, &event).await?;
                                delivered += 1;
                                if watch.count.is_some_and(|count| delivered >= count) {
                                    return Ok(());
                                }
                            }
                        }
                    }
                };
                eprintln!("kvctl: {why}; resuming");
            }
            // Busy (too many watches, etcd away, a rate limit): later.
            Err(
                failure @ Failure::Refused {
                    status: 429 | 503, ..
                },
            ) => {
                eprintln!("kvctl: watch: {failure}; trying again in {retry:?}");
            }
            // Refused for good (410: the history no longer reaches back;
            // 401, 403): trying again would not change that.
            Err(failure @ Failure::Refused { .. }) => return Err(failure),
            Err(failure) => eprintln!("kvctl: watch: {failure}; trying again in {retry:?}"),
        }
        // A connection that brought something is followed at once; one
        // that brought nothing waits longer each time.
        if heard {
            retry = FIRST_RETRY;
        } else {
            tokio::time::sleep(retry).await;
            retry = (retry * 2).min(LAST_RETRY);
        }
    }
}

async fn deliver(ctx: &Ctx, exec: &[String], event: &Event) -> Result<(), Failure> {
    let data: Map<String, Value> = serde_json::from_str(&event.data).unwrap_or_default();
    let text = |name: &str| match data.get(name) {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    if let Some((program, args)) = exec.split_first() {
        let status = tokio::process::Command::new(program)
            .args(args)
            .env("KV_WATCH_EVENT", &event.name)
            .env("KV_WATCH_KEY", text("key"))
            .env("KV_WATCH_VALUE", text("value"))
            .env("KV_WATCH_REVISION", text("revision"))
            .status()
            .await
            .map_err(|error| Failure::Local(format!("{program}: {error}")))?;
        if !status.success() {
            eprintln!("kvctl: {program} exited with {status}");
        }
        return Ok(());
    }
    match ctx.output {
        Output::Json => {
            let mut line = Map::new();
            line.insert("event".to_owned(), Value::from(event.name.clone()));
            if let Some(id) = &event.id {
                line.insert("id".to_owned(), Value::from(id.clone()));
            }
            line.extend(data.clone());
            output::json(&line)
        }
        // A stream has no end to size a table's columns by: one line each.
        Output::Simple | Output::Table => {
            let mut line = format!("{} {}", event.name, text("key"));
            if matches!(data.get("value"), Some(Value::String(_))) {
                line.push(' ');
                line.push_str(&text("value"));
            }
            output::line(&line)
        }
    }
}
