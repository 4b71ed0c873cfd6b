//! Watches over etcd: one etcd watch per node, fanned out locally.
//!
//! Ten thousand SSE clients must not cost etcd ten thousand watches. The
//! node keeps one watch on its whole namespace (from the revision it last
//! saw, with `prev_kv`) and hands each event to the local watcher registry
//! and a local window of recent events, the same [`Watchers`] and
//! [`History`] the memory store uses: so slow-client limits, resume
//! within the window and SSE framing behave alike on both backends. A
//! snapshot is read from etcd at its newest revision (the node's own watch
//! may lag a write that was already acknowledged), and the live events up
//! to that revision are skipped, so snapshot and live events meet exactly.
//!
//! When the etcd watch breaks (etcd down, no leader) every stream ends and
//! clients resume from their last ids once the node's watch is back (503
//! until then); the node's watch resumes from the revision it last saw, so
//! its window has no gap.

use std::collections::VecDeque;
use std::time::Duration;

use etcd_client::{EventType, GetOptions, GetResponse, WatchOptions, WatchResponse};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use parking_lot::Mutex;

use super::{EtcdStore, Failure, revision};
use crate::domain::{Event, EventKind, Key, Position, Stats, WatchError, Watched};
use crate::watch::{
    Broken, Closer, History, Resume, SnapshotItem, WatchLimits, WatchStream, Watchers,
    run_heartbeat,
};

/// How many records one read of a prefix snapshot asks etcd for.
const SNAPSHOT_CHUNK: i64 = 512;

/// How long the node waits before watching etcd again after a failure.
const RETRY: Duration = Duration::from_millis(500);

/// The node's fan-out, fed by its one etcd watch.
pub(super) struct Hub {
    state: Mutex<State>,
    /// Told when the etcd watch starts running.
    started: tokio::sync::Notify,
}

struct State {
    watchers: Watchers,
    history: History,
    /// Every event up to this revision has been published.
    revision: u64,
    /// Whether the etcd watch runs (watch requests are refused until it
    /// does).
    live: bool,
}

impl Hub {
    pub(super) fn new(history: usize, history_bytes: usize, limits: WatchLimits) -> Self {
        Self {
            state: Mutex::new(State {
                watchers: Watchers::new(limits),
                history: History::new(history, history_bytes),
                revision: 0,
                live: false,
            }),
            started: tokio::sync::Notify::new(),
        }
    }

    /// The node's watch figures: the revision published up to, the oldest
    /// the window replays, the bytes the watchers pin and how many were
    /// dropped for falling behind.
    pub(super) fn stats(&self) -> Stats {
        let state = self.state.lock();
        Stats {
            revision: state.revision,
            oldest_revision: state.history.oldest_revision(state.revision),
            watch_bytes: state.watchers.total_bytes() as u64,
            lagging_watchers: state.watchers.dropped(),
            ..Stats::default()
        }
    }

    pub(super) fn is_live(&self) -> bool {
        self.state.lock().live
    }
}

/// The store's events for one watch response: parts numbered within each
/// revision that holds several.
fn events(store: &EtcdStore, response: &WatchResponse) -> Vec<Event> {
    let mut events: Vec<Event> = Vec::with_capacity(response.events().len());
    for watched in response.events() {
        let Some(kv) = watched.kv() else { continue };
        let at = revision(kv.mod_revision());
        let prev = watched.prev_kv().map(|prev| store.entry(prev));
        let event = match watched.event_type() {
            EventType::Put => Event::put(at, store.entry(kv), prev),
            EventType::Delete => {
                let key = Key::from(&*store.short(kv.key()));
                Event::removed(at, EventKind::Delete, key, prev)
            }
        };
        events.push(event);
    }
    let mut start = 0;
    while start < events.len() {
        let id = events[start].id;
        let end = start + events[start..].iter().take_while(|e| e.id == id).count();
        if end - start > 1 {
            for (part, event) in events[start..end].iter_mut().enumerate() {
                event.part = Some(u32::try_from(part).unwrap_or(u32::MAX));
            }
        }
        start = end;
    }
    events
}

impl EtcdStore {
    /// The watchers' heartbeat, until the server drops it.
    pub async fn run_heartbeat(self) {
        let hub = &self.inner.hub;
        let period = hub.state.lock().watchers.heartbeat_period();
        run_heartbeat(period, || hub.state.lock().watchers.heartbeat()).await;
    }

