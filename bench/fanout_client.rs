//! Watch fan-out benchmark: opens many SSE watchers of one key, then writes
//! the key once and measures how long each watcher takes to see the event.
//! Prints one JSON line. Run by `bench/run.py`, which raises the fd limit.
//!
//! `cargo run --release -p kv-bench --bin fanout_client -- ADDR WATCHERS SERVER_PID [READY EVENT]`
//! (READY and EVENT: the text that marks a watch as open and the PUT's
//! event; by default kv-store's `event: snapshot` and `event: put`).
//! With `FANOUT_HOLD=1` it says `ready` on stderr once every watch is open
//! and waits for a line on stdin before the PUT, and for stdin to close
//! before it closes the watches, so that a profiler sees the burst alone.
//! With `FANOUT_H2_STREAMS=N` the watches are HTTP/2 streams (h2c), N to a
//! connection (the server takes 200): more watchers than file descriptors.
//! With `FANOUT_WATCH=prefix` each watches the key's prefix
//! (`GET /watch?prefix=`), with `FANOUT_WATCH=keys` a set of ten keys with
//! the key among them and a prefix that matches nothing (`POST /watch`);
//! give READY as `event: sync` then, the end of a watch's snapshot.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;

/// Connections per source address, well under the ephemeral port range.
const PER_SOURCE: usize = 20_000;
const KEY: &str = "fanout";

/// What each watcher watches (`FANOUT_WATCH`).
#[derive(Clone, Copy)]
enum WatchShape {
    Key,
    Prefix,
    Keys,
}

impl WatchShape {
    fn from_env() -> std::io::Result<Self> {
        match std::env::var("FANOUT_WATCH").as_deref() {
            Err(_) | Ok("key") => Ok(Self::Key),
            Ok("prefix") => Ok(Self::Prefix),
            Ok("keys") => Ok(Self::Keys),
            Ok(other) => Err(std::io::Error::other(format!(
                "FANOUT_WATCH={other}: expected key, prefix or keys"
            ))),
        }
    }

    fn path(self) -> String {
        match self {
            Self::Key => format!("/watch_key/{KEY}"),
            // The key less its last character: a prefix of it alone.
            Self::Prefix => format!("/watch?prefix={}", &KEY[..KEY.len() - 1]),
            Self::Keys => "/watch".to_owned(),
        }
    }

    fn body(self) -> Option<String> {
        matches!(self, Self::Keys).then(|| {
            let others: Vec<String> = (1..10).map(|n| format!("\"{KEY}-other-{n}\"")).collect();
            format!(
                "{{\"keys\":[\"{KEY}\",{}],\"prefixes\":[\"elsewhere/\"]}}",
                others.join(",")
            )
        })
    }

    /// The request on the wire, for HTTP/1.1.
    fn request(self) -> String {
        let path = self.path();
        match self.body() {
            Some(body) => format!(
                "POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            ),
            None => format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n"),
        }
    }
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

/// CPU time (user + system) the process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

async fn connect(server: SocketAddr, index: usize) -> std::io::Result<TcpStream> {
    let source = Ipv4Addr::new(127, 0, 0, 1 + (index / PER_SOURCE) as u8);
    let socket = TcpSocket::new_v4()?;
    // Closed with a reset: rounds run back to back, and ten thousand
    // TIME_WAIT ports per round would leave the next none to bind.
    socket.set_zero_linger()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Reads until `marker` has arrived; returns what came after it.
async fn read_until(
    stream: &mut TcpStream,
    seen: &mut Vec<u8>,
    marker: &[u8],
) -> std::io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(at) = seen.windows(marker.len()).position(|w| w == marker) {
            seen.drain(..at + marker.len());
            return Ok(());
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::other("stream closed"));
        }
        seen.extend_from_slice(&buf[..n]);
    }
}

