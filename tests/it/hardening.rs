//! Careless and hostile clients: stalled heads and bodies, idle
//! connections, too many connections, bytes hyper cannot parse.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::{PATIENCE, TestServer, json, on_test_clock, watch_key};
use reqwest::StatusCode;
use serde_json::Value as Json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Short deadlines, so a test waits a fraction of a second for them.
const SHORT: &[&str] = &[
    "--header-timeout",
    "300ms",
    "--body-timeout",
    "300ms",
    "--idle-timeout",
    "300ms",
];

/// A raw HTTP/1.1 answer: status, headers (lower-case names), body.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Asserts a problem+json answer with `status`; returns its body.
    fn problem(&self, status: u16) -> Json {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        let body: Json = serde_json::from_slice(&self.body).expect("JSON problem");
        assert_eq!(body["status"], status);
        assert!(body["detail"].is_string() && body["type"].is_string());
        body
    }
}

/// Reads until the server closes the connection (within [`PATIENCE`]).
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut bytes))
        .await
        .expect("the server closes the connection")
        .expect("read");
    bytes
}

/// Parses one HTTP/1.1 response with a Content-Length from `bytes`.
fn parse(bytes: &[u8]) -> Raw {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Raw {
        status,
        headers,
        body: body.as_bytes().to_vec(),
    }
}

/// Sends `bytes` on a new connection and reads the answer to the close.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Raw {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("send");
    parse(&read_to_close(&mut stream).await)
}

#[test]
fn a_stalled_head_is_answered_408_and_closed() {
    on_test_clock(async {
        let server = TestServer::start(SHORT).await;
        for partial in [&b"GET /store/k HTTP/1.1\r\nHost: x\r\n"[..], b"", b"GE"] {
            let answer = exchange(server.addr, partial).await;
            answer.problem(408);
            assert_eq!(answer.header("connection"), Some("close"));
        }
        // The server still serves.
        assert_eq!(server.put("k", "v").await.status(), StatusCode::CREATED);
    });
}

#[test]
fn a_stalled_body_is_answered_408_and_closed() {
    on_test_clock(async {
        let server = TestServer::start(SHORT).await;
        let put = b"PUT /store/k HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly part";
        exchange(server.addr, put).await.problem(408);
        let chunked = b"POST /batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                        Transfer-Encoding: chunked\r\n\r\n5\r\n[{\"me\r\n";
        exchange(server.addr, chunked).await.problem(408);
        let cas = b"POST /store/cas/k HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                    Content-Length: 50\r\n\r\n{\"expected\":";
        exchange(server.addr, cas).await.problem(408);
        // Nothing was written by any of them.
        assert_eq!(server.get("/store/k").await.status(), StatusCode::NOT_FOUND);
    });
}

#[test]
fn an_idle_keep_alive_connection_is_closed() {
    on_test_clock(async {
        let server = TestServer::start(SHORT).await;
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("send");
        // One answer, then nothing until the server closes the connection.
        let bytes = read_to_close(&mut stream).await;
        let answer = parse(&bytes);
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, b"OK");
    });
}

#[test]
fn a_watch_stream_outlives_the_idle_timeout() {
    on_test_clock(async {
        let server = TestServer::start(SHORT).await;
        let mut watch = watch_key(&server, "k", None).await;
        assert_eq!(watch.snapshot().await.0.len(), 1);
        // Deliberately longer than --idle-timeout: the stream must stay open.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        server.put("k", "v").await;
        let event = watch.next().await.expect("the stream is still open");
        assert_eq!((event.event.as_str(), event.value()), ("put", Some("v")));
    });
}

