//! Serving until a signal: SIGINT or SIGTERM stop the server gracefully,
//! SIGHUP reloads the tokens and the certificate.

use std::time::Duration;

use super::start::{Running, StartError, start};
use crate::config::Config;

/// How long shutdown may take in all before [`run`] returns anyway.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(5);

/// Serves until SIGINT or SIGTERM, then shuts down gracefully. Fails only if
/// the server cannot start.
pub async fn run(config: &Config) -> Result<(), StartError> {
    let running = start(config).await?;
    // Installed before the address is logged: whoever waits for that line
    // may signal at once.
    let signal = shutdown_signal();
    let reloads = reloads(&running);
    tracing::info!(
        "kv-store {} listening on {}://{} (Swagger UI at /docs)",
        env!("CARGO_PKG_VERSION"),
        running.scheme(),
        running.local_addr
    );
    tokio::select! {
        () = signal => {}
        () = reloads => {}
    }
    tracing::info!("shutting down");
    running.stop();
    match tokio::time::timeout(SHUTDOWN_LIMIT, running.wait()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::error!(error = %err, "server failed while stopping"),
        Err(_) => tracing::warn!("connections still open after {SHUTDOWN_LIMIT:?}; exiting anyway"),
    }
    Ok(())
}

/// A future that resolves on SIGINT or SIGTERM; the handlers are installed
/// when this is called, not when the future is first polled.
/// Reloads on every SIGHUP; never completes. The handler is installed at
/// once (SIGHUP would otherwise end the process).
#[cfg(unix)]
fn reloads(running: &Running) -> impl Future<Output = ()> + '_ {
    use tokio::signal::unix::{SignalKind, signal};
    let hangups = signal(SignalKind::hangup());
    async move {
        match hangups {
            Ok(mut hangups) => {
                while hangups.recv().await.is_some() {
                    running.reload();
                }
            }
            Err(err) => tracing::warn!(error = %err, "cannot listen for SIGHUP: no reloads"),
        }
        std::future::pending().await
    }
}

#[cfg(not(unix))]
fn reloads(_: &Running) -> impl Future<Output = ()> + '_ {
    std::future::pending()
}

#[cfg(unix)]
fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let interrupt = signal(SignalKind::interrupt());
    let terminate = signal(SignalKind::terminate());
    async move {
        match (interrupt, terminate) {
            (Ok(mut interrupt), Ok(mut terminate)) => {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            }
            (interrupt, terminate) => {
                if let Some(err) = interrupt.err().or(terminate.err()) {
                    tracing::warn!(error = %err, "cannot listen for signals; falling back to Ctrl-C");
                }
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

#[cfg(not(unix))]
fn shutdown_signal() -> impl Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
