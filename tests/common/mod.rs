//! What the integration tests share: a server on a real socket, an HTTP
//! client, and a Server-Sent Events reader.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use clap::Parser;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use kv_store::config::Config;
use kv_store::server::{self, Running};
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::Value as Json;

/// How long a test waits for something the server must send before it fails
/// instead of hanging. A guard against a stuck test, not a speed check.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Runs `test` on a paused tokio clock when its server is in this process
/// (the memory store): TTLs, expiries, heartbeats and the connection
/// deadlines pass as soon as nothing else is left to do, without waiting
/// for them. Against etcd (`KV_TEST_BACKEND=etcd`) it runs on real time:
/// etcd's leases and answers keep it, in another process.
pub fn on_test_clock(test: impl Future<Output = ()>) {
    let mut runtime = tokio::runtime::Builder::new_current_thread();
    runtime.enable_all();
    if !etcd::wanted() {
        runtime.start_paused(true);
    }
    runtime.build().expect("a runtime").block_on(test);
}

/// A server started in-process on 127.0.0.1 with an ephemeral port.
pub struct TestServer {
    pub addr: SocketAddr,
    pub client: Client,
    /// The store's revision when the test got the server: 0 on the memory
    /// store, 1 on a fresh etcd.
    pub base: u64,
    running: Option<Running>,
    /// The etcd member the server uses (with `KV_TEST_BACKEND=etcd`).
    etcd: Option<etcd::Cluster>,
}

impl TestServer {
    /// A server with rate limiting off (unless `flags` set it) and `flags`,
    /// on the backend the parity suites run against (`KV_TEST_BACKEND`:
    /// the memory store, or `etcd`: a real etcd member of its own, so its
    /// revisions are as predictable as the memory store's).
    pub async fn start(flags: &[&str]) -> Self {
        Self::start_at("127.0.0.1:0", flags).await
    }

    /// A server listening on `listen` (a port of 0: any free one), on the
    /// backend the parity suites run against.
    pub async fn start_at(listen: &str, flags: &[&str]) -> Self {
        if !etcd::wanted() {
            return Self::start_with(listen, flags).await;
        }
        let cluster = etcd::Cluster::start(1);
        let endpoints = cluster.endpoints();
        let mut flags = flags.to_vec();
        flags.extend(["--backend", "etcd", "--etcd-endpoints", &endpoints]);
        // The member's own --max-txn-ops (etcd::Member::start).
        flags.extend(["--etcd-max-txn-ops", "1024"]);
        let mut server = Self::start_with(listen, &flags).await;
        server.etcd = Some(cluster);
        server.base = server.status().await["revision"]
            .as_u64()
            .expect("a revision");
        server
    }

    /// A server on etcd at `endpoints` (a cluster the test started).
    #[allow(
        dead_code,
        reason = "used by the tests that run alone: crash, cluster, consistency"
    )]
    pub async fn start_on_etcd(endpoints: &str, flags: &[&str]) -> Self {
        let mut flags = flags.to_vec();
        flags.extend(["--backend", "etcd", "--etcd-endpoints", endpoints]);
        Self::start_with("127.0.0.1:0", &flags).await
    }

    /// A server on the memory store, for what only it has (a data dir,
    /// expiry on the paused clock, its own history).
    pub async fn start_memory(flags: &[&str]) -> Self {
        Self::start_with("127.0.0.1:0", flags).await
    }

    async fn start_with(listen: &str, flags: &[&str]) -> Self {
        // An in-process server's access log would go to the test's own
        // stdout, which the harness does not capture; the child-process
        // servers' logs are read and shown (tests/it/cli.rs tests it).
        let mut args = vec![
            "kv-store",
            "--listen",
            listen,
            "--rate-limit",
            "0",
            "--access-log",
            "false",
        ];
        args.extend_from_slice(flags);
        let config = Config::try_parse_from(args).expect("valid test flags");
        let running = server::start(&config).await.expect("server starts");
        Self {
            addr: running.local_addr,
            client: Client::new(),
            base: 0,
            running: Some(running),
            etcd: None,
        }
    }

    /// The etcd member's client URL, on the etcd backend.
    pub fn etcd_endpoints(&self) -> Option<String> {
        self.etcd.as_ref().map(etcd::Cluster::endpoints)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path).send().await.expect("GET")
    }

    pub async fn put(&self, key: &str, value: &str) -> Response {
        self.request(Method::PUT, &format!("/store/{key}"))
            .body(value.to_owned())
            .send()
            .await
            .expect("PUT")
    }

    pub async fn delete(&self, key: &str) -> Response {
        self.request(Method::DELETE, &format!("/store/{key}"))
            .send()
            .await
            .expect("DELETE")
    }

    pub async fn post_json(&self, path: &str, body: &Json) -> Response {
        self.request(Method::POST, path)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("POST")
    }

    pub async fn status(&self) -> Json {
        json(self.get("/status").await).await
    }

    /// Stops the server and waits until it has.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop();
            running.wait().await.expect("server stops cleanly");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(running) = &self.running {
            running.stop();
        }
    }
}

pub async fn json(response: Response) -> Json {
    let bytes = response.bytes().await.expect("body");
    serde_json::from_slice(&bytes).expect("JSON body")
}

