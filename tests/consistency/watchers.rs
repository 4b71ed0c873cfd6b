//! Watchers of the workload's prefix, recorded through every fault, and
//! the validators etcd's robustness suite runs on watch streams: ordered,
//! no duplicates, every acknowledged write there, a revision's events
//! never split, every watcher seeing the same events, and a resume from
//! any id replaying exactly what followed it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::{Client, StatusCode};
use serde_json::Value as Json;

use super::history::Acked;
use super::workload::{Nodes, PREFIX};

/// An event's place: its revision and its part within the revision.
pub type Position = (u64, Option<u32>);

/// One event a watcher received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub position: Position,
    pub kind: String,
    pub key: String,
    pub value: Option<String>,
}

/// What a watcher saw from one snapshot on: every event, through however
/// many resumes with `Last-Event-ID`, until a resume was refused (410:
/// the server lost its history) or the watcher stopped.
#[derive(Debug, Default)]
pub struct Segment {
    /// The revision the snapshot showed.
    pub snapshot_at: u64,
    pub events: Vec<Seen>,
    pub resumes: usize,
}

/// Tells the watchers when to stop: once they have seen `final_revision`
/// (set when the workload is over).
#[derive(Default)]
pub struct Stop {
    pub stopping: AtomicBool,
    pub final_revision: AtomicU64,
}

fn position_of(id: &str) -> Option<Position> {
    match id.split_once('.') {
        Some((revision, part)) => Some((revision.parse().ok()?, Some(part.parse().ok()?))),
        None => Some((id.parse().ok()?, None)),
    }
}

fn id_of(position: Position) -> String {
    match position.1 {
        Some(part) => format!("{}.{part}", position.0),
        None => position.0.to_string(),
    }
}

/// Reads SSE blocks from a response body; `None` when the stream ends,
/// breaks, or stays silent longer than the heartbeat allows.
struct Blocks {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: Vec<u8>,
}

/// An SSE event: its id, name and data; or a heartbeat.
enum Block {
    Event(Option<String>, String, Json),
    Heartbeat,
}

impl Blocks {
    /// The next event, skipping heartbeats.
    async fn next(&mut self) -> Option<(Option<String>, String, Json)> {
        loop {
            match self.next_block().await? {
                Block::Event(id, event, data) => return Some((id, event, data)),
                Block::Heartbeat => {}
            }
        }
    }

    async fn next_block(&mut self) -> Option<Block> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block = String::from_utf8_lossy(&self.buffer[..end]).into_owned();
                self.buffer.drain(..end + 2);
                let (mut id, mut event, mut data) = (None, String::new(), String::new());
                for line in block.lines() {
                    let (field, value) = line.split_once(": ").unwrap_or((line, ""));
                    match field {
                        "id" => id = Some(value.to_owned()),
                        "event" => event = value.to_owned(),
                        "data" => data.push_str(value),
                        _ => {}
                    }
                }
                if data.is_empty() {
                    return Some(Block::Heartbeat);
                }
                let data = serde_json::from_str(&data).expect("event data is JSON");
                return Some(Block::Event(id, event, data));
            }
            // The harness runs watches with a 1 s heartbeat: 10 s of
            // silence is a stream that stalled.
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.body.next()).await;
            match chunk {
                Ok(Some(Ok(chunk))) => self.buffer.extend_from_slice(&chunk),
                _ => return None,
            }
        }
    }
}

