//! `kvctl lock NAME -- CMD`: runs CMD while holding the lock, as `consul
//! lock` does. The lock is held on a lease granted for it and kept alive a
//! third of its TTL apart; CMD is stopped (SIGTERM, then SIGKILL 10 s
//! later) if the lease ends or the holder's key is deleted. CMD gets the
//! fencing token in KV_LOCK_TOKEN, so its own writes can be fenced
//! (`If-Fence: NAME=TOKEN`): the server refuses them once another holds the
//! lock, even if CMD has not been stopped yet.

use std::num::NonZeroU64;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitCode, ExitStatus};
use std::time::Duration;

use futures_util::StreamExt;
use kv_store_client::ByteStream;
use kv_store_client::types::{AcquireRequest, LockHeld, WatchBody, WatchSet};
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;

use super::{Ctx, parse};
use crate::connect::Patience;
use crate::failure::Failure;
use crate::sse::Parser;

/// How long a stopped command has to exit before it is killed.
const GRACE: Duration = Duration::from_secs(10);

pub async fn run(
    ctx: &Ctx,
    name: &str,
    ttl: NonZeroU64,
    wait: Option<u64>,
    command: &[String],
) -> Result<ExitCode, Failure> {
    let Some((program, args)) = command.split_first() else {
        return Err(Failure::Usage("name a command after --".to_owned()));
    };
    let name_arg = parse("lock name", name)?;
    let request = AcquireRequest {
        lease: None,
        ttl: Some(ttl),
        wait,
    };
    let held = ctx
        .endpoints
        .call(Patience::Unbounded, async |client| {
            client.acquire_lock(&name_arg, &request).await
        })
        .await?
        .into_inner();
    let child = tokio::process::Command::new(program)
        .args(args)
        .env("KV_LOCK_NAME", name)
        .env("KV_LOCK_TOKEN", held.token.to_string())
        .env("KV_LOCK_LEASE", &held.lease)
        .spawn();
    let outcome = match child {
        Ok(mut child) => {
            let outcome = hold(ctx, &held, ttl, &mut child).await;
            if outcome.is_err() {
                stop(&mut child).await;
            }
            outcome
        }
        Err(error) => Err(Failure::Usage(format!("{program}: {error}"))),
    };
    release(ctx, &held).await;
    let status = outcome?;
    let code = status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// Waits for the command to end while keeping the lock; a failure once
/// the lock is lost.
async fn hold(
    ctx: &Ctx,
    held: &LockHeld,
    ttl: NonZeroU64,
    child: &mut tokio::process::Child,
) -> Result<ExitStatus, Failure> {
    let lease = parse("lease", &held.lease)?;
    let ttl = Duration::from_secs(ttl.get());
    let mut terminate = signal(SignalKind::terminate())?;
    let mut watched = Watched::open(ctx, held).await;
    let mut kept = Instant::now();
    let mut tick = tokio::time::interval(ttl / 3);
    tick.tick().await;
    loop {
        tokio::select! {
            status = child.wait() => return Ok(status?),
            _ = tick.tick() => {
                let alive = ctx
                    .endpoints
                    .call(Patience::Bounded, async |client| client.keep_lease_alive(&lease).await)
                    .await;
                match alive {
                    Ok(_) => kept = Instant::now(),
                    Err(Failure::Refused { status: 404, .. }) => {
                        return Err(Failure::LockLost("its lease ended".to_owned()));
                    }
                    Err(failure) if kept.elapsed() >= ttl => {
                        return Err(Failure::LockLost(format!(
                            "no keep-alive got through for the lease's TTL ({failure})"
                        )));
                    }
                    Err(failure) => eprintln!("kvctl: keeping the lock's lease alive: {failure}"),
                }
                if watched.is_none() {
                    watched = Watched::open(ctx, held).await;
                }
            }
            gone = next_change(&mut watched) => match gone {
                Some(()) => return Err(Failure::LockLost(format!("its key {} was deleted", held.key))),
                None => watched = Watched::open(ctx, held).await,
            },
            _ = terminate.recv() => {
                if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
                    // SAFETY: kill(2) only sends a signal to the child.
                    unsafe { libc::kill(pid, libc::SIGTERM) };
                }
            }
        }
    }
}

/// A watch on the holder's key.
struct Watched {
    stream: futures_util::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    parser: Parser,
}

impl Watched {
    /// The watch from the revision the lock was seen held (a deletion
    /// in between is replayed); none if no endpoint can be reached now.
    async fn open(ctx: &Ctx, held: &LockHeld) -> Option<Self> {
        let body = WatchBody::WatchSet(WatchSet {
            keys: vec![held.key.clone()],
            prefixes: Vec::new(),
        });
        let opened = ctx
            .endpoints
            .call(Patience::Unbounded, async |client| {
                client.watch_keys(Some(held.revision), None, &body).await
            })
            .await
            .ok()?;
        let stream: ByteStream = opened.into_inner();
        Some(Self {
            stream: stream
                .into_inner()
                .map(|chunk| chunk.map(|bytes| bytes.to_vec()))
                .boxed(),
            parser: Parser::default(),
        })
    }
}

/// Waits until the key is deleted (`Some`) or the watch ends (`None`);
/// with no watch, forever (the next keep-alive tick opens one).
async fn next_change(watched: &mut Option<Watched>) -> Option<()> {
    let Some(watched) = watched else {
        return std::future::pending().await;
    };
    while let Some(Ok(chunk)) = watched.stream.next().await {
        let events = watched.parser.push(&chunk);
        if events
            .iter()
            .any(|event| matches!(event.name.as_str(), "delete" | "expire"))
        {
            return Some(());
        }
    }
    None
}

/// SIGTERM, then SIGKILL if the command has not ended within the grace.
async fn stop(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        // SAFETY: kill(2) only sends a signal to the child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

/// Lets the lock go and revokes the lease granted for it. A lock already
/// lost has nothing to let go; the lease may be gone too.
async fn release(ctx: &Ctx, held: &LockHeld) {
    let (Ok(name), Ok(lease), Some(token)) = (
        parse("lock name", &held.name),
        parse("lease", &held.lease),
        NonZeroU64::new(held.token),
    ) else {
        return;
    };
    let _ = ctx
        .endpoints
        .call(Patience::Bounded, async |client| {
            client.release_lock(&name, token).await
        })
        .await;
    let _ = ctx
        .endpoints
        .call(Patience::Bounded, async |client| {
            client.revoke_lease(&lease).await
        })
        .await;
}
