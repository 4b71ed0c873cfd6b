//! The clients: each loops over reads, writes, deletes, compare-and-swaps,
//! conditional writes and batches on a few keys, one operation in flight
//! at a time, every value unique, and records what it saw.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{Value as Json, json};

use super::checker::{Cas, Delete, Op, Put};
use super::history::{Acked, History};

/// The keys every client works on, under one prefix the watchers watch.
pub const PREFIX: &str = "lin/";
pub const KEYS: usize = 6;

/// The nodes a client may send to; it moves to the next when one cannot
/// be reached.
#[derive(Clone)]
pub struct Nodes(pub Arc<Vec<String>>);

/// A tiny deterministic generator (xorshift), so a seed replays a choice
/// of operations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// How a request ended, as the checker needs it.
enum Outcome {
    /// The server answered.
    Answered(StatusCode, Option<u64>, Json),
    /// Nothing was done (the server said so): no operation to record.
    NotDone,
    /// The connection failed or the server could not say: a write may or
    /// may not have happened.
    Unknown,
}

/// One client of the workload.
pub struct Worker {
    pub id: usize,
    pub nodes: Nodes,
    pub history: Arc<History>,
    pub client: Client,
    node: usize,
    rng: Rng,
    written: u64,
    /// The last value and revision this client saw for each key.
    seen: HashMap<String, (Option<String>, Option<u64>)>,
}

/// Counts of what the workload did, for the closing line.
#[derive(Default)]
pub struct Tally {
    pub sent: AtomicUsize,
    pub lost: AtomicUsize,
}

