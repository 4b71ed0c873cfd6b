//! `kvctl lock NAME -- CMD`: runs CMD while holding the lock, as `consul
//! lock` does.
//!
//! The lease comes first and is kept alive from then on, through the wait
//! in line too (a wait may outlast the TTL). CMD runs in a process group of
//! its own, so everything it starts can be stopped: SIGTERM to the group,
//! SIGKILL 10 s later, once the lease ends (or no keep-alive got through in
//! time) or the holder's key is deleted. SIGINT, SIGTERM and SIGHUP sent to
//! kvctl are passed on to the group, and the lock is released once CMD has
//! ended. CMD gets the fencing token in KV_LOCK_TOKEN, so its own writes
//! can be fenced (`If-Fence: NAME=TOKEN`): the server refuses them once
//! another holds the lock, even if CMD has not been stopped yet.

use std::future::Future;
use std::num::NonZeroU64;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitCode, ExitStatus};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use kv_store_client::types::{
    AcquireRequest, GrantRequest, KeepLeaseAliveId, LockHeld, WatchBody, WatchSet,
};
use serde_json::Value;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::time::Instant;

use super::keep_alive::keep_alive;
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
    let sent = Instant::now();
    let grant = GrantRequest { id: None, ttl };
    let lease = ctx
        .endpoints
        .call(Patience::Bounded, async |client| {
            client.grant_lease(&grant).await
        })
        .await?
        .into_inner();
    let lease_arg: KeepLeaseAliveId = parse("lease", &lease.id)?;
    let ttl = Duration::from_secs(ttl.get());
    let keeping = async {
        match keep_alive(ctx, &lease_arg, ttl, sent + ttl, |_| Ok(())).await {
            Failure::Refused { status: 404, .. } => Failure::LockLost("its lease ended".to_owned()),
            other => Failure::LockLost(other.to_string()),
        }
    };
    tokio::pin!(keeping);
    let mut signals = Signals::new()?;

    let request = AcquireRequest {
        lease: Some(parse("lease", &lease.id)?),
        ttl: None,
        wait,
    };
    let acquire = ctx.endpoints.call(Patience::Unbounded, async |client| {
        client.acquire_lock(&name_arg, &request).await
    });
    let waited = tokio::select! {
        held = acquire => held.map(|held| held.into_inner()),
        lost = &mut keeping => Err(lost),
        signal = signals.next() => Err(Failure::Interrupted(signal)),
    };
    let held = match waited {
        Ok(held) => held,
        Err(failure) => {
            revoke(ctx, &lease.id).await;
            return Err(failure);
        }
    };

    let child = tokio::process::Command::new(program)
        .args(args)
        .env("KV_LOCK_NAME", name)
        .env("KV_LOCK_TOKEN", held.token.to_string())
        .env("KV_LOCK_LEASE", &held.lease)
        .process_group(0)
        .spawn();
    let outcome = match child {
        Ok(mut child) => {
            let outcome = hold(ctx, &held, &mut child, keeping, &mut signals).await;
            if outcome.is_err() {
                stop(&mut child).await;
            }
            outcome
        }
        Err(error) => Err(Failure::NotRun(format!("{program}: {error}"))),
    };
    release(ctx, &held).await;
    let status = outcome?;
    let code = status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// Waits for the command to end while the lock is held; a failure once the
/// lock is lost.
async fn hold(
    ctx: &Ctx,
    held: &LockHeld,
    child: &mut tokio::process::Child,
    mut keeping: std::pin::Pin<&mut impl Future<Output = Failure>>,
    signals: &mut Signals,
) -> Result<ExitStatus, Failure> {
    let group = child.id().and_then(|pid| i32::try_from(pid).ok());
    let mut watched = Watched::open(ctx, held).await;
    let mut reopen = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            status = child.wait() => return Ok(status?),
            lost = &mut keeping => return Err(lost),
            change = next_change(&mut watched) => match change {
                Change::Deleted => {
                    return Err(Failure::LockLost(format!("its key {} was deleted", held.key)));
                }
                Change::Ended => watched = None,
            },
            // A watch that ended is opened again, at most once a second.
            _ = reopen.tick(), if watched.is_none() => watched = Watched::open(ctx, held).await,
            signal = signals.next() => {
                if let Some(group) = group {
                    // SAFETY: kill(2) only sends a signal, to the command's group.
                    unsafe { libc::kill(-group, signal) };
                }
            }
        }
    }
}