// One thread: the client's own cost per watcher (a wake and a read) is what
// it adds to the latency it measures, and cross-thread wakes would add more.
/// [`read_until`] for an HTTP/2 response body.
async fn read_body_until(
    body: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    seen: &mut Vec<u8>,
    marker: &[u8],
) -> std::io::Result<()> {
    use futures_util::StreamExt;
    loop {
        if let Some(at) = seen.windows(marker.len()).position(|w| w == marker) {
            seen.drain(..at + marker.len());
            return Ok(());
        }
        match body.next().await {
            Some(Ok(chunk)) => seen.extend_from_slice(&chunk),
            _ => return Err(std::io::Error::other("stream closed")),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let server: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:3201".to_owned())
        .parse()
        .map_err(std::io::Error::other)?;
    let watchers: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let pid: u32 = args.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    // What marks a watch as open and the PUT's event, so another server
    // (the seed, as an anchor: `event: WATCH key`, `event: PUT key`) can be
    // measured the same way.
    let ready: Arc<[u8]> = args
        .next()
        .unwrap_or_else(|| "event: snapshot".to_owned())
        .into_bytes()
        .into();
    let event: Arc<[u8]> = args
        .next()
        .unwrap_or_else(|| "event: put".to_owned())
        .into_bytes()
        .into();

    let before = rss_bytes(pid);
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<()>();
    let (start_tx, _) = tokio::sync::broadcast::channel::<Instant>(1);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Duration>();
    // Watchers keep their connections until every one has its event, so
    // the server's burst is deliveries only, not deliveries and closes.
    let (finish_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let h2_streams: Option<usize> = std::env::var("FANOUT_H2_STREAMS")
        .ok()
        .and_then(|n| n.parse().ok());
    let shape = WatchShape::from_env()?;
    let mut h2_client = None;
    for index in 0..watchers {
        if let Some(per_connection) = h2_streams {
            if index % per_connection.max(1) == 0 {
                h2_client = Some(
                    reqwest::Client::builder()
                        .http2_prior_knowledge()
                        .build()
                        .map_err(std::io::Error::other)?,
                );
            }
            let Some(client) = h2_client.clone() else {
                continue;
            };
            let (ready_tx, done_tx) = (ready_tx.clone(), done_tx.clone());
            let mut start = start_tx.subscribe();
            let mut finish = finish_tx.subscribe();
            let (ready, event) = (ready.clone(), event.clone());
            tokio::spawn(async move {
                let url = format!("http://{server}{}", shape.path());
                let request = match shape.body() {
                    Some(body) => client
                        .post(url)
                        .header("content-type", "application/json")
                        .body(body),
                    None => client.get(url),
                };
                let Ok(response) = request.send().await else {
                    return;
                };
                let mut body = response.bytes_stream();
                let mut seen = Vec::new();
                if read_body_until(&mut body, &mut seen, &ready).await.is_err() {
                    return;
                }
                let _ = ready_tx.send(());
                let Ok(started) = start.recv().await else {
                    return;
                };
                if read_body_until(&mut body, &mut seen, &event).await.is_ok() {
                    let _ = done_tx.send(started.elapsed());
                }
                let _ = finish.recv().await;
            });
            continue;
        }
        let mut stream = connect(server, index).await?;
        let (ready_tx, done_tx) = (ready_tx.clone(), done_tx.clone());
        let mut start = start_tx.subscribe();
        let mut finish = finish_tx.subscribe();
        let (ready, event) = (ready.clone(), event.clone());
        tokio::spawn(async move {
            let request = shape.request();
            let mut seen = Vec::new();
            if stream.write_all(request.as_bytes()).await.is_err()
                || read_until(&mut stream, &mut seen, &ready).await.is_err()
            {
                return;
            }
            let _ = ready_tx.send(());
            let Ok(started) = start.recv().await else {
                return;
            };
            if read_until(&mut stream, &mut seen, &event).await.is_ok() {
                let _ = done_tx.send(started.elapsed());
            }
            let _ = finish.recv().await;
        });
    }
    drop((ready_tx, done_tx));
    for _ in 0..watchers {
        if ready_rx.recv().await.is_none() {
            break;
        }
    }
    let after = rss_bytes(pid);
    let hold = std::env::var_os("FANOUT_HOLD").is_some();
    if hold {
        eprintln!("ready");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
    }

    let mut writer = TcpStream::connect(server).await?;
    writer.set_nodelay(true)?;
    let put = format!("PUT /store/{KEY} HTTP/1.1\r\nHost: bench\r\nContent-Length: 5\r\n\r\nhello");
    let cpu_before = cpu_ticks(pid);
    let started = Instant::now();
    let _ = start_tx.send(started);
    writer.write_all(put.as_bytes()).await?;

    let mut latencies = Vec::with_capacity(watchers);
    while let Ok(Some(latency)) =
        tokio::time::timeout(Duration::from_secs(30), done_rx.recv()).await
    {
        latencies.push(latency.as_secs_f64() * 1000.0);
        if latencies.len() == watchers {
            break;
        }
    }
    let burst_cpu_ms = (cpu_ticks(pid) - cpu_before) as f64 * 10.0;
    let _ = finish_tx.send(());
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "{{\"watchers\": {watchers}, \"received\": {}, \"rss_before\": {before}, \"rss_after\": {after}, \
         \"bytes_per_watcher\": {:.0}, \"p50_ms\": {:.2}, \"p99_ms\": {:.2}, \"max_ms\": {:.2}, \"server_cpu_ms\": {burst_cpu_ms:.0}}}",
        latencies.len(),
        after.saturating_sub(before) as f64 / watchers as f64,
        at(0.50),
        at(0.99),
        at(1.0)
    );
    if hold {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut rest)?;
    }
    Ok(())
}
