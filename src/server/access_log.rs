//! The access log: one line per request (when it was answered, who asked,
//! which operation, the status, the answer's bytes, how long it took;
//! never a value or a secret), in the server's log format.
//!
//! A request only formats its line into a shared buffer; a thread of its
//! own writes the buffer to stdout, many lines per `write`, at most
//! [`PERIOD`] later. Formatting and writing through `tracing` took more of
//! a GET's CPU than the 5% a log line may cost. A stdout nobody reads
//! must not grow the buffer: past [`MAX_BUFFERED`] lines are dropped, and
//! the server's log says how many.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex};

use crate::config::LogFormat;

/// How long a line may wait before it is written. Short enough that what
/// waits (about 2 500 lines at 120 000 requests a second) stays in the
/// cache: at 100 ms the buffer outgrew it and a GET paid twice as much.
const PERIOD: Duration = Duration::from_millis(20);

/// How long a stopping server waits for the last lines to be written.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Bytes of lines waiting for stdout, at most.
const MAX_BUFFERED: usize = 4 << 20;

/// One `write` carries at most this many bytes, ending at a line's end:
/// a pipe takes a write this small whole, so another writer's line (the
/// server's own log) never lands inside one of ours.
const MAX_WRITE: usize = 4096;

/// What one line says.
pub struct Line<'a> {
    pub client: Option<SocketAddr>,
    /// The token's name (never its secret); `None` without one.
    pub token: Option<&'a str>,
    pub operation: &'a str,
    pub status: u16,
    /// The answer's body, when its size is known (not a stream's).
    pub bytes: Option<u64>,
    pub micros: u64,
}

/// Lines waiting for stdout, and the time stamp of the last one's second
/// (formatting a date costs more than the rest of a line).
struct Pending {
    lines: Vec<u8>,
    second: u64,
    /// `2026-12-04T21:48:38` for `second`.
    stamp: [u8; 19],
}

struct Shared {
    format: LogFormat,
    buffer: Mutex<Pending>,
    wake: Condvar,
    dropped: AtomicU64,
    closing: std::sync::atomic::AtomicBool,
    /// Told when the writer has written its last lines and stopped.
    stopped: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

/// The access log, shared by every request. Cloning gives another handle.
#[derive(Clone)]
pub struct AccessLog(Arc<Shared>);

impl AccessLog {
    /// Starts the writer thread.
    pub fn start(format: LogFormat) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            format,
            buffer: Mutex::new(Pending {
                lines: Vec::with_capacity(64 << 10),
                second: u64::MAX,
                stamp: [b'0'; 19],
            }),
            wake: Condvar::new(),
            dropped: AtomicU64::new(0),
            closing: std::sync::atomic::AtomicBool::new(false),
            stopped: Mutex::new(None),
        });
        let writer = shared.clone();
        let (stop, stopped) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("kv-access-log".into())
            .spawn(move || {
                write_out(&writer);
                let _ = stop.send(());
            })?;
        *shared.stopped.lock() = Some(stopped);
        Ok(Self(shared))
    }

    /// Adds a request's line.
    pub fn record(&self, line: &Line<'_>) {
        let now = SystemTime::now();
        let mut pending = self.0.buffer.lock();
        if pending.lines.len() >= MAX_BUFFERED {
            drop(pending);
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let pending = &mut *pending;
        format_line(
            &mut pending.lines,
            (&mut pending.second, &mut pending.stamp),
            self.0.format,
            now,
            line,
        );
    }

    /// Stops the writer once it has written what waits (at shutdown),
    /// waiting for it at most [`CLOSE_WAIT`]: a stdout that takes nothing
    /// must not hold the server up.
    pub fn close(&self) {
        self.0.closing.store(true, Ordering::Relaxed);
        self.0.wake.notify_one();
        let stopped = self.0.stopped.lock().take();
        if let Some(stopped) = stopped {
            let _ = stopped.recv_timeout(CLOSE_WAIT);
        }
    }
}

/// The writer thread: every [`PERIOD`], what the requests wrote.
fn write_out(shared: &Shared) {
    let mut spare = Vec::with_capacity(64 << 10);
    loop {
        let closing = {
            let mut pending = shared.buffer.lock();
            if !shared.closing.load(Ordering::Relaxed) {
                shared.wake.wait_for(&mut pending, PERIOD);
            }
            std::mem::swap(&mut pending.lines, &mut spare);
            shared.closing.load(Ordering::Relaxed)
        };
        write_lines(&spare);
        spare.clear();
        if closing {
            return;
        }
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(dropped, "access-log lines dropped: stdout takes nothing");
        }
    }
}

/// Where the next `write` of `lines` ends: after the last whole line
/// within [`MAX_WRITE`] bytes (or there, for a longer line).
fn chunk_end(lines: &[u8]) -> usize {
    if lines.len() <= MAX_WRITE {
        return lines.len();
    }
    lines[..MAX_WRITE]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(MAX_WRITE, |at| at + 1)
}

/// Writes whole lines to stdout, [`MAX_WRITE`] bytes or fewer at a time.
fn write_lines(mut lines: &[u8]) {
    let mut stdout = std::io::stdout().lock();
    while !lines.is_empty() {
        let end = chunk_end(lines);
        // A closed stdout is no reason to stop serving.
        if stdout.write_all(&lines[..end]).is_err() {
            return;
        }
        lines = &lines[end..];
    }
    let _ = stdout.flush();
}

