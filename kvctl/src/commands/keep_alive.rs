//! Keeping a lease alive, for `kvctl lease keep-alive` and `kvctl lock`.

use std::time::Duration;

use kv_store_client::types::KeepLeaseAliveId;
use tokio::time::Instant;

use super::Ctx;
use crate::connect::Patience;
use crate::failure::Failure;

/// Renews the lease a third of its TTL apart, each renewal given a third of
/// the TTL to answer, and hands each renewal's TTL to `renewed`. A failed
/// renewal is tried again soon. Ends with why it stopped: the server's 404
/// once the lease is gone, or a failure once no renewal has got through
/// and the time the last one bought (`alive_until` at first) is nearly
/// spent, so the caller can stop while the lease may still hold.
pub async fn keep_alive(
    ctx: &Ctx,
    lease: &KeepLeaseAliveId,
    ttl: Duration,
    mut alive_until: Instant,
    mut renewed: impl FnMut(u64) -> Result<(), Failure>,
) -> Failure {
    let period = ttl / 3;
    let mut pause = period;
    loop {
        tokio::time::sleep(pause).await;
        // A lease lives its TTL from when the server renewed it, which is
        // after this request was sent.
        let sent = Instant::now();
        let answer = tokio::time::timeout(
            period,
            ctx.endpoints.call(Patience::Bounded, async |client| {
                client.keep_lease_alive(lease).await
            }),
        )
        .await;
        let why = match answer {
            Ok(Ok(kept)) => {
                let ttl = kept.into_inner().ttl;
                alive_until = sent + Duration::from_secs(ttl);
                pause = period;
                if let Err(failure) = renewed(ttl) {
                    return failure;
                }
                continue;
            }
            Ok(Err(failure @ Failure::Refused { status: 404, .. })) => return failure,
            Ok(Err(failure)) => failure.to_string(),
            Err(_) => format!("no answer within {period:?}"),
        };
        eprintln!("kvctl: keeping lease {} alive: {why}", lease.as_str());
        pause = period / 3;
        if alive_until.saturating_duration_since(Instant::now()) <= pause + period {
            return Failure::Local(format!(
                "no keep-alive of lease {} got through before it could run out ({why})",
                lease.as_str()
            ));
        }
    }
}