#[tokio::test]
async fn over_the_connection_limit_a_client_gets_503_at_once() {
    let server = TestServer::start(&["--max-connections", "3"]).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("send");
        let mut answer = [0u8; 256];
        let n = stream.read(&mut answer).await.expect("answer");
        assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
        held.push(stream);
    }
    // The fourth is answered without sending anything, and closed.
    let mut fourth = TcpStream::connect(server.addr).await.expect("connect");
    let refused = parse(&read_to_close(&mut fourth).await);
    refused.problem(503);
    assert_eq!(refused.header("retry-after"), Some("1"));

    // Once one leaves, a client gets in again; the metrics tell the story.
    held.pop();
    let metrics = loop {
        let response = server.get("/metrics").await;
        if response.status() == StatusCode::OK {
            break response.text().await.expect("metrics");
        }
        // The server has not yet seen the close: answered 503 at once.
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    };
    assert!(metrics.contains("kv_connections 3"), "{metrics}");
    assert!(
        metrics.contains("kv_rejected_connections_total "),
        "{metrics}"
    );
    assert!(
        !metrics.contains("kv_rejected_connections_total 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn what_hyper_cannot_parse_is_still_problem_json() {
    let server = TestServer::start(&[]).await;
    let cases: [(&[u8], u16); 5] = [
        (b"GE(T /store/k HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /store/<>\"{}|^ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /store/\x01k HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (
            b"GET /store/k HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n",
            400,
        ),
        (b"GET /store/k HTTP/9.9\r\nHost: x\r\n\r\n", 400),
    ];
    for (request, status) in cases {
        let answer = exchange(server.addr, request).await;
        let body = answer.problem(status);
        assert_eq!(body["type"], "urn:kv-store:problem:invalid-request");
    }
    let mut huge = b"GET /store/k HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..2000 {
        huge.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(200)).as_bytes());
    }
    huge.extend_from_slice(b"\r\n");
    exchange(server.addr, &huge).await.problem(431);
}

#[tokio::test]
async fn listen_takes_a_host_name() {
    let server = TestServer::start_at("localhost:0", &[]).await;
    assert!(server.addr.ip().is_loopback());
    let status = json(server.get("/status").await).await;
    assert_eq!(status["revision"], 0);
}

/// CPU time (user + system, in clock ticks) the process has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let field = |i: usize| fields[i].parse::<u64>().expect("a number");
    field(11) + field(12)
}

// Real time: the server is a child process (its limits and CPU time are
// its own), and the check is CPU spent over a second of it.
#[tokio::test]
async fn out_of_file_descriptors_the_server_backs_off_and_recovers() {
    use std::process::{Command, Stdio};

    if !std::path::Path::new("/proc/self/stat").exists() {
        eprintln!("SKIPPED: no /proc here to read the server's CPU time from");
        return;
    }
    // A hard limit of 40 descriptors, which the server cannot raise, and a
    // connection limit above it: accepting runs out of descriptors.
    let script = format!(
        "ulimit -n 40 && exec {} --listen 127.0.0.1:0 --rate-limit 0 --max-connections 1000",
        env!("CARGO_BIN_EXE_kv-store")
    );
    let mut command = Command::new("sh");
    command
        .args(["-c", &script])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped());
    let server = common::process::ServerProcess::spawn(command);
    let addr: SocketAddr = server
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("an address");

    let mut held = Vec::new();
    for _ in 0..60 {
        held.push(TcpStream::connect(addr).await.expect("connect"));
    }
    let logged = loop {
        let line = server
            .logs
            .recv_timeout(PATIENCE)
            .expect("the server logs the exhaustion");
        if line.contains("out of file descriptors") {
            break line;
        }
    };
    assert!(logged.contains("ulimit -n"), "{logged}");

    // While the descriptors stay exhausted the accept loop must not spin.
    // Over a deliberate second a spinning loop burns ~100 ticks; a backing
    // off one a few.
    let before = cpu_ticks(server.pid());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = cpu_ticks(server.pid()) - before;
    assert!(used < 50, "the server used {used} ticks of CPU in 1 s");

    // Once clients leave, the server serves again.
    drop(held);
    let client = reqwest::Client::new();
    let served = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Ok(response) = client.get(format!("http://{addr}/healthz")).send().await
                && response.status() == StatusCode::OK
            {
                break;
            }
        }
    })
    .await;
    served.expect("the server serves again once descriptors are free");
}

/// A metric's value in the Prometheus text `metrics`.
fn metric(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} in {metrics}"))
}