/// Watches the workload's prefix through every fault until told to stop;
/// returns what it saw.
pub async fn watch(nodes: Nodes, first: usize, stop: Arc<Stop>) -> Vec<Segment> {
    let client = Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("a client");
    let mut segments: Vec<Segment> = Vec::new();
    let mut last: Option<Position> = None;
    let mut node = first % nodes.0.len();
    let done = |last: Option<Position>| {
        stop.stopping.load(Ordering::Acquire)
            && last.is_some_and(|(revision, _)| {
                revision >= stop.final_revision.load(Ordering::Acquire)
            })
    };
    let mut refused = 0;
    while !done(last) {
        let mut request = client.get(format!("{}/watch?prefix={PREFIX}", nodes.0[node]));
        if let Some(position) = last {
            request = request.header("last-event-id", id_of(position));
        }
        let response = match request.send().await {
            Ok(response) if response.status() == StatusCode::OK => response,
            Ok(response) if response.status() == StatusCode::GONE => {
                // The history is gone (a restarted memory store): start
                // over with a snapshot.
                last = None;
                continue;
            }
            other => {
                refused += 1;
                assert!(
                    refused < 2000,
                    "the watch could not reopen for a long time: {other:?}"
                );
                node = (node + 1) % nodes.0.len();
                tokio::time::sleep(Duration::from_millis(25)).await;
                continue;
            }
        };
        let mut blocks = Blocks {
            body: response.bytes_stream().boxed(),
            buffer: Vec::new(),
        };
        if last.is_none() {
            // A new snapshot: a new segment.
            let mut segment = Segment::default();
            loop {
                match blocks.next().await {
                    Some((Some(id), event, data)) if event == "sync" => {
                        segment.snapshot_at = data["revision"].as_u64().expect("a revision");
                        last = position_of(&id);
                        break;
                    }
                    Some((None, event, _)) if event == "snapshot" => {}
                    Some(other) => panic!("{other:?} before sync"),
                    None => break,
                }
            }
            if last.is_none() {
                continue;
            }
            segments.push(segment);
        } else if let Some(segment) = segments.last_mut() {
            segment.resumes += 1;
        }
        while !done(last) {
            let Some(block) = blocks.next_block().await else {
                break;
            };
            let Block::Event(id, event, data) = block else {
                continue;
            };
            let position = position_of(id.as_deref().expect("a live event has an id"))
                .expect("an id is R or R.N");
            let seen = Seen {
                position,
                kind: event,
                key: data["key"].as_str().expect("a key").to_owned(),
                value: data["value"].as_str().map(str::to_owned),
            };
            last = Some(position);
            if let Some(segment) = segments.last_mut() {
                segment.events.push(seen);
            }
        }
        refused = 0;
    }
    segments
}

/// What the validators found.
pub struct WatchVerdict {
    pub events: usize,
    pub segments: usize,
    pub resumes: usize,
    pub failures: Vec<String>,
}