/// The signals passed on to the command.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Signals {
    fn new() -> Result<Self, Failure> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// The next signal to arrive.
    async fn next(&mut self) -> i32 {
        tokio::select! {
            _ = self.interrupt.recv() => libc::SIGINT,
            _ = self.terminate.recv() => libc::SIGTERM,
            _ = self.hangup.recv() => libc::SIGHUP,
        }
    }
}

/// A watch on the holder's key, from a snapshot of it: a key deleted
/// before the watch opened shows as a snapshot of nothing.
struct Watched {
    stream: BoxStream<'static, reqwest::Result<Vec<u8>>>,
    parser: Parser,
}

enum Change {
    Deleted,
    Ended,
}

impl Watched {
    /// None if no endpoint takes the watch now (the keep-alive still
    /// notices a lost lease; the watch is tried again).
    async fn open(ctx: &Ctx, held: &LockHeld) -> Option<Self> {
        let body = WatchBody::WatchSet(WatchSet {
            keys: vec![held.key.clone()],
            prefixes: Vec::new(),
        });
        let opened = ctx
            .endpoints
            .call(Patience::Streaming, async |client| {
                client.watch_keys(None, None, &body).await
            })
            .await;
        match opened {
            Ok(answer) => Some(Self {
                stream: answer
                    .into_inner()
                    .into_inner()
                    .map(|chunk| chunk.map(|bytes| bytes.to_vec()))
                    .boxed(),
                parser: Parser::default(),
            }),
            Err(failure) => {
                eprintln!("kvctl: watching the lock's key: {failure}");
                None
            }
        }
    }
}

/// The next change to the holder's key; with no watch, never.
async fn next_change(watched: &mut Option<Watched>) -> Change {
    let Some(watched) = watched else {
        return std::future::pending().await;
    };
    while let Some(Ok(chunk)) = watched.stream.next().await {
        for event in watched.parser.push(&chunk) {
            let absent = || {
                serde_json::from_str::<Value>(&event.data).is_ok_and(|data| data["value"].is_null())
            };
            match event.name.as_str() {
                "delete" | "expire" => return Change::Deleted,
                "snapshot" if absent() => return Change::Deleted,
                _ => {}
            }
        }
    }
    Change::Ended
}

/// SIGTERM to the command's group, then SIGKILL if it has not ended within
/// the grace.
async fn stop(child: &mut tokio::process::Child) {
    let Some(group) = child.id().and_then(|pid| i32::try_from(pid).ok()) else {
        return;
    };
    // SAFETY: kill(2) only sends a signal, to the command's group.
    unsafe { libc::kill(-group, libc::SIGTERM) };
    if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
        // SAFETY: as above.
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let _ = child.wait().await;
    }
}

/// Lets the lock go, then revokes the lease it was held on. A lock already
/// lost has nothing to let go; the lease may be gone too.
async fn release(ctx: &Ctx, held: &LockHeld) {
    if let (Ok(name), Some(token)) = (parse("lock name", &held.name), NonZeroU64::new(held.token)) {
        let _ = ctx
            .endpoints
            .call(Patience::Bounded, async |client| {
                client.release_lock(&name, token).await
            })
            .await;
    }
    revoke(ctx, &held.lease).await;
}

async fn revoke(ctx: &Ctx, lease: &str) {
    if let Ok(lease) = parse("lease", lease) {
        let _ = ctx
            .endpoints
            .call(Patience::Bounded, async |client| {
                client.revoke_lease(&lease).await
            })
            .await;
    }
}
