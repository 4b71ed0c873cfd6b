//! `kill -9` under load, again and again: every acknowledged write is there
//! after the restart, and the one write each client had in flight is either
//! all there or not there at all (a batch included).
//!
//! `KV_CRASH_CYCLES` sets the number of kill/restart cycles (default 5; CI
//! runs more), `KV_CRASH_SEED` replays a run.

// A binary of its own (it must run alone): it uses a part of the helpers.
#[allow(dead_code)]
mod common;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use common::process::{ServerProcess, status};
use reqwest::{Client, StatusCode};
use serde_json::json;
use tokio::sync::mpsc;

const WRITERS: usize = 8;
const KEYS: usize = 4;

/// Each writer owns its keys, so it knows what they must hold.
type State = BTreeMap<String, Option<String>>;

/// A tiny deterministic generator (xorshift), so a seed replays a run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn keys(writer: usize) -> Vec<String> {
    let mut keys: Vec<String> = (0..KEYS).map(|i| format!("k{writer}-{i}")).collect();
    // Written only together, by batches: they must always match.
    keys.push(format!("pair{writer}-a"));
    keys.push(format!("pair{writer}-b"));
    keys
}

fn applied(state: &State, effect: &[(String, Option<String>)]) -> State {
    let mut after = state.clone();
    for (key, value) in effect {
        after.insert(key.clone(), value.clone());
    }
    after
}

/// What a writer leaves when the server dies under it.
struct Report {
    state: State,
    in_flight: Option<Vec<(String, Option<String>)>>,
    acked: u64,
    max_revision: u64,
}

/// Writes until the server stops answering; reports what was acknowledged.
async fn write(
    url: String,
    writer: usize,
    mut state: State,
    mut rng: Rng,
    acks: mpsc::UnboundedSender<()>,
) -> Report {
    let client = Client::new();
    let mut max_revision = 0;
    for n in 0u64.. {
        let key = format!("k{writer}-{}", rng.below(KEYS as u64));
        let value = format!("w{writer}-{n}-{}", rng.next());
        let current = state.get(&key).cloned().flatten();
        let (request, effect) = match rng.below(4) {
            0 => (
                client.put(format!("{url}/store/{key}")).body(value.clone()),
                vec![(key, Some(value))],
            ),
            1 if current.is_some() => (
                client.delete(format!("{url}/store/{key}")),
                vec![(key, None)],
            ),
            1 | 2 => (
                client
                    .post(format!("{url}/store/cas/{key}"))
                    .json(&json!({"expected": current, "new": value})),
                vec![(key, Some(value))],
            ),
            _ => {
                let (a, b) = (format!("pair{writer}-a"), format!("pair{writer}-b"));
                let ops = json!([
                    {"method": "PUT", "key": a, "value": value},
                    {"method": "CAS", "key": key, "expected": current, "value": value},
                    {"method": "PUT", "key": b, "value": value},
                ]);
                (
                    client.post(format!("{url}/batch")).json(&ops),
                    vec![
                        (a, Some(value.clone())),
                        (key, Some(value.clone())),
                        (b, Some(value)),
                    ],
                )
            }
        };
        let Some(revision) = acknowledged(request, writer).await else {
            // The server is gone: this write may or may not have happened.
            return Report {
                state,
                in_flight: Some(effect),
                acked: n,
                max_revision,
            };
        };
        state = applied(&state, &effect);
        max_revision = max_revision.max(revision);
        let _ = acks.send(());
    }
    unreachable!("the loop only ends by returning")
}

/// Sends a write; its revision once acknowledged, `None` if the server
/// went away before answering.
async fn acknowledged(request: reqwest::RequestBuilder, writer: usize) -> Option<u64> {
    let response = request.send().await.ok()?;
    let status = response.status();
    assert!(status.is_success(), "writer {writer}: {status}");
    if response.headers().contains_key("etag") {
        return Some(common::revision(&response));
    }
    if status != StatusCode::OK {
        return Some(0); // a DELETE: 204, no ETag
    }
    // A batch: the highest revision among its results.
    let results: serde_json::Value = response.json().await.ok()?;
    Some(
        results
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["revision"].as_u64())
            .max()
            .unwrap_or(0),
    )
}

async fn read_state(client: &Client, url: &str, writer: usize) -> State {
    let mut state = State::new();
    for key in keys(writer) {
        let response = client
            .get(format!("{url}/store/{key}"))
            .send()
            .await
            .expect("GET after restart");
        let value = match response.status() {
            StatusCode::OK => Some(response.text().await.expect("value")),
            StatusCode::NOT_FOUND => None,
            other => panic!("GET {key}: {other}"),
        };
        state.insert(key, value);
    }
    state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let cycles: u64 = std::env::var("KV_CRASH_CYCLES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(5);
    let seed: u64 = std::env::var("KV_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            u64::from(now.subsec_nanos()) | 1
        });
    eprintln!("crash test: {cycles} cycles, KV_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let client = Client::new();
    let mut states: Vec<State> = (0..WRITERS)
        .map(|w| keys(w).into_iter().map(|k| (k, None)).collect())
        .collect();
    let (mut total_acked, mut in_flight_applied, mut in_flight_lost) = (0, 0, 0);
    let mut revision_floor = 0;

    for cycle in 0..cycles {
        let server = ServerProcess::start(dir.path(), &[]);
        let (acks, mut acked) = mpsc::unbounded_channel();
        let writers: Vec<_> = states
            .iter()
            .enumerate()
            .map(|(w, state)| {
                let writer_rng = Rng(rng.next() | 1);
                tokio::spawn(write(
                    server.url.clone(),
                    w,
                    state.clone(),
                    writer_rng,
                    acks.clone(),
                ))
            })
            .collect();
        drop(acks);
        // Kill at a random point: after this many acknowledgements.
        let kill_after = 20 + rng.below(400);
        for _ in 0..kill_after {
            acked.recv().await.expect("writers run until the kill");
        }
        server.kill();

        let server = ServerProcess::start(dir.path(), &[]);
        let revision = status(&client, &server.url).await["revision"]
            .as_u64()
            .expect("revision");
        for (w, handle) in writers.into_iter().enumerate() {
            let report = handle.await.expect("writer task");
            total_acked += report.acked;
            assert!(
                revision >= report.max_revision,
                "cycle {cycle}: revision {revision} after restart, but writer {w} was acknowledged revision {}",
                report.max_revision
            );
            let found = read_state(&client, &server.url, w).await;
            let with_in_flight = report
                .in_flight
                .as_deref()
                .map(|effect| applied(&report.state, effect));
            if found == report.state {
                in_flight_lost += u64::from(with_in_flight.is_some_and(|s| s != report.state));
            } else if Some(&found) == with_in_flight.as_ref() {
                in_flight_applied += 1;
            } else {
                panic!(
                    "cycle {cycle}, writer {w} (KV_CRASH_SEED={seed}):\n found     {found:?}\n acked     {:?}\n in flight {:?}",
                    report.state, report.in_flight
                );
            }
            states[w] = found;
        }
        assert!(revision >= revision_floor, "the revision went backwards");
        revision_floor = revision;
        server.kill();
    }
    eprintln!(
        "crash test: {cycles} kill -9 cycles, {total_acked} acknowledged writes checked, \
         in-flight writes found applied {in_flight_applied} times and absent {in_flight_lost} times, \
         none half-applied, none acknowledged lost"
    );
}