/// Checks the watchers' streams against each other and against the writes
/// clients were told were done.
pub fn validate(
    watchers: &[Vec<Segment>],
    acked: &BTreeMap<u64, HashMap<String, Acked>>,
    writes_at: &BTreeMap<u64, usize>,
) -> WatchVerdict {
    let mut failures = Vec::new();
    let mut everything: BTreeMap<Position, (String, String, Option<String>)> = BTreeMap::new();
    let (mut events, mut segments, mut resumes) = (0, 0, 0);
    for (watcher, record) in watchers.iter().enumerate() {
        for (index, segment) in record.iter().enumerate() {
            segments += 1;
            resumes += segment.resumes;
            events += segment.events.len();
            let name = format!("watcher {watcher}, segment {index}");
            // Ordered, no duplicates, after the snapshot.
            let mut previous: Position = (segment.snapshot_at, None);
            for seen in &segment.events {
                let after = match (previous, seen.position) {
                    ((a, _), (b, _)) if b > a => true,
                    ((a, Some(x)), (b, Some(y))) => a == b && y > x,
                    _ => false,
                };
                if !after {
                    failures.push(format!(
                        "{name}: {:?} after {previous:?}: out of order or repeated",
                        seen.position
                    ));
                }
                previous = seen.position;
                // Every watcher sees the same event at a position.
                let event = (seen.kind.clone(), seen.key.clone(), seen.value.clone());
                if let Some(other) = everything.insert(seen.position, event.clone())
                    && other != event
                {
                    failures.push(format!(
                        "{name}: {:?} is {event:?} here and {other:?} elsewhere",
                        seen.position
                    ));
                }
            }
            let Some(last) = segment.events.last().map(|seen| seen.position.0) else {
                continue;
            };
            // No gaps: every acknowledged write in the range it covers.
            let by_position: HashMap<(u64, &str), &Seen> = segment
                .events
                .iter()
                .map(|seen| ((seen.position.0, seen.key.as_str()), seen))
                .collect();
            for (revision, writes) in acked.range(segment.snapshot_at + 1..last) {
                for write in writes.values() {
                    match by_position.get(&(*revision, write.key.as_str())) {
                        None => failures.push(format!(
                            "{name}: the acknowledged write of {:?} at revision {revision} is \
                             missing (covered {}..={last})",
                            write.key, segment.snapshot_at
                        )),
                        Some(seen) if seen.value != write.value => failures.push(format!(
                            "{name}: revision {revision} of {:?} shows {:?}, acknowledged {:?}",
                            write.key, seen.value, write.value
                        )),
                        Some(_) => {}
                    }
                }
            }
            // A revision's events never split: all its parts, in order,
            // for every revision before the last one seen.
            let mut parts: BTreeMap<u64, Vec<Option<u32>>> = BTreeMap::new();
            for seen in &segment.events {
                parts
                    .entry(seen.position.0)
                    .or_default()
                    .push(seen.position.1);
            }
            for (revision, seen) in parts.range(..last) {
                let expected: Vec<Option<u32>> = match writes_at.get(revision) {
                    Some(&1) | None if seen == &[None] => vec![None],
                    Some(&n) if n > 1 => (0..n as u32).map(Some).collect(),
                    _ => (0..seen.len() as u32).map(Some).collect(),
                };
                if seen != &expected {
                    failures.push(format!(
                        "{name}: revision {revision} came as parts {seen:?}, expected {expected:?}"
                    ));
                }
            }
        }
    }
    WatchVerdict {
        events,
        segments,
        resumes,
        failures,
    }
}

/// Resumes from `ids` (positions the watchers saw in their last segment)
/// and checks each replay is exactly what that segment saw after the id,
/// up to `final_revision`.
pub async fn check_resumes(
    node: &str,
    last_segment: &Segment,
    ids: &[Position],
    final_revision: u64,
) -> Vec<String> {
    let client = Client::new();
    let mut failures = Vec::new();
    for &from in ids {
        let expected: Vec<&Seen> = last_segment
            .events
            .iter()
            .filter(|seen| seen.position > from)
            .collect();
        let response = client
            .get(format!("{node}/watch?prefix={PREFIX}"))
            .header("last-event-id", id_of(from))
            .send()
            .await
            .expect("a watch");
        if response.status() == StatusCode::GONE {
            // Older than the history: a client would list again.
            continue;
        }
        if response.status() != StatusCode::OK {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            failures.push(format!("resuming from {}: {status} {body}", id_of(from)));
            continue;
        }
        let mut blocks = Blocks {
            body: response.bytes_stream().boxed(),
            buffer: Vec::new(),
        };
        let mut replayed = Vec::new();
        let deadline = tokio::time::Instant::now() + super::common::PATIENCE;
        while replayed.len() < expected.len() {
            let next = tokio::time::timeout_at(deadline, blocks.next());
            let Ok(Some((id, event, data))) = next.await else {
                break;
            };
            let position = position_of(id.as_deref().unwrap_or_default()).expect("an id");
            replayed.push(Seen {
                position,
                kind: event,
                key: data["key"].as_str().unwrap_or_default().to_owned(),
                value: data["value"].as_str().map(str::to_owned),
            });
            if position.0 > final_revision {
                break;
            }
        }
        let expected: Vec<Seen> = expected.into_iter().cloned().collect();
        if replayed != expected {
            let differs = replayed
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
                .unwrap_or(replayed.len().min(expected.len()));
            failures.push(format!(
                "resuming from {} replayed {} events, not the {} that followed it; first \
                 difference: {:?} instead of {:?}",
                id_of(from),
                replayed.len(),
                expected.len(),
                replayed.get(differs),
                expected.get(differs),
            ));
        }
    }
    failures
}
