//! Closing connections that take nothing of what they are sent
//! (`--send-timeout`): a full socket that stays full, or answers the HTTP
//! stack holds and never sends (an HTTP/2 client that grants no
//! flow-control window).
//!
//! One sweeper for every connection, ticking a few times per timeout,
//! rather than a timer per connection: the hot path only flips a flag when
//! a write finds the socket full and bumps a counter when it drains
//! ([`ConnShared::stall_tick`] has the rule).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::MissedTickBehavior;

use super::guarded_io::ConnShared;

/// The sweeper's period: a quarter of the timeout, within these bounds.
const MIN_TICK: Duration = Duration::from_millis(50);
const MAX_TICK: Duration = Duration::from_secs(1);

/// Every open connection, by the listener's id for it.
pub type OpenConnections = Arc<Mutex<HashMap<u64, Arc<ConnShared>>>>;

/// Closes every connection of `open` that has had something to send and
/// made no progress for `timeout`. Runs until the server drops it.
pub async fn sweep(open: OpenConnections, timeout: Duration) {
    let tick = (timeout / 4).clamp(MIN_TICK, MAX_TICK);
    let ticks = u32::try_from(timeout.as_nanos().div_ceil(tick.as_nanos())).unwrap_or(u32::MAX);
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let stalled: Vec<Arc<ConnShared>> = open
            .lock()
            .values()
            .filter(|conn| conn.stall_tick() >= ticks && !conn.is_aborted())
            .cloned()
            .collect();
        for conn in stalled {
            tracing::debug!("closing a connection that took nothing for --send-timeout");
            conn.counters().stalled();
            conn.abort();
        }
    }
}
