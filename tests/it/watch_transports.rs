//! A watch answers the same however it reaches the server: on an HTTP/1.1
//! connection that opens with it (the lean path, which writes the stream
//! itself), on one that served another request first (hyper), over h2c,
//! and over TLS with HTTP/1.1 (lean) and h2 (ALPN). Each transport runs
//! the same story on a fresh server — snapshot, events and their ids, a
//! heartbeat, a resume with `Last-Event-ID`, a client too slow to keep up
//! dropped and resumed without loss, shutdown ending the streams cleanly —
//! and what curl receives is compared with what it must be.

use std::io::Read;
use std::process::{Child, ChildStdout, Command, Stdio};

use crate::common::pki::{Pki, path_str};
use crate::common::{PATIENCE, TestServer};
use tokio::sync::mpsc;

#[derive(Clone, Copy, Debug)]
enum Transport {
    /// HTTP/1.1, the watch as the connection's first request.
    Lean,
    /// HTTP/1.1, after a request hyper served on the same connection.
    Hyper,
    H2c,
    /// HTTPS, HTTP/1.1 (the lean path behind TLS).
    TlsLean,
    /// HTTPS, h2 by ALPN.
    TlsH2,
}

const ALL: [Transport; 5] = [
    Transport::Lean,
    Transport::Hyper,
    Transport::H2c,
    Transport::TlsLean,
    Transport::TlsH2,
];

impl Transport {
    fn is_lean(self) -> bool {
        matches!(self, Self::Lean | Self::TlsLean)
    }

    fn is_tls(self) -> bool {
        matches!(self, Self::TlsLean | Self::TlsH2)
    }
}

/// A server for `transport` with `flags` (over TLS with a certificate of
/// `pki`), and the base URL to reach it.
async fn server(transport: Transport, pki: &Pki, flags: &[&str]) -> (TestServer, String) {
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let mut all = flags.to_vec();
    if transport.is_tls() {
        all.extend(["--tls-cert", path_str(&cert), "--tls-key", path_str(&key)]);
    }
    let server = TestServer::start_memory(&all).await;
    let scheme = if transport.is_tls() { "https" } else { "http" };
    let base = format!("{scheme}://127.0.0.1:{}", server.addr.port());
    (server, base)
}

