//! The listening socket: the address to bind, and how many connections
//! the open-file limit lets it hold.

use std::io;

use tokio::net::TcpListener;

use super::StartError;
use super::listener;
use crate::config::Config;

/// Binds the first address `listen` resolves to that accepts a bind.
pub(super) async fn bind(listen: &str) -> Result<TcpListener, StartError> {
    let addrs = tokio::net::lookup_host(listen).await.map_err(|err| {
        StartError::Io(io::Error::new(
            err.kind(),
            format!("cannot resolve --listen {listen:?} (write HOST:PORT or IP:PORT): {err}"),
        ))
    })?;
    let mut last = None;
    for addr in addrs {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(err) => {
                last = Some(io::Error::new(
                    err.kind(),
                    format!("cannot bind {addr}: {err}"),
                ))
            }
        }
    }
    Err(StartError::Io(last.unwrap_or_else(|| {
        io::Error::other(format!("--listen {listen:?} resolves to no address"))
    })))
}

/// The connection limit: `--max-connections`, or derived from the open-file
/// limit (raised to its hard limit first).
pub(super) fn max_connections(config: &Config) -> usize {
    let fd_limit = listener::raise_fd_limit();
    let max = match (config.max_connections, fd_limit) {
        (Some(max), Some(limit)) => {
            if max + listener::RESERVED_FDS > limit {
                tracing::warn!(
                    "--max-connections {max} is close to the open-file limit {limit}: accepting \
                     may run out of descriptors (it backs off and logs when it does)"
                );
            }
            max
        }
        (Some(max), None) => max,
        (None, Some(limit)) => listener::default_max_connections(limit),
        (None, None) => 1024,
    };
    usize::try_from(max).unwrap_or(usize::MAX)
}