#[tokio::test]
async fn watchers_that_never_read_are_dropped_and_their_sockets_closed() {
    const WATCHERS: usize = 20;
    let server = TestServer::start(&[
        "--watch-queue-bytes",
        "3145728",
        "--max-value-bytes",
        "2097152",
    ])
    .await;
    let mut sockets = Vec::new();
    for _ in 0..WATCHERS {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        // A small receive window, so the server's writes stall early.
        socket.set_recv_buffer_size(4096).expect("buffer size");
        let mut stream = socket.connect(server.addr).await.expect("connect");
        stream
            .write_all(b"GET /watch_key/big HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("send");
        sockets.push(stream);
    }
    // Every watcher is registered once the store counts it.
    tokio::time::timeout(PATIENCE, async {
        while json(server.get("/status").await).await["watch_requests_count"] != WATCHERS {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("every watch opens");
    let value = "x".repeat(1 << 20);
    let mut peak = 0;
    for _ in 0..12 {
        assert!(server.put("big", &value).await.status().is_success());
        let metrics = server.get("/metrics").await.text().await.expect("metrics");
        peak = peak.max(metric(&metrics, "kv_watch_bytes"));
    }
    // Each watcher is charged at most its bound plus one event; the frames
    // are shared, so the real total is far below the sum.
    assert!(
        peak <= (WATCHERS * (3 << 20)) as u64,
        "watchers held {peak} bytes"
    );
    let metrics = server.get("/metrics").await.text().await.expect("metrics");
    assert_eq!(
        metric(&metrics, "kv_dropped_watchers_total"),
        WATCHERS as u64
    );
    // The server closed every socket though no client read: reading now
    // finds what the kernel buffered, then the end.
    for mut stream in sockets {
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut sink))
            .await
            .expect("the server closed the connection");
    }
    let status = json(server.get("/status").await).await;
    assert_eq!(status["watch_requests_count"], 0);
}

#[test]
fn h2c_with_prior_knowledge_serves_requests_and_watches_on_one_connection() {
    on_test_clock(async {
        let server = TestServer::start(SHORT).await;
        let client = reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .expect("client");
        let put = client
            .put(server.url("/store/k"))
            .body("v")
            .send()
            .await
            .expect("PUT");
        assert_eq!(put.version(), reqwest::Version::HTTP_2);
        assert_eq!(put.status(), StatusCode::CREATED);
        // Two watch streams and a write, multiplexed on the client's one
        // connection; the streams outlive --idle-timeout as they are in flight.
        let first = client
            .get(server.url("/watch_key/k"))
            .send()
            .await
            .expect("watch");
        let second = client
            .get(server.url("/watch_key/k"))
            .send()
            .await
            .expect("watch");
        let (mut first, mut second) = (common::Sse::new(first), common::Sse::new(second));
        assert_eq!(first.snapshot().await.0[0].value(), Some("v"));
        assert_eq!(second.snapshot().await.0[0].value(), Some("v"));
        tokio::time::sleep(Duration::from_millis(600)).await;
        let put = client
            .put(server.url("/store/k"))
            .body("w")
            .send()
            .await
            .expect("PUT");
        assert_eq!(put.status(), StatusCode::NO_CONTENT);
        for stream in [&mut first, &mut second] {
            let event = stream.next().await.expect("still open");
            assert_eq!((event.event.as_str(), event.value()), ("put", Some("w")));
        }
        let metrics = server.get("/metrics").await.text().await.expect("metrics");
        // The test's plain client and the HTTP/2 one.
        assert_eq!(metric(&metrics, "kv_connections"), 2);
    });
}

/// Reads one response head from `stream` (after `buffer`'s bytes); returns
/// its status and content length, leaving what follows the head in
/// `buffer`.
async fn read_head(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> (u16, Option<usize>) {
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
            buffer.drain(..end + 4);
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|code| code.parse().ok())
                .unwrap_or_else(|| panic!("a status line: {head}"));
            let length = head.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            });
            return (status, length);
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut chunk))
            .await
            .expect("an answer within the patience limit")
            .expect("read");
        assert!(n > 0, "the connection closed before an answer");
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// The status the server answers `request` with when it is the first on a
/// connection (the lean watch path reads it) and when it follows a request
/// hyper served on the same connection (hyper reads it).
async fn status_both_ways(addr: SocketAddr, request: &[u8]) -> (u16, u16) {
    let mut lean = TcpStream::connect(addr).await.expect("connect");
    lean.write_all(request).await.expect("send");
    let (lean_status, _) = read_head(&mut lean, &mut Vec::new()).await;

    let mut hyper = TcpStream::connect(addr).await.expect("connect");
    hyper
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    let mut buffer = Vec::new();
    let (status, length) = read_head(&mut hyper, &mut buffer).await;
    assert_eq!(status, 200);
    while buffer.len() < length.unwrap_or(0) {
        let mut chunk = [0u8; 256];
        let n = hyper.read(&mut chunk).await.expect("read");
        buffer.extend_from_slice(&chunk[..n]);
    }
    buffer.drain(..length.unwrap_or(0));
    hyper.write_all(request).await.expect("send");
    let (hyper_status, _) = read_head(&mut hyper, &mut buffer).await;
    (lean_status, hyper_status)
}