pub fn etag(response: &Response) -> Option<String> {
    response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The store revision a response's `ETag` carries.
pub fn revision(response: &Response) -> u64 {
    etag(response)
        .and_then(|tag| tag.trim_matches('"').parse().ok())
        .expect("numeric ETag")
}

/// Asserts `response` is problem+json with `status`, and returns the body.
pub async fn problem(response: Response, status: StatusCode) -> Json {
    assert_eq!(response.status(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body = json(response).await;
    assert_eq!(body["status"], status.as_u16(), "status member: {body}");
    for member in ["type", "title", "detail"] {
        assert!(body[member].is_string(), "{member} missing: {body}");
    }
    body
}

/// One Server-Sent Event.
#[derive(Clone, Debug, PartialEq)]
pub struct SseEvent {
    pub event: String,
    /// The revision of the event's id (`R` or `R.N`).
    pub id: Option<u64>,
    /// The `N` of an id `R.N`: the event's place among its revision's.
    pub part: Option<u32>,
    pub data: Json,
}

impl SseEvent {
    pub fn key(&self) -> &str {
        self.data["key"].as_str().unwrap_or_default()
    }

    pub fn value(&self) -> Option<&str> {
        self.data["value"].as_str()
    }
}

/// Reads events from a `text/event-stream` response.
pub struct Sse {
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: BytesMut,
    /// How much of `buffer` is known to hold no event boundary.
    scanned: usize,
}

impl Sse {
    pub fn new(response: Response) -> Self {
        assert_eq!(response.status(), StatusCode::OK, "watch answered");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Self::from_stream(response.bytes_stream().boxed())
    }

    /// A reader over an already checked body stream (a generated client's).
    pub fn from_stream(body: BoxStream<'static, reqwest::Result<bytes::Bytes>>) -> Self {
        Self {
            body,
            buffer: BytesMut::new(),
            scanned: 0,
        }
    }

    /// The next event; `None` when the server ends the stream. Fails the
    /// test if nothing comes within [`PATIENCE`].
    pub async fn next(&mut self) -> Option<SseEvent> {
        tokio::time::timeout(PATIENCE, self.next_event())
            .await
            .expect("an event (or the end of the stream) within the patience limit")
    }

    /// The next `n` events; fails if the stream ends first.
    pub async fn take(&mut self, n: usize) -> Vec<SseEvent> {
        let mut events = Vec::with_capacity(n);
        for _ in 0..n {
            events.push(self.next().await.expect("stream still open"));
        }
        events
    }

    /// The snapshot that opens a watch without `since`: the `snapshot`
    /// events (which carry no id) up to the `sync` event, and the revision
    /// the `sync` event names (its id).
    pub async fn snapshot(&mut self) -> (Vec<SseEvent>, u64) {
        let mut snapshot = Vec::new();
        loop {
            let event = self.next().await.expect("the snapshot, then sync");
            match event.event.as_str() {
                "snapshot" => {
                    assert_eq!(event.id, None, "a snapshot event carries no id");
                    snapshot.push(event);
                }
                "sync" => {
                    let id = event.id.expect("sync carries an id");
                    assert_eq!(event.data["revision"], id, "sync names its revision");
                    return (snapshot, id);
                }
                other => panic!("{other} event before sync"),
            }
        }
    }

    async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(block) = self.take_block() {
                if let Some(event) = parse_block(&block) {
                    return Some(event);
                }
                continue;
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buffer.extend_from_slice(&chunk),
                Some(Err(_)) | None => return None,
            }
        }
    }

    fn take_block(&mut self) -> Option<String> {
        let from = self.scanned.saturating_sub(1);
        let Some(found) = self.buffer[from..].windows(2).position(|w| w == b"\n\n") else {
            self.scanned = self.buffer.len();
            return None;
        };
        let end = from + found;
        self.scanned = 0;
        let block = String::from_utf8_lossy(&self.buffer[..end]).into_owned();
        self.buffer.advance(end + 2);
        Some(block)
    }
}

/// Parses one event block; comments (heartbeats) give `None`.
fn parse_block(block: &str) -> Option<SseEvent> {
    let (mut event, mut id, mut part, mut data) =
        (String::from("message"), None, None, String::new());
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = value.to_owned(),
            "id" => {
                let (revision, n) = match value.split_once('.') {
                    Some((revision, n)) => (revision, Some(n)),
                    None => (value, None),
                };
                id = Some(revision.parse().expect("an id is R or R.N"));
                part = n.map(|n| n.parse().expect("an id is R or R.N"));
            }
            "data" => data.push_str(value),
            _ => {}
        }
    }
    if data.is_empty() {
        return None;
    }
    Some(SseEvent {
        event,
        id,
        part,
        data: serde_json::from_str(&data).expect("event data is JSON"),
    })
}

/// Opens a watch on one key, optionally resuming after `last_event_id`.
pub async fn watch_key(server: &TestServer, key: &str, last_event_id: Option<u64>) -> Sse {
    let mut request = server.request(Method::GET, &format!("/watch_key/{key}"));
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id.to_string());
    }
    Sse::new(request.send().await.expect("watch"))
}

/// Opens a watch on several keys (a JSON array).
pub async fn watch_keys(server: &TestServer, keys: &Json) -> Sse {
    Sse::new(server.post_json("/watch", keys).await)
}

pub mod etcd;
pub mod pki;
pub mod process;