/// The line, as the server's own log writes its lines: `tracing`'s text
/// format (`2026-12-04T21:48:38.123456Z  INFO kv_store::access: k=v ...`)
/// or its JSON one.
fn format_line(
    out: &mut Vec<u8>,
    (second, stamp): (&mut u64, &mut [u8; 19]),
    format: LogFormat,
    now: SystemTime,
    line: &Line<'_>,
) {
    let mut number = itoa::Buffer::new();
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    if since.as_secs() != *second {
        *second = since.as_secs();
        let whole = UNIX_EPOCH + Duration::from_secs(*second);
        let text = humantime::format_rfc3339_seconds(whole).to_string();
        if let Some(date) = text.as_bytes().get(..19) {
            stamp.copy_from_slice(date);
        }
    }
    // `.123456Z`: the microseconds, zero-padded.
    let micros = since.subsec_micros();
    let mut fraction = [b'.', b'0', b'0', b'0', b'0', b'0', b'0', b'Z'];
    let digits = number.format(micros).as_bytes();
    fraction[7 - digits.len()..7].copy_from_slice(digits);
    match format {
        LogFormat::Text => {
            out.extend_from_slice(stamp);
            out.extend_from_slice(&fraction);
            out.extend_from_slice(b"  INFO kv_store::access: client=");
            match line.client {
                Some(SocketAddr::V4(client)) => {
                    for (n, octet) in client.ip().octets().into_iter().enumerate() {
                        if n > 0 {
                            out.push(b'.');
                        }
                        out.extend_from_slice(number.format(octet).as_bytes());
                    }
                    out.push(b':');
                    out.extend_from_slice(number.format(client.port()).as_bytes());
                }
                Some(client) => {
                    let _ = write!(out, "{client}");
                }
                None => out.push(b'-'),
            }
            out.extend_from_slice(b" token=");
            out.extend_from_slice(line.token.unwrap_or("-").as_bytes());
            out.extend_from_slice(b" operation=");
            out.extend_from_slice(line.operation.as_bytes());
            out.extend_from_slice(b" status=");
            out.extend_from_slice(number.format(line.status).as_bytes());
            out.extend_from_slice(b" bytes=");
            match line.bytes {
                Some(bytes) => out.extend_from_slice(number.format(bytes).as_bytes()),
                None => out.push(b'-'),
            }
            out.extend_from_slice(b" micros=");
            out.extend_from_slice(number.format(line.micros).as_bytes());
            out.push(b'\n');
        }
        LogFormat::Json => {
            let fields = serde_json::json!({
                "client": line.client.map(|client| client.to_string()),
                "token": line.token,
                "operation": line.operation,
                "status": line.status,
                "bytes": line.bytes,
                "micros": line.micros,
            });
            let mut timestamp = stamp.to_vec();
            timestamp.extend_from_slice(&fraction);
            let record = serde_json::json!({
                "timestamp": String::from_utf8_lossy(&timestamp),
                "level": "INFO",
                "fields": fields,
                "target": "kv_store::access",
            });
            let _ = serde_json::to_writer(&mut *out, &record);
            out.push(b'\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> Line<'static> {
        Line {
            client: "127.0.0.1:5000".parse().ok(),
            token: Some("deploy-bot"),
            operation: "get_key",
            status: 200,
            bytes: Some(5),
            micros: 21,
        }
    }

    #[test]
    fn a_line_in_each_format() {
        let at = UNIX_EPOCH + Duration::from_micros(1_733_348_918_123_456);
        let mut text = Vec::new();
        let mut clock = (u64::MAX, [b'0'; 19]);
        format_line(
            &mut text,
            (&mut clock.0, &mut clock.1),
            LogFormat::Text,
            at,
            &line(),
        );
        assert_eq!(
            String::from_utf8_lossy(&text),
            "2024-12-04T21:48:38.123456Z  INFO kv_store::access: client=127.0.0.1:5000 \
             token=deploy-bot operation=get_key status=200 bytes=5 micros=21\n"
        );
        let mut json = Vec::new();
        let streamed = Line {
            bytes: None,
            token: None,
            ..line()
        };
        format_line(
            &mut json,
            (&mut clock.0, &mut clock.1),
            LogFormat::Json,
            at,
            &streamed,
        );
        let parsed: serde_json::Value = serde_json::from_slice(&json).expect("JSON");
        assert_eq!(
            parsed,
            serde_json::json!({
                "timestamp": "2024-12-04T21:48:38.123456Z",
                "level": "INFO",
                "target": "kv_store::access",
                "fields": {"client": "127.0.0.1:5000", "token": null, "operation": "get_key",
                           "status": 200, "bytes": null, "micros": 21}
            })
        );
    }

    #[test]
    fn long_runs_of_lines_are_cut_at_line_ends() {
        let mut lines = Vec::new();
        let mut clock = (u64::MAX, [b'0'; 19]);
        while lines.len() < 3 * MAX_WRITE {
            let now = SystemTime::now();
            format_line(
                &mut lines,
                (&mut clock.0, &mut clock.1),
                LogFormat::Text,
                now,
                &line(),
            );
        }
        let mut rest = &lines[..];
        let mut writes = 0;
        while !rest.is_empty() {
            let end = chunk_end(rest);
            assert!(end <= MAX_WRITE);
            assert_eq!(rest[end - 1], b'\n', "a write ends with a line");
            rest = &rest[end..];
            writes += 1;
        }
        assert!(writes >= 3);
        let long = vec![b'x'; MAX_WRITE + 10];
        assert_eq!(
            chunk_end(&long),
            MAX_WRITE,
            "a line longer than a write is cut"
        );
    }
}