#[tokio::test]
async fn the_lean_watch_path_accepts_exactly_what_hyper_accepts() {
    let server = TestServer::start(&[]).await;
    let post = |headers: &str, body: &str| {
        format!(
            "POST /watch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{headers}\r\n{body}"
        )
    };
    let cases: Vec<String> = vec![
        "GET /watch_key/k HTTP/1.1\r\nHost: x\r\n\r\n".into(),
        "GET /watch?prefix=a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into(),
        post("Content-Length: 5\r\n", "[\"k\"]"),
        post("Content-Length: +5\r\n", "[\"k\"]"),
        post("Content-Length: -5\r\n", "[\"k\"]"),
        post("Content-Length: 0x5\r\n", "[\"k\"]"),
        post("Content-Length: 5 5\r\n", "[\"k\"]"),
        post("Content-Length: 05\r\n", "[\"k\"]"),
        post("Content-Length: 5\r\nContent-Length: 5\r\n", "[\"k\"]"),
        post("Content-Length: 5\r\nContent-Length: 6\r\n", "[\"k\"] "),
        post("Content-Length: 99999999999999999999999\r\n", "[\"k\"]"),
        post("Transfer-Encoding: gzip\r\n", "[\"k\"]"),
        post("Transfer-Encoding: chunked\r\n", "5\r\n[\"k\"]\r\n0\r\n\r\n"),
        post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", "5\r\n[\"k\"]\r\n0\r\n\r\n"),
        "GET /watch_key/k HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n".into(),
        "GET /watch_key/k HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n".into(),
        "GET /watch_key/k HTTP/1.1\r\nHost: x\r\nX-Fold: a\r\n b\r\n\r\n".into(),
        "GET /watch key HTTP/1.1\r\nHost: x\r\n\r\n".into(),
        "GET /watch_key/k HTTP/1.2\r\nHost: x\r\n\r\n".into(),
        "GET /watch_key/k\x7f HTTP/1.1\r\nHost: x\r\n\r\n".into(),
        "GET /watch_key/%ZZ HTTP/1.1\r\nHost: x\r\n\r\n".into(),
        "GET /watch_key/k#frag HTTP/1.1\r\nHost: x\r\n\r\n".into(),
        "GET http://x/watch_key/k HTTP/1.1\r\nHost: x\r\n\r\n".into(),
        "GET /watch_key/k HTTP/1.1\nHost: x\n\n".into(),
        "GET /watch_key/k HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n".into(),
        "GET /watch_key/k HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n".into(),
        "GET /watch_key/ HTTP/1.1\r\nHost: x\r\n\r\n".into(),
        "GET /watch?since=x&prefix=a HTTP/1.1\r\nHost: x\r\n\r\n".into(),
    ];
    for request in cases {
        let (lean, hyper) = status_both_ways(server.addr, request.as_bytes()).await;
        assert_eq!(lean, hyper, "{request:?}: lean path vs hyper");
    }
}

