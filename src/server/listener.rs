//! Accepting connections: at most `--max-connections` at once, an answer
//! at once for the one over, and no spinning when file descriptors run out.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use poem::{Endpoint, Response};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::conn_config::ConnConfig;
use super::connection;
use super::guarded_io::ConnShared;
use super::raw_response::{self, RawProblem};
use super::stalls::{self, OpenConnections};
use crate::backend::Backend;
use crate::metrics::ConnectionCounters;

/// How long accepting pauses when the process or system has no file
/// descriptor left.
const EXHAUSTED_BACKOFF: Duration = Duration::from_millis(100);

/// At most one log line per this long about running out of descriptors.
const EXHAUSTED_LOG_EVERY: Duration = Duration::from_secs(10);

/// How long a refused connection is kept to read what the client sent, so
/// that closing it does not reset the 503 away before the client reads it.
const REFUSED_LINGER: Duration = Duration::from_secs(1);

/// Descriptors kept back from the connection limit for the listener, the
/// data dir, logs and refusing connections over the limit.
pub const RESERVED_FDS: u64 = 64;

/// Raises the open-file soft limit to the hard limit, as Go's runtime and
/// nginx do, and returns the limit now in force (`None` where there is no
/// such limit).
pub fn raise_fd_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(err) => {
            tracing::warn!(error = %err, "cannot read or raise the open-file limit");
            None
        }
    }
}

/// The default `--max-connections` for an open-file limit: all but
/// [`RESERVED_FDS`] descriptors, and at least half of them.
pub fn default_max_connections(fd_limit: u64) -> u64 {
    fd_limit
        .saturating_sub(RESERVED_FDS)
        .max(fd_limit / 2)
        .max(1)
}

/// Accepts on `listener` until `shutdown`, then waits up to `grace` for
/// the connections to finish their requests.
pub async fn run<E, B>(
    listener: TcpListener,
    config: Arc<ConnConfig<E, B>>,
    max_connections: usize,
    counters: Arc<ConnectionCounters>,
    shutdown: CancellationToken,
    grace: Duration,
) where
    E: Endpoint<Output = Response> + 'static,
    B: Backend,
{
    let permits = Arc::new(Semaphore::new(max_connections));
    let tracker = TaskTracker::new();
    // Every open connection, to tell each one when the server stops, and
    // for the stall sweeper.
    let open: OpenConnections = Arc::default();
    tokio::spawn(
        shutdown
            .clone()
            .run_until_cancelled_owned(stalls::sweep(open.clone(), config.timeouts.send)),
    );
    let mut next_id = 0u64;
    let mut exhausted = Exhausted::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) if is_exhaustion(&err) => {
                exhausted.note(&err);
                tokio::select! {
                    () = tokio::time::sleep(EXHAUSTED_BACKOFF) => {}
                    () = shutdown.cancelled() => break,
                }
                continue;
            }
            Err(err) => {
                // The client gave up before we took the connection
                // (ECONNABORTED and the like): nothing to do.
                tracing::debug!(error = %err, "accept failed");
                continue;
            }
        };
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                counters.opened();
                next_id += 1;
                let id = next_id;
                let shared = Arc::new(ConnShared::new(counters.clone()));
                open.lock().insert(id, shared.clone());
                let config = config.clone();
                let counters = counters.clone();
                let open = open.clone();
                tracker.spawn(async move {
                    connection::serve(config, stream, peer, shared).await;
                    open.lock().remove(&id);
                    counters.closed();
                    drop(permit);
                });
            }
            Err(_) => {
                counters.rejected();
                tracker.spawn(refuse(stream, peer));
            }
        }
    }
    drop(listener);
    for conn in open.lock().values() {
        conn.shut_down();
    }
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("requests still in flight after {grace:?}; closing their connections");
    }
}

/// Answers a connection over the limit with 503 and closes it.
async fn refuse(mut stream: TcpStream, peer: SocketAddr) {
    let answer = raw_response::problem(RawProblem::TooManyConnections);
    if stream.write_all(&answer).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    tracing::debug!(%peer, "refused a connection over --max-connections");
    // Read (and drop) what the client sends until it closes, briefly:
    // closing with unread bytes would reset the connection.
    let mut sink = [0u8; 1024];
    let _ = tokio::time::timeout(REFUSED_LINGER, async {
        while matches!(tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await, Ok(n) if n > 0)
        {
        }
    })
    .await;
}

/// Whether an accept failed for want of descriptors or memory, which
/// retrying at once cannot fix.
fn is_exhaustion(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Rate-limits the log line about descriptor exhaustion.
#[derive(Default)]
struct Exhausted {
    last_log: Option<Instant>,
    since_log: u64,
}

impl Exhausted {
    fn note(&mut self, err: &io::Error) {
        self.since_log += 1;
        if self
            .last_log
            .is_some_and(|at| at.elapsed() < EXHAUSTED_LOG_EVERY)
        {
            return;
        }
        tracing::error!(
            error = %err,
            times = self.since_log,
            "cannot accept connections: out of file descriptors; raise the open-file \
             limit (ulimit -n) or lower --max-connections"
        );
        self.last_log = Some(Instant::now());
        self.since_log = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_limit_keeps_descriptors_back() {
        assert_eq!(default_max_connections(1024), 960);
        assert_eq!(default_max_connections(64), 32);
        assert_eq!(default_max_connections(1), 1);
    }
}