/// A request through curl on `transport` (the test's own client speaks no
/// TLS); what the server answered.
async fn call(transport: Transport, pki: &Pki, base: &str, args: &[&str]) -> String {
    let mut command = Command::new("curl");
    command.args(["-s", "--fail-with-body", "--max-time", "30"]);
    if transport.is_tls() {
        command.args(["--cacert", path_str(&pki.path("ca.pem"))]);
    }
    let (url_at, args): (usize, Vec<String>) = (
        args.len() - 1,
        args.iter().map(|arg| (*arg).to_owned()).collect(),
    );
    for (i, arg) in args.into_iter().enumerate() {
        command.arg(if i == url_at {
            format!("{base}{arg}")
        } else {
            arg
        });
    }
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("ran")
        .expect("curl runs");
    assert!(output.status.success(), "curl: {output:?}");
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// A watch read through curl, block by block, as a user would see it.
///
/// curl's output is read only when the test asks for the next block: a
/// test that stops asking leaves curl blocked on its full stdout, so that
/// it stops reading its socket, as a stalled client does.
struct CurlWatch {
    child: Child,
    /// Asks the reader thread for one more read of curl's stdout.
    demand: std::sync::mpsc::Sender<()>,
    chunks: mpsc::UnboundedReceiver<Vec<u8>>,
    buffer: Vec<u8>,
    headers: tempfile::NamedTempFile,
}

impl CurlWatch {
    fn open(transport: Transport, pki: &Pki, base: &str, path: &str, headers: &[&str]) -> Self {
        let dump = tempfile::NamedTempFile::new().expect("a header file");
        let mut command = Command::new("curl");
        command
            .args(["-s", "-N", "--max-time", "60", "-D"])
            .arg(dump.path());
        command.arg(match transport {
            Transport::Lean | Transport::Hyper | Transport::TlsLean => "--http1.1",
            Transport::H2c => "--http2-prior-knowledge",
            Transport::TlsH2 => "--http2",
        });
        if transport.is_tls() {
            command.args(["--cacert", path_str(&pki.path("ca.pem"))]);
        }
        for header in headers {
            command.args(["-H", header]);
        }
        if let Transport::Hyper = transport {
            // The same connection serves /healthz (through hyper) first.
            command.args(["-o", "/dev/null", &format!("{base}/healthz")]);
        }
        command.arg(format!("{base}{path}"));
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("curl runs (Debian: apt-get install curl)");
        let stdout = child.stdout.take().expect("piped");
        let (demand, wanted) = std::sync::mpsc::channel();
        let (tx, chunks) = mpsc::unbounded_channel();
        std::thread::spawn(move || read_on_demand(stdout, &wanted, &tx));
        Self {
            child,
            demand,
            chunks,
            buffer: Vec::new(),
            headers: dump,
        }
    }

    /// The next SSE block (comments as `:`), or `None` at the end of the
    /// stream.
    async fn block(&mut self) -> Option<String> {
        loop {
            if let Some(at) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..at + 2).take(at).collect();
                let text = String::from_utf8(block).expect("UTF-8 events");
                return Some(if text.starts_with(':') {
                    ":".to_owned()
                } else {
                    text
                });
            }
            let _ = self.demand.send(());
            let chunk = tokio::time::timeout(PATIENCE, self.chunks.recv())
                .await
                .expect("a block or the end of the stream within the patience limit");
            self.buffer.extend(chunk?);
        }
    }

    async fn blocks(&mut self, n: usize) -> Vec<String> {
        let mut blocks = Vec::with_capacity(n);
        for _ in 0..n {
            blocks.push(self.block().await.expect("the stream is still open"));
        }
        blocks
    }

    /// Reads to the end of the stream; the blocks still to come, and
    /// curl's exit code.
    async fn finish(mut self) -> (Vec<String>, Option<i32>) {
        let mut rest = Vec::new();
        while let Some(block) = self.block().await {
            rest.push(block);
        }
        let code = tokio::task::spawn_blocking(move || self.child.wait().expect("curl exits"))
            .await
            .expect("waited")
            .code();
        (rest, code)
    }

    /// The response's headers that mean something to a client (not the
    /// date or how the body is framed), lowercased and sorted.
    fn headers(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.headers.path()).expect("the dumped headers");
        // The watch's own: after the last status line (curl dumps every
        // response's).
        let last = text.rfind("HTTP/").unwrap_or(0);
        let mut headers: Vec<String> = text[last..]
            .lines()
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| format!("{}: {}", name.to_lowercase(), value.trim()))
            .filter(|header| {
                ![
                    "date:",
                    "transfer-encoding:",
                    "content-length:",
                    "connection:",
                ]
                .iter()
                .any(|skip| header.starts_with(skip))
            })
            .collect();
        headers.sort();
        headers
    }
}