/// An HTTP/2 (prior knowledge) connection to `addr` whose streams start
/// with a receive window of `window` bytes; the connection's task runs in
/// the background until the server closes it.
async fn h2_connect(
    addr: SocketAddr,
    window: u32,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(window)
        .handshake(tcp)
        .await
        .expect("HTTP/2 handshake");
    (client, tokio::spawn(connection))
}

/// Sends a bodiless `method` request for `path` on an HTTP/2 connection;
/// the answer's head and body.
async fn h2_request(
    client: &mut h2::client::SendRequest<bytes::Bytes>,
    method: &str,
    path: &str,
) -> http::Response<h2::RecvStream> {
    let request = http::Request::builder()
        .method(method)
        .uri(format!("http://kv-store{path}"))
        .body(())
        .expect("a request");
    let ready = client
        .clone()
        .ready()
        .await
        .expect("the connection takes a stream");
    *client = ready;
    let (response, _) = client.send_request(request, true).expect("sent");
    tokio::time::timeout(PATIENCE, response)
        .await
        .expect("an answer within the patience limit")
        .expect("an answer")
}

#[tokio::test]
async fn an_h2_watcher_that_falls_behind_has_its_stream_reset_not_its_connection() {
    let server = TestServer::start(&["--watch-queue-bytes", "262144"]).await;
    let (mut client, _connection) = h2_connect(server.addr, 65_535).await;
    let watch = h2_request(&mut client, "GET", "/watch_key/k").await;
    assert_eq!(watch.status(), 200);
    let mut body = watch.into_body();
    // Nothing is read: the stream's window fills, then the watcher's queue.
    let value = "x".repeat(16 * 1024);
    let mut writes = 0;
    while server.status().await["dropped_watchers"] == 0 {
        assert!(server.put("k", &value).await.status().is_success());
        writes += 1;
        assert!(writes < 1000, "the watcher was never dropped");
    }
    // What was already sent arrives, then the stream is reset.
    let reset = loop {
        match tokio::time::timeout(PATIENCE, body.data())
            .await
            .expect("data or a reset within the patience limit")
        {
            Some(Ok(chunk)) => {
                let _ = body.flow_control().release_capacity(chunk.len());
            }
            Some(Err(err)) => break err,
            None => panic!("the stream ended instead of being reset"),
        }
    };
    assert_eq!(reset.reason(), Some(h2::Reason::INTERNAL_ERROR), "{reset}");
    // The connection goes on: a new request, and a resumed watch, on it.
    let health = h2_request(&mut client, "GET", "/healthz").await;
    assert_eq!(health.status(), 200);
    let metrics = server.get("/metrics").await.text().await.expect("metrics");
    assert_eq!(metric(&metrics, "kv_connections"), 2, "{metrics}");
}

/// Connections of each kind the answer test opens: HTTP/1.1 listings,
/// batches and pipelined large GETs that never read, and HTTP/2
/// connections that grant no window, with 20 listings each.
const EACH: usize = 25;

