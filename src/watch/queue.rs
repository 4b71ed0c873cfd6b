//! A watcher's queue and the stream its reader takes from it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::task::{Context, Poll};

use futures_util::Stream;
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;

use super::charge::{Charge, Delivery, SharedFrame};
use crate::domain::Event;

/// A watcher's queue: what `publish` has handed it and its reader has not
/// taken yet.
///
/// Why not tokio's unbounded channel: it allocates its first block of 32
/// slots (2.4 KB here) with the channel and keeps it while the channel
/// lives, which was most of an idle watcher's memory. This queue holds
/// nothing while empty and gives back what a burst grew.
///
/// It also carries the heartbeat: one timer for every watcher
/// ([`Watchers::heartbeat`]) rather than one per stream, which a stream
/// reset on every event it sent.
pub(super) struct Queue {
    pub(super) state: Mutex<QueueState>,
    reader: AtomicWaker,
}

/// Whether the store still serves a watcher.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum Ending {
    #[default]
    Open,
    /// Dropped by the store: its queue is emptied, the reader is told
    /// ([`WatchItem::Dropped`]), then its stream ends.
    Dropped,
    Told,
}

#[derive(Default)]
pub(super) struct QueueState {
    pub(super) items: VecDeque<WatchItem>,
    /// Something was queued since the last heartbeat.
    busy: bool,
    /// Whether the store dropped the watcher.
    ending: Ending,
    /// The reader is gone: nothing more is queued.
    closed: bool,
}

/// Slots a drained queue may keep: a watcher's usual backlog of a few
/// events, not what a burst grew it to.
pub(super) const KEPT_SLOTS: usize = 4;

impl Queue {
    /// A queue for a new watcher. Busy: its first heartbeat comes a whole
    /// period after it opens.
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(QueueState {
                busy: true,
                ..QueueState::default()
            }),
            reader: AtomicWaker::new(),
        })
    }

    /// Queues `delivery`; `false` if the reader is gone.
    pub(super) fn push(&self, delivery: Delivery) -> bool {
        let mut state = self.state.lock();
        if state.closed {
            return false;
        }
        state.items.push_back(WatchItem::Event(delivery));
        state.busy = true;
        drop(state);
        self.reader.wake();
        true
    }

    /// Queues [`WatchItem::Idle`] if nothing was queued since the last
    /// heartbeat and nothing waits: a reader that stopped reading holds at
    /// most one.
    pub(super) fn heartbeat(&self) {
        let mut state = self.state.lock();
        let idle =
            !state.busy && state.items.is_empty() && state.ending == Ending::Open && !state.closed;
        state.busy = false;
        if idle {
            state.items.push_back(WatchItem::Idle);
            drop(state);
            self.reader.wake();
        }
    }

    /// The store gives up on the watcher: what is queued is dropped at
    /// once (and its charges released), whether or not the reader ever
    /// reads again; the reader is told next. Nothing is lost by it: the
    /// client resumes after the last event it received.
    pub(super) fn mark_dropped(&self) {
        let items = {
            let mut state = self.state.lock();
            state.ending = Ending::Dropped;
            std::mem::take(&mut state.items)
        };
        drop(items);
        self.reader.wake();
    }

    pub(super) fn poll_pop(&self, cx: &mut Context<'_>) -> Poll<Option<WatchItem>> {
        // Registered before looking, so a push after the look wakes us.
        self.reader.register(cx.waker());
        let mut state = self.state.lock();
        match state.items.pop_front() {
            Some(item) => {
                if state.items.is_empty() && state.items.capacity() > KEPT_SLOTS {
                    state.items = VecDeque::new();
                }
                Poll::Ready(Some(item))
            }
            None => match state.ending {
                Ending::Open => Poll::Pending,
                Ending::Dropped => {
                    state.ending = Ending::Told;
                    Poll::Ready(Some(WatchItem::Dropped))
                }
                Ending::Told => Poll::Ready(None),
            },
        }
    }

    /// The reader leaves: what is queued is dropped (and its charges
    /// released) now, not when the store gets round to the slot.
    pub(super) fn close(&self) {
        let items = {
            let mut state = self.state.lock();
            state.closed = true;
            std::mem::take(&mut state.items)
        };
        drop(items);
    }
}

/// The receiving end of a watcher's queue.
pub struct Receiver {
    pub(super) queue: Arc<Queue>,
    pub(super) charged: Arc<AtomicUsize>,
    pub(super) total: Arc<AtomicUsize>,
}

impl Receiver {
    /// Wraps an event read outside the queue (a snapshot, a replay) as an
    /// item charged to this watcher like a queued one.
    pub fn deliver(&self, event: Event) -> WatchItem {
        let cost = event.cost();
        WatchItem::Event(Delivery {
            frame: SharedFrame::new(cost, self.total.clone()),
            charge: Charge::new(cost, &self.charged),
            event,
        })
    }
}

impl Stream for Receiver {
    type Item = WatchItem;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<WatchItem>> {
        self.queue.poll_pop(cx)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.queue.close();
    }
}

/// What a watch stream yields.
pub enum WatchItem {
    Event(Delivery),
    /// The snapshot is complete: everything the store held at this
    /// revision has been sent. Resume from here.
    Synced(u64),
    /// Nothing was sent for a heartbeat period: the reader may tell its
    /// client the stream is alive.
    Idle,
    /// The store dropped the watcher (too slow, or its source of events
    /// broke): the last item of its stream. Not a normal end: the client
    /// is to resume from the last id it got, so the reader cuts the stream
    /// rather than end it.
    Dropped,
}