impl Worker {
    pub fn new(id: usize, nodes: Nodes, history: Arc<History>, seed: u64) -> Self {
        let client = Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("a client");
        Self {
            id,
            node: id % nodes.0.len(),
            nodes,
            history,
            client,
            rng: Rng::new(seed ^ (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            written: 0,
            seen: HashMap::new(),
        }
    }

    fn key(&mut self) -> String {
        format!("{PREFIX}k{}", self.rng.below(KEYS as u64))
    }

    fn value(&mut self) -> String {
        self.written += 1;
        format!("c{}-{}", self.id, self.written)
    }

    /// Runs operations until `until` says stop.
    pub async fn run(mut self, until: impl Fn() -> bool, tally: Arc<Tally>) {
        while !until() {
            tally.sent.fetch_add(1, Ordering::Relaxed);
            if !self.step().await {
                tally.lost.fetch_add(1, Ordering::Relaxed);
                // The node is gone for now: try the next, and do not spin.
                self.node = (self.node + 1) % self.nodes.0.len();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// One operation; `false` if its outcome is unknown.
    async fn step(&mut self) -> bool {
        match self.rng.below(100) {
            0..30 => self.get().await,
            30..50 => self.put().await,
            50..55 => self.delete().await,
            55..70 => self.cas().await,
            70..80 => self.conditional().await,
            _ => self.batch().await,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Outcome {
        let response = match request.send().await {
            Ok(response) => response,
            Err(_) => return Outcome::Unknown,
        };
        let status = response.status();
        let revision = response
            .headers()
            .get("etag")
            .and_then(|tag| tag.to_str().ok())
            .and_then(|tag| tag.trim_matches('"').parse().ok());
        let Ok(bytes) = response.bytes().await else {
            return Outcome::Unknown;
        };
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Json::String(String::from_utf8_lossy(&bytes).into_owned()));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            let kind = body["type"].as_str().unwrap_or_default();
            // These say nothing was written; the rest (etcd unreachable)
            // may or may not have been.
            return if kind.ends_with(":shutting-down") || kind.ends_with(":answers-full") {
                Outcome::NotDone
            } else {
                Outcome::Unknown
            };
        }
        if status.is_server_error() {
            return Outcome::Unknown;
        }
        Outcome::Answered(status, revision, body)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.nodes.0[self.node])
    }

    fn encoded(key: &str) -> String {
        key.replace('/', "%2F")
    }

    fn saw(&mut self, key: &str, value: Option<String>, revision: Option<u64>) {
        self.seen.insert(key.to_owned(), (value, revision));
    }

    async fn get(&mut self) -> bool {
        let key = self.key();
        let request = self
            .client
            .get(self.url(&format!("/store/{}", Self::encoded(&key))));
        let call = self.history.now();
        let outcome = self.send(request).await;
        let ret = self.history.now();
        match outcome {
            Outcome::Answered(StatusCode::OK, revision, body) => {
                let value = body
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| body.to_string());
                self.saw(&key, Some(value.clone()), revision);
                let op = Op::Read { value: Some(value) };
                self.history.record(call, Some(ret), vec![(key, op)]);
                true
            }
            Outcome::Answered(StatusCode::NOT_FOUND, _, _) => {
                self.saw(&key, None, None);
                let op = Op::Read { value: None };
                self.history.record(call, Some(ret), vec![(key, op)]);
                true
            }
            Outcome::Answered(status, _, body) => panic!("GET {key}: {status} {body}"),
            Outcome::NotDone => true,
            Outcome::Unknown => false,
        }
    }

    async fn put(&mut self) -> bool {
        let key = self.key();
        let value = self.value();
        let request = self
            .client
            .put(self.url(&format!("/store/{}", Self::encoded(&key))))
            .body(value.clone());
        let call = self.history.now();
        let outcome = self.send(request).await;
        let ret = self.history.now();
        let (outcome, known) = match outcome {
            Outcome::Answered(status, revision, _) => {
                let outcome = match status {
                    StatusCode::CREATED => Put::Created,
                    StatusCode::NO_CONTENT => Put::Replaced,
                    other => panic!("PUT {key}: {other}"),
                };
                self.record_ack(revision, &key, Some(&value));
                self.saw(&key, Some(value.clone()), revision);
                (outcome, true)
            }
            Outcome::NotDone => return true,
            Outcome::Unknown => (Put::Unknown, false),
        };
        let op = Op::Put { value, outcome };
        self.history
            .record(call, known.then_some(ret), vec![(key, op)]);
        known
    }

    async fn delete(&mut self) -> bool {
        let key = self.key();
        let request = self
            .client
            .delete(self.url(&format!("/store/{}", Self::encoded(&key))));
        let call = self.history.now();
        let outcome = self.send(request).await;
        let ret = self.history.now();
        let (outcome, known) = match outcome {
            Outcome::Answered(StatusCode::NO_CONTENT, _, _) => (Delete::Deleted, true),
            Outcome::Answered(StatusCode::NOT_FOUND, _, _) => (Delete::NotFound, true),
            Outcome::Answered(status, _, body) => panic!("DELETE {key}: {status} {body}"),
            Outcome::NotDone => return true,
            Outcome::Unknown => (Delete::Unknown, false),
        };
        if known {
            self.saw(&key, None, None);
        }
        self.history.record(
            call,
            known.then_some(ret),
            vec![(key, Op::Delete { outcome })],
        );
        known
    }

    /// `POST /store/cas/{key}` expecting what this client last saw.
    async fn cas(&mut self) -> bool {
        let key = self.key();
        let expected = self.seen.get(&key).and_then(|(value, _)| value.clone());
        let new = self.value();
        let request = self
            .client
            .post(self.url(&format!("/store/cas/{}", Self::encoded(&key))))
            .json(&json!({"expected": expected, "new": new}));
        let call = self.history.now();
        let outcome = self.send(request).await;
        let ret = self.history.now();
        let (outcome, known) = match outcome {
            Outcome::Answered(StatusCode::NO_CONTENT, revision, _) => {
                self.record_ack(revision, &key, Some(&new));
                self.saw(&key, Some(new.clone()), revision);
                (Cas::Applied, true)
            }
            Outcome::Answered(StatusCode::PRECONDITION_FAILED, _, body) => {
                let value = body["value"].as_str().map(str::to_owned);
                self.saw(&key, value, body["revision"].as_u64());
                (Cas::Refused, true)
            }
            Outcome::Answered(StatusCode::NOT_FOUND, _, _) => {
                self.saw(&key, None, None);
                (Cas::Refused, true)
            }
            Outcome::Answered(status, _, body) => panic!("CAS {key}: {status} {body}"),
            Outcome::NotDone => return true,
            Outcome::Unknown => (Cas::Unknown, false),
        };
        let op = Op::Cas {
            expected,
            new,
            outcome,
        };
        self.history
            .record(call, known.then_some(ret), vec![(key, op)]);
        known
    }

    /// A PUT with `If-Match` on the revision this client last saw (or
    /// `If-None-Match: *` when it saw the key absent): a compare-and-swap
    /// on that revision's value, as every value is written once.
    async fn conditional(&mut self) -> bool {
        let key = self.key();
        let (expected, header) = match self.seen.get(&key) {
            Some((Some(value), Some(revision))) => {
                (Some(value.clone()), ("if-match", format!("\"{revision}\"")))
            }
            _ => (None, ("if-none-match", "*".to_owned())),
        };
        let new = self.value();
        let request = self
            .client
            .put(self.url(&format!("/store/{}", Self::encoded(&key))))
            .header(header.0, header.1)
            .body(new.clone());
        let call = self.history.now();
        let outcome = self.send(request).await;
        let ret = self.history.now();
        let (outcome, known) = match outcome {
            Outcome::Answered(StatusCode::CREATED | StatusCode::NO_CONTENT, revision, _) => {
                self.record_ack(revision, &key, Some(&new));
                self.saw(&key, Some(new.clone()), revision);
                (Cas::Applied, true)
            }
            Outcome::Answered(StatusCode::PRECONDITION_FAILED, _, body) => {
                let value = body["value"].as_str().map(str::to_owned);
                self.saw(&key, value, body["revision"].as_u64());
                (Cas::Refused, true)
            }
            Outcome::Answered(status, _, body) => panic!("conditional PUT {key}: {status} {body}"),
            Outcome::NotDone => return true,
            Outcome::Unknown => (Cas::Unknown, false),
        };
        let op = Op::Cas {
            expected,
            new,
            outcome,
        };
        self.history
            .record(call, known.then_some(ret), vec![(key, op)]);
        known
    }

    /// A batch of two or three operations on distinct keys.
    async fn batch(&mut self) -> bool {
        let size = 2 + self.rng.below(2) as usize;
        let mut keys: Vec<String> = Vec::new();
        while keys.len() < size {
            let key = self.key();
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        // (method, key, value written, CAS expected)
        let mut planned: Vec<(&str, String, Option<String>, Option<String>)> = Vec::new();
        for key in keys {
            match self.rng.below(4) {
                0 => planned.push(("GET", key, None, None)),
                1 => {
                    let value = self.value();
                    planned.push(("PUT", key, Some(value), None));
                }
                2 => planned.push(("DELETE", key, None, None)),
                _ => {
                    let expected = self.seen.get(&key).and_then(|(value, _)| value.clone());
                    let value = self.value();
                    planned.push(("CAS", key, Some(value), expected));
                }
            }
        }
        let body: Vec<Json> = planned
            .iter()
            .map(|(method, key, value, expected)| match *method {
                "PUT" => json!({"method": method, "key": key, "value": value}),
                "CAS" => {
                    json!({"method": method, "key": key, "value": value, "expected": expected})
                }
                _ => json!({"method": method, "key": key}),
            })
            .collect();
        let request = self.client.post(self.url("/batch")).json(&body);
        let call = self.history.now();
        let outcome = self.send(request).await;
        let ret = self.history.now();
        match outcome {
            Outcome::Answered(StatusCode::OK, _, results) => {
                let mut ops = Vec::new();
                let mut acked = Vec::new();
                let mut revision = None;
                for ((method, key, value, expected), result) in planned
                    .into_iter()
                    .zip(results.as_array().expect("one result per op"))
                {
                    let status = result["status"].as_u64().unwrap_or(0);
                    let op = match (method, status) {
                        ("GET", 200) => {
                            let found = result["value"].as_str().map(str::to_owned);
                            self.saw(&key, found.clone(), result["revision"].as_u64());
                            Op::Read { value: found }
                        }
                        ("GET", 404) => {
                            self.saw(&key, None, None);
                            Op::Read { value: None }
                        }
                        ("PUT", 201 | 204) => Op::Put {
                            value: value.clone().expect("a value"),
                            outcome: if status == 201 {
                                Put::Created
                            } else {
                                Put::Replaced
                            },
                        },
                        ("DELETE", 204) => Op::Delete {
                            outcome: Delete::Deleted,
                        },
                        ("DELETE", 404) => Op::Delete {
                            outcome: Delete::NotFound,
                        },
                        ("CAS", 204) => Op::Cas {
                            expected,
                            new: value.clone().expect("a value"),
                            outcome: Cas::Applied,
                        },
                        other => panic!("batch result {other:?}: {result}"),
                    };
                    if let Some(at) = result["revision"].as_u64()
                        && method != "GET"
                        && status != 404
                    {
                        revision = Some(at);
                        acked.push(Acked {
                            key: key.clone(),
                            value: if method == "DELETE" {
                                None
                            } else {
                                value.clone()
                            },
                        });
                        self.saw(&key, value.clone(), Some(at));
                    } else if method == "DELETE" {
                        self.saw(&key, None, None);
                    }
                    ops.push((key, op));
                }
                if let Some(revision) = revision {
                    self.history.acked(revision, acked);
                }
                self.history.record(call, Some(ret), ops);
                true
            }
            Outcome::Answered(StatusCode::CONFLICT, _, problem) => {
                // Nothing applied: each failed CAS saw another value.
                let mut ops = Vec::new();
                let results = problem["results"].as_array().cloned().unwrap_or_default();
                for ((method, key, value, expected), result) in planned.into_iter().zip(results) {
                    let status = result["status"].as_u64().unwrap_or(0);
                    if method == "CAS" && (status == 412 || status == 404) {
                        ops.push((
                            key,
                            Op::Cas {
                                expected,
                                new: value.expect("a value"),
                                outcome: Cas::Refused,
                            },
                        ));
                    }
                }
                self.history.record(call, Some(ret), ops);
                true
            }
            Outcome::Answered(status, _, body) => panic!("batch: {status} {body}"),
            Outcome::NotDone => true,
            Outcome::Unknown => {
                let ops = planned
                    .into_iter()
                    .filter_map(|(method, key, value, expected)| {
                        let op = match method {
                            "PUT" => Op::Put {
                                value: value.expect("a value"),
                                outcome: Put::Unknown,
                            },
                            "DELETE" => Op::Delete {
                                outcome: Delete::Unknown,
                            },
                            "CAS" => Op::Cas {
                                expected,
                                new: value.expect("a value"),
                                outcome: Cas::Unknown,
                            },
                            _ => return None,
                        };
                        Some((key, op))
                    })
                    .collect();
                self.history.record(call, None, ops);
                false
            }
        }
    }

    /// A single write acknowledged at `revision` (its ETag).
    fn record_ack(&self, revision: Option<u64>, key: &str, value: Option<&str>) {
        if let Some(revision) = revision {
            self.history.acked(
                revision,
                vec![Acked {
                    key: key.to_owned(),
                    value: value.map(str::to_owned),
                }],
            );
        }
    }
}