// Real time: the server is a child process, whose resident memory is
// measured, and --send-timeout runs on its clock.
#[tokio::test(flavor = "multi_thread")]
async fn clients_that_never_read_cannot_pin_answers() {
    const BUDGET: u64 = 32 << 20;
    // Connections' own buffers, answers being built, the allocator's
    // pages not yet given back.
    const SLACK: u64 = 64 << 20;
    let budget = BUDGET.to_string();
    let server = common::process::ServerProcess::spawn(common::process::in_memory(&[
        "--answer-memory",
        &budget,
        "--send-timeout",
        "5s",
        // Connections whose (small) answers all left, for the kernel to
        // hold, are idle: closed too.
        "--idle-timeout",
        "5s",
    ]));
    let url = server.url.clone();
    let addr: SocketAddr = url
        .trim_start_matches("http://")
        .parse()
        .expect("an address");
    let client = reqwest::Client::new();
    let value = "v".repeat(1 << 20);
    for n in 0..48 {
        let put = client
            .put(format!("{url}/store/big%2F{n:02}"))
            .body(value.clone())
            .send()
            .await
            .expect("PUT");
        assert!(put.status().is_success());
    }
    // `None` while the budget is full: /metrics (over 16 KiB once a dozen
    // series exist) is refused like any other large answer.
    let metrics = async || {
        let answer = client
            .get(format!("{url}/metrics"))
            .send()
            .await
            .expect("metrics");
        if answer.status() == StatusCode::SERVICE_UNAVAILABLE {
            return None;
        }
        assert_eq!(answer.status(), StatusCode::OK);
        Some(answer.text().await.expect("text"))
    };
    let baseline = server.resident_bytes();

    let gets: Vec<Json> = (0..48)
        .map(|n| serde_json::json!({"method": "GET", "key": format!("big/{n:02}")}))
        .collect();
    let gets = Json::Array(gets).to_string();
    let batch = format!(
        "POST /batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{gets}",
        gets.len()
    );
    let requests = [
        b"GET /store?prefix=big/&limit=10000 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        batch.into_bytes(),
        b"GET /store/big%2F07 HTTP/1.1\r\nHost: x\r\n\r\n".repeat(4),
    ];
    let mut held = Vec::new();
    for request in &requests {
        for _ in 0..EACH {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket.set_recv_buffer_size(4096).expect("buffer size");
            let mut stream = socket.connect(addr).await.expect("connect");
            stream.write_all(request).await.expect("send");
            held.push(stream);
        }
    }
    let mut connections = Vec::new();
    for _ in 0..EACH {
        let (mut h2, connection) = h2_connect(addr, 0).await;
        let mut answers = Vec::new();
        for _ in 0..20 {
            let request = http::Request::get("http://kv-store/store?prefix=big/&limit=10000")
                .body(())
                .expect("a request");
            h2 = h2.ready().await.expect("the connection takes a stream");
            answers.push(h2.send_request(request, true).expect("sent").0);
        }
        connections.push((h2, connection, answers));
    }
    // Other clients are still served while the attack holds.
    let small = client
        .get(format!("{url}/store/big%2F00"))
        .header("range", "bytes=0-0")
        .send()
        .await
        .expect("GET");
    assert!(
        small.status() == StatusCode::OK || small.status() == StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        small.status()
    );
    assert_eq!(
        client
            .get(format!("{url}/healthz"))
            .send()
            .await
            .expect("GET")
            .status(),
        StatusCode::OK
    );

    // Until the server has closed every connection that took nothing.
    let (mut peak_resident, mut peak_answers) = (0, 0);
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            peak_resident = peak_resident.max(server.resident_bytes());
            if let Some(text) = metrics().await {
                peak_answers = peak_answers.max(metric(&text, "kv_answer_bytes"));
                if metric(&text, "kv_connections") <= 1 {
                    return text;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the server closes every connection that stopped reading");
    eprintln!(
        "resident: baseline {} MiB, peak {} MiB; answers: peak {} MiB of {} MiB",
        baseline >> 20,
        peak_resident >> 20,
        peak_answers >> 20,
        BUDGET >> 20
    );
    assert!(
        peak_resident <= baseline + BUDGET + SLACK,
        "resident {} MiB over a baseline of {} MiB",
        peak_resident >> 20,
        baseline >> 20
    );
    assert!(
        peak_answers >= BUDGET / 2,
        "the attack took hold: {peak_answers}"
    );
    assert!(peak_answers <= BUDGET + (1 << 20), "{peak_answers}");
    assert!(metric(&closed, "kv_refused_answers_total") > 0, "{closed}");
    // The HTTP/2 connections at least: each holds answers it never takes.
    // (An HTTP/1.1 one whose small answers all fit in the kernel's buffers
    // is idle instead, and closed at --idle-timeout.)
    assert!(
        metric(&closed, "kv_stalled_connections_total") >= EACH as u64,
        "{closed}"
    );
    assert_eq!(metric(&closed, "kv_answer_bytes"), 0, "{closed}");

    // The sockets were closed by the server, though no client read.
    for mut stream in held {
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut sink))
            .await
            .expect("closed by the server");
    }
    for (_, connection, answers) in connections {
        let _ = tokio::time::timeout(PATIENCE, connection)
            .await
            .expect("closed by the server");
        drop(answers);
    }
    // And the memory goes back to the allocator's pool, then the system.
    tokio::time::timeout(PATIENCE, async {
        while server.resident_bytes() > baseline + SLACK / 2 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("resident memory falls back");
}

/// Every response in `bytes`, each framed by its Content-Length (none: no
/// body, as for a 204 or a 304).
fn responses(mut bytes: &[u8]) -> Vec<Raw> {
    let mut all = Vec::new();
    while !bytes.is_empty() {
        let head_end = bytes
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .expect("a whole head")
            + 4;
        let head = parse(&bytes[..head_end]);
        let length: usize = head
            .header("content-length")
            .map_or(0, |length| length.parse().expect("a length"));
        all.push(parse(&bytes[..head_end + length]));
        bytes = &bytes[head_end + length..];
    }
    all
}

/// GET, PUT and DELETE of a plain key are served without hyper while a
/// connection's requests are such (the lean path), and by hyper once a
/// connection has sent anything else: two servers get the same requests,
/// one each way, pipelined on one connection, and every answer must be the
/// same but for its `Date`.
#[tokio::test]
async fn the_lean_path_answers_hot_requests_as_hyper_does() {
    let flags = ["--max-value-bytes", "8"];
    let (lean, hyper) = (
        TestServer::start(&flags).await,
        TestServer::start(&flags).await,
    );
    let tag = format!("\"{}\"", lean.base + 1);
    let requests: Vec<Vec<u8>> = vec![
        "GET /store/k HTTP/1.1\r\nHost: x\r\n\r\n".into(),
        "PUT /store/k HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nv1".into(),
        "PUT /store/k?ttl=60 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nv2".into(),
        "GET /store/k HTTP/1.1\r\nHost: x\r\n\r\n".into(),
        format!("GET /store/k HTTP/1.1\r\nHost: x\r\nIf-None-Match: {tag}\r\n\r\n").into(),
        format!(
            "PUT /store/k HTTP/1.1\r\nHost: x\r\nIf-Match: {tag}\r\nContent-Length: 1\r\n\r\nx"
        )
        .into(),
        "PUT /store/k HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\ntoo large".into(),
        b"PUT /store/k HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n\xff\xfe".to_vec(),
        "PUT /store/k HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".into(),
        "DELETE /store/k HTTP/1.1\r\nHost: x\r\nIf-Fence: nolock=1\r\n\r\n".into(),
        "DELETE /store/k HTTP/1.1\r\nHost: x\r\n\r\n".into(),
        "DELETE /store/k HTTP/1.1\r\nHost: x\r\n\r\n".into(),
        // Read by the lean path, refused by the hot lane (a key poem
        // decodes), put back for hyper, which serves the rest.
        "GET /store/k%31 HTTP/1.1\r\nHost: x\r\n\r\n".into(),
        "GET /store/k HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into(),
    ];
    let all = requests.concat();
    let healthz = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let lean_answers = responses(&exchange_all(lean.addr, &all).await);
    let hyper_answers = responses(&exchange_all(hyper.addr, &[&healthz[..], &all].concat()).await);
    assert_eq!(lean_answers.len(), requests.len(), "an answer to each");
    assert_eq!(hyper_answers.len(), requests.len() + 1, "and to /healthz");
    let seen = |raw: &Raw| {
        let headers: Vec<_> = raw
            .headers
            .iter()
            .filter(|(n, _)| n != "date")
            .cloned()
            .collect();
        (raw.status, headers, raw.body.clone())
    };
    for ((request, lean), hyper) in requests.iter().zip(&lean_answers).zip(&hyper_answers[1..]) {
        let request = String::from_utf8_lossy(request);
        assert_eq!(seen(lean), seen(hyper), "{request:?}: lean path vs hyper");
    }
    assert_eq!(lean_answers[3].status, 200, "the value read back");
}

/// Sends `bytes` on a new connection and reads what comes back to the close.
async fn exchange_all(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("send");
    read_to_close(&mut stream).await
}