/// One read of curl's stdout per demand, until it ends.
fn read_on_demand(
    mut stdout: ChildStdout,
    wanted: &std::sync::mpsc::Receiver<()>,
    chunks: &mpsc::UnboundedSender<Vec<u8>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    while wanted.recv().is_ok() {
        match stdout.read(&mut buf) {
            Ok(n @ 1..) => {
                if chunks.send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
            _ => return,
        }
    }
}

fn put_event(revision: u64, value: &str, created: u64, version: u64) -> String {
    format!(
        "id: {revision}\nevent: put\ndata: {{\"key\":\"k\",\"value\":\"{value}\",\"revision\":{revision},\"create_revision\":{created},\"version\":{version}}}"
    )
}

async fn lean_watch_requests(transport: Transport, pki: &Pki, base: &str) -> u64 {
    let text = call(transport, pki, base, &["/metrics"]).await;
    text.lines()
        .find_map(|line| line.strip_prefix("kv_lean_watch_requests_total "))
        .and_then(|n| n.parse().ok())
        .expect("the lean path's counter")
}

// Real time: the client is curl, a child process, and the heartbeat is
// waited for as it sees it.
#[tokio::test(flavor = "multi_thread")]
async fn every_transport_sees_the_same_events_heartbeats_resume_and_shutdown() {
    let pki = Pki::new();
    pki.issue("server", "kv-store", false, false);
    for transport in ALL {
        let (server, base) = server(transport, &pki, &["--watch-heartbeat", "300ms"]).await;
        call(
            transport,
            &pki,
            &base,
            &["-X", "PUT", "-d", "v1", "/store/k"],
        )
        .await;

        let mut watch = CurlWatch::open(transport, &pki, &base, "/watch_key/k", &[]);
        assert_eq!(
            watch.blocks(2).await,
            [
                "event: snapshot\ndata: {\"key\":\"k\",\"value\":\"v1\",\"revision\":1,\"create_revision\":1,\"version\":1}",
                "id: 1\nevent: sync\ndata: {\"revision\":1}"
            ],
            "{transport:?}"
        );
        call(
            transport,
            &pki,
            &base,
            &["-X", "PUT", "-d", "v2", "/store/k"],
        )
        .await;
        call(transport, &pki, &base, &["-X", "DELETE", "/store/k"]).await;
        let delete = "id: 3\nevent: delete\ndata: {\"key\":\"k\",\"value\":null,\"revision\":3}";
        assert_eq!(
            watch.blocks(3).await,
            [put_event(2, "v2", 1, 2).as_str(), delete, ":"],
            "{transport:?}: two events, then (idle) a heartbeat"
        );

        let mut resumed = CurlWatch::open(
            transport,
            &pki,
            &base,
            "/watch_key/k",
            &["Last-Event-ID: 2"],
        );
        assert_eq!(resumed.blocks(2).await, [delete, ":"], "{transport:?}");

        let lean = lean_watch_requests(transport, &pki, &base).await;
        assert_eq!(
            lean,
            if transport.is_lean() { 2 } else { 0 },
            "{transport:?}"
        );

        let headers = watch.headers();
        assert_eq!(
            headers,
            [
                "cache-control: no-cache",
                "content-type: text/event-stream",
                "x-accel-buffering: no"
            ],
            "{transport:?}"
        );
        assert_eq!(resumed.headers(), headers, "{transport:?}");

        // Shutdown ends both streams cleanly: nothing more, curl content.
        server.stop().await;
        for stream in [watch, resumed] {
            let (rest, code) = stream.finish().await;
            assert!(
                rest.iter().all(|block| block == ":"),
                "{transport:?}: {rest:?}"
            );
            assert_eq!(code, Some(0), "{transport:?}: the stream ended, not cut");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_transport_drops_a_client_that_stops_reading_and_it_resumes_without_loss() {
    const WRITES: u64 = 100;
    let pki = Pki::new();
    pki.issue("server", "kv-store", false, false);
    let value = tempfile::NamedTempFile::new().expect("a value file");
    std::fs::write(value.path(), "x".repeat(256 * 1024)).expect("written");
    let value = format!("@{}", path_str(value.path()));
    for transport in ALL {
        let (server, base) = server(transport, &pki, &["--watch-queue-bytes", "65536"]).await;
        // Read the snapshot, then stop reading: curl blocks on its full
        // stdout pipe and the socket backs up to the server.
        let mut slow = CurlWatch::open(transport, &pki, &base, "/watch_key/k", &[]);
        assert_eq!(slow.blocks(2).await.len(), 2);
        for _ in 0..WRITES {
            let put = ["-X", "PUT", "--data-binary", &value, "/store/k"];
            call(transport, &pki, &base, &put).await;
        }

        let mut seen = Vec::new();
        let (rest, code) = slow.finish().await;
        for block in rest {
            let id = block
                .strip_prefix("id: ")
                .and_then(|rest| rest.split_once('\n'))
                .map(|(id, _)| id.parse::<u64>().expect("a revision"));
            seen.extend(id);
        }
        let got = seen.len() as u64;
        assert_ne!(
            code,
            Some(0),
            "{transport:?}: the server cut the stream (after {got})"
        );
        assert!(got < WRITES, "{transport:?}: dropped before the end");
        assert_eq!(
            seen,
            (1..=got).collect::<Vec<_>>(),
            "{transport:?}: in order"
        );
        let status: serde_json::Value =
            serde_json::from_str(&call(transport, &pki, &base, &["/status"]).await).expect("JSON");
        assert!(status["dropped_watchers"].as_u64() >= Some(1), "{status}");

        let last = format!("Last-Event-ID: {got}");
        let mut resumed = CurlWatch::open(transport, &pki, &base, "/watch_key/k", &[&last]);
        for revision in got + 1..=WRITES {
            let block = resumed.block().await.expect("the rest");
            assert!(
                block.starts_with(&format!("id: {revision}\nevent: put\n")),
                "{transport:?}: {}",
                &block[..40.min(block.len())]
            );
        }
        server.stop().await;
        let (rest, code) = resumed.finish().await;
        assert!(rest.iter().all(|block| block == ":"));
        assert_eq!(code, Some(0));
    }
}
