//! One timer for every watcher's heartbeat.

use std::time::Duration;

/// Calls `beat` once every `period`, for as long as it runs: the one timer
/// behind every watcher's heartbeat ([`Watchers::heartbeat`]).
pub async fn run_heartbeat(period: Duration, beat: impl Fn()) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        ticks.tick().await;
        beat();
    }
}