    /// The node's one etcd watch, for as long as the server runs: watches
    /// the namespace from the revision it last saw, publishes what arrives,
    /// and starts over after a failure.
    pub async fn run_watch(self) {
        loop {
            if let Err(failure) = self.watch_etcd().await {
                tracing::warn!(error = %failure, "the watch on etcd stopped; retrying");
            }
            {
                let mut state = self.inner.hub.state.lock();
                state.live = false;
                state.watchers.drop_all();
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    async fn watch_etcd(&self) -> Result<(), Failure> {
        let resume = self.inner.hub.state.lock().revision;
        let start = if resume == 0 {
            self.count().await?.0
        } else {
            resume
        };
        let options = WatchOptions::new()
            .with_range(self.keys_end(&self.inner.namespace))
            .with_prev_key()
            .with_progress_notify()
            .with_start_revision(i64::try_from(start + 1).unwrap_or(i64::MAX));
        let mut stream = self
            .call(|| {
                let mut watch = self.inner.client.watch_client();
                let (namespace, options) = (self.inner.namespace.clone(), options.clone());
                async move { watch.watch(namespace, Some(options)).await }
            })
            .await?;
        while let Some(response) = stream.message().await.map_err(Failure::from)? {
            if response.compact_revision() > 0 {
                // The window can no longer be continued: start afresh.
                let mut state = self.inner.hub.state.lock();
                state.revision = 0;
                state.history.clear();
                return Err(Failure::Compacted);
            }
            if response.canceled() {
                return Err(Failure::Unavailable(format!(
                    "etcd cancelled the watch: {}",
                    response.cancel_reason()
                )));
            }
            let events = events(self, &response);
            let mut state = self.inner.hub.state.lock();
            if response.created() {
                state.revision = start;
                state.live = true;
                self.inner.hub.started.notify_waiters();
            }
            for event in events {
                state.revision = state.revision.max(event.id);
                state.watchers.publish(&event);
                state.history.push(event);
            }
            // A progress notification: nothing more up to its revision.
            if response.events().is_empty() && !response.created() {
                let header = response.header().map_or(0, |h| revision(h.revision()));
                state.revision = state.revision.max(header);
            }
            drop(state);
        }
        Err(Failure::Unavailable("etcd ended the watch".to_owned()))
    }

    /// Waits until the node's etcd watch runs, for at most `--etcd-timeout`:
    /// a node whose etcd is up is ready when the server starts answering.
    pub async fn started(&self) -> bool {
        let hub = &self.inner.hub;
        let started = hub.started.notified();
        if hub.is_live() {
            return true;
        }
        tokio::time::timeout(self.inner.timeout, started)
            .await
            .is_ok()
    }

    /// Starts a watch stream: the [`Backend`](crate::backend::Backend)
    /// contract's `watch`.
    pub async fn watch(
        &self,
        watched: Watched,
        since: Option<Position>,
        closer: Closer,
    ) -> Result<WatchStream<Registered>, WatchError> {
        let watched = watched.normalised();
        let unavailable = |failure: Failure| WatchError::Unavailable(failure.to_string().into());
        // A client that watched through a node further along than this one
        // may name a revision this node has not reached yet: etcd says
        // whether it exists.
        let published = self.inner.hub.state.lock().revision;
        let etcd_revision = match since {
            Some(since) if since.revision > published => {
                Some(self.count().await.map_err(unavailable)?.0)
            }
            _ => None,
        };
        let (opening, id, live) = {
            let mut state = self.inner.hub.state.lock();
            if !state.live {
                return Err(WatchError::Unavailable(
                    "this node's watch on etcd is not running (etcd unreachable?)".into(),
                ));
            }
            let current = state.revision;
            let opening = match since {
                None => Opening::Snapshot,
                Some(since) => match state.history.resume(since, current, &watched) {
                    Resume::Replay(events) => Opening::Replay(events),
                    Resume::Ahead { current, oldest } => {
                        let newest = etcd_revision.unwrap_or(current);
                        if since.revision > newest {
                            return Err(WatchError::Unknown {
                                current: newest,
                                oldest,
                            });
                        }
                        Opening::Ahead(since)
                    }
                    // Older than the node's window: etcd has the rest,
                    // until compaction.
                    Resume::Behind { oldest } => Opening::Behind {
                        since,
                        oldest,
                        window: state.history.replay(since, &watched),
                    },
                },
            };
            let (id, live) = state
                .watchers
                .register(watched.clone(), closer)
                .map_err(|too_many| WatchError::TooMany { max: too_many.max })?;
            (opening, id, live)
        };
        let registered = Registered {
            store: self.clone(),
            id,
        };
        Ok(match opening {
            Opening::Snapshot => WatchStream::snapshot(self.snapshot(watched), live, registered),
            Opening::Replay(events) => WatchStream::resumed(None, events, None, live, registered),
            Opening::Ahead(since) => {
                WatchStream::resumed(None, Vec::new(), Some(since), live, registered)
            }
            Opening::Behind {
                since,
                oldest,
                window,
            } => {
                let earlier = self.catch_up(since, oldest, watched).await?;
                WatchStream::resumed(Some(earlier), window, None, live, registered)
            }
        })
    }

    /// The events on `watched` after `since` and before `until` (where the
    /// node's window starts), read from etcd's own history with a watch of
    /// their own that ends at its first event at or after `until`: the
    /// window's first event, or, when the window is empty, the next write,
    /// before which there is nothing newer to send anyway. 410 if etcd
    /// compacted them away.
    async fn catch_up(
        &self,
        since: Position,
        until: u64,
        watched: Watched,
    ) -> Result<BoxStream<'static, Result<Event, Broken>>, WatchError> {
        let unavailable = |failure: Failure| WatchError::Unavailable(failure.to_string().into());
        // A read at the revision says whether etcd still has it (the watch
        // would say so only after it starts). The node's window is what
        // can still be resumed from then.
        let start = i64::try_from(since.revision.max(1)).unwrap_or(i64::MAX);
        let probe = GetOptions::new()
            .with_range(self.keys_end(&self.inner.namespace))
            .with_count_only()
            .with_revision(start);
        match self.read(self.inner.namespace.clone(), Some(probe)).await {
            Ok(_) => {}
            Err(Failure::Compacted) => return Err(WatchError::Compacted { oldest: until }),
            Err(failure) => return Err(unavailable(failure)),
        }
        let options = WatchOptions::new()
            .with_range(self.keys_end(&self.inner.namespace))
            .with_prev_key()
            .with_start_revision(start);
        let mut stream = self
            .call(|| {
                let mut watch = self.inner.client.watch_client();
                let (namespace, options) = (self.inner.namespace.clone(), options.clone());
                async move { watch.watch(namespace, Some(options)).await }
            })
            .await
            .map_err(unavailable)?;
        let created = tokio::time::timeout(self.inner.timeout, stream.message())
            .await
            .map_err(|_| unavailable(Failure::Unavailable("etcd did not start the watch".into())))?
            .map_err(|err| unavailable(Failure::from(err)))?;
        if let Some(compacted) = created.as_ref().map(WatchResponse::compact_revision)
            && compacted > 0
        {
            return Err(WatchError::Compacted {
                oldest: revision(compacted),
            });
        }
        struct Reading {
            store: EtcdStore,
            stream: etcd_client::WatchStream,
            pending: VecDeque<Event>,
            done: bool,
        }
        let wanted = move |event: &Event| {
            event.id < until
                && since.precedes(event.id, event.part)
                && (watched.keys.iter().any(|key| **key == *event.key())
                    || watched
                        .prefixes
                        .iter()
                        .any(|prefix| event.key().starts_with(&**prefix)))
        };
        let reading = Reading {
            store: self.clone(),
            stream,
            pending: VecDeque::new(),
            done: false,
        };
        Ok(futures_util::stream::unfold(reading, move |mut r| {
            let wanted = wanted.clone();
            async move {
                loop {
                    if let Some(event) = r.pending.pop_front() {
                        return Some((Ok(event), r));
                    }
                    if r.done {
                        return None;
                    }
                    // Done at the first event at or after `until`, which
                    // the namespace's own watch also sees: not at a
                    // progress notification, which etcd 3.4 may send before
                    // a watch that is catching up has sent everything
                    // before it (etcd #15220; found by tests/consistency:
                    // a resume from far back skipped thousands of events).
                    let response = r.stream.message().await;
                    let failure = match response {
                        Ok(Some(response)) => Ok(response),
                        Ok(None) => Err(Failure::Unavailable("etcd ended the watch".into())),
                        Err(err) => Err(Failure::from(err)),
                    };
                    let response = match failure {
                        Ok(response) => response,
                        Err(failure) => {
                            r.done = true;
                            return Some((Err(failure.to_string()), r));
                        }
                    };
                    for event in events(&r.store, &response) {
                        if event.id >= until {
                            r.done = true;
                            break;
                        }
                        if wanted(&event) {
                            r.pending.push_back(event);
                        }
                    }
                }
            }
        })
        .boxed())
    }

    /// The watched keys and prefixes as they are in etcd now, read a key
    /// or a chunk at a time as the client takes them: the first read takes
    /// etcd's newest revision and the rest read at that revision; the
    /// stream ends with [`SnapshotItem::Through`] it. An `Err` item ends the
    /// stream (etcd failed, or compacted the revision between chunks).
    fn snapshot(&self, watched: Watched) -> BoxStream<'static, Result<SnapshotItem, Broken>> {
        struct Reading {
            store: EtcdStore,
            keys: VecDeque<Key>,
            prefixes: VecDeque<Key>,
            after: Option<Vec<u8>>,
            chunk: VecDeque<Event>,
            /// 0 until the first read has answered ("newest" to etcd).
            at: u64,
        }
        impl Reading {
            async fn read(
                &mut self,
                key: Vec<u8>,
                options: GetOptions,
            ) -> Result<GetResponse, Failure> {
                let at = i64::try_from(self.at).unwrap_or(i64::MAX);
                let answer = self
                    .store
                    .read(key, Some(options.with_revision(at)))
                    .await?;
                if self.at == 0 {
                    self.at = answer.header().map_or(0, |h| revision(h.revision()));
                }
                Ok(answer)
            }
        }
        let reading = Reading {
            store: self.clone(),
            keys: watched.keys.into(),
            prefixes: watched.prefixes.into(),
            after: None,
            chunk: VecDeque::new(),
            at: 0,
        };
        futures_util::stream::unfold(Some(reading), move |reading| async move {
            let mut r = reading?;
            loop {
                if let Some(event) = r.chunk.pop_front() {
                    return Some((Ok(SnapshotItem::Event(event)), Some(r)));
                }
                if let Some(key) = r.keys.pop_front() {
                    let full = r.store.full(&key);
                    let event = match r.read(full, GetOptions::new()).await {
                        Ok(answer) => match answer.kvs().first() {
                            Some(found) => {
                                Event::live(r.at, EventKind::Snapshot, r.store.entry(found))
                            }
                            None => Event::gone(r.at, EventKind::Snapshot, key),
                        },
                        Err(failure) => return Some((Err(failure.to_string()), None)),
                    };
                    return Some((Ok(SnapshotItem::Event(event)), Some(r)));
                }
                let Some(prefix) = r.prefixes.front().cloned() else {
                    return Some((Ok(SnapshotItem::Through(r.at)), None));
                };
                let full = r.store.full(&prefix);
                let start = match r.after.take() {
                    Some(mut after) => {
                        after.push(0);
                        after
                    }
                    None => full.clone(),
                };
                let options = GetOptions::new()
                    .with_range(r.store.keys_end(&full))
                    .with_limit(SNAPSHOT_CHUNK);
                let answer = match r.read(start, options).await {
                    Ok(answer) => answer,
                    Err(failure) => return Some((Err(failure.to_string()), None)),
                };
                if answer.more() {
                    r.after = answer.kvs().last().map(|last| last.key().to_vec());
                } else {
                    r.prefixes.pop_front();
                }
                r.chunk = answer
                    .kvs()
                    .iter()
                    .map(|found| Event::live(r.at, EventKind::Snapshot, r.store.entry(found)))
                    .collect();
            }
        })
        .boxed()
    }
}

/// How a watch stream on this node opens.
enum Opening {
    Snapshot,
    /// From the node's window.
    Replay(Vec<Event>),
    /// From a revision this node has not published yet (seen through
    /// another node): live events up to it are skipped.
    Ahead(Position),
    /// From before the node's window: etcd's history up to `oldest`, then
    /// the window.
    Behind {
        since: Position,
        oldest: u64,
        window: Vec<Event>,
    },
}

/// A watcher's place in the hub, given up when its stream is dropped.
pub struct Registered {
    store: EtcdStore,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.store.inner.hub.state.lock().watchers.remove(self.id);
    }
}
