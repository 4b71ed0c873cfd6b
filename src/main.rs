//! The `kv-store` binary: reads the configuration and runs the server.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use kv_store::config::{Config, LogFormat};
use kv_store::{api, server};
use tracing_subscriber::EnvFilter;

/// How long shutdown may take in all before the process exits anyway.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    if config.print_openapi {
        println!("{}", api::spec_json());
        return ExitCode::SUCCESS;
    }
    init_logging(config.log_format);

    let running = match server::start(&config).await {
        Ok(running) => running,
        Err(err) => {
            tracing::error!(listen = %config.listen, error = %err, "cannot start the server");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        "kv-store {} listening on http://{} (Swagger UI at /docs)",
        env!("CARGO_PKG_VERSION"),
        running.local_addr
    );

    shutdown_signal().await;
    tracing::info!("shutting down");
    running.stop();
    match tokio::time::timeout(SHUTDOWN_LIMIT, running.wait()).await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(err)) => {
            tracing::error!(error = %err, "server failed");
            ExitCode::FAILURE
        }
        Err(_) => {
            tracing::warn!("connections still open after {SHUTDOWN_LIMIT:?}; exiting anyway");
            ExitCode::SUCCESS
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
