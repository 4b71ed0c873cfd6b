//! What every watcher is charged for the memory it pins: the encoded
//! frame of an event, shared by all its watchers, and each watcher's
//! charge for it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::domain::Event;

/// The encoded form of one published event, made once by the first watcher
/// that reads it and shared with every other watcher of the same publish
/// (ten thousand watchers of a key serialise its event once). The store
/// does not know the encoding: the reader fills the cell.
///
/// It counts toward the watchers' total while it lives, once however many
/// watchers hold it, since that is the memory it takes.
pub struct SharedFrame {
    cell: OnceLock<Bytes>,
    cost: usize,
    total: Arc<AtomicUsize>,
}

impl SharedFrame {
    pub(super) fn new(cost: usize, total: Arc<AtomicUsize>) -> Arc<Self> {
        total.fetch_add(cost, Ordering::Relaxed);
        Arc::new(Self {
            cell: OnceLock::new(),
            cost,
            total,
        })
    }

    /// The encoded event: `encode`d by the first caller, shared after.
    pub fn get_or_encode(&self, encode: impl FnOnce() -> Bytes) -> Bytes {
        self.cell.get_or_init(encode).clone()
    }
}

impl Drop for SharedFrame {
    fn drop(&mut self) {
        self.total.fetch_sub(self.cost, Ordering::Relaxed);
    }
}

/// What one watcher is charged for one event, from the moment it is queued
/// until the reader drops this: the server layer keeps it with the encoded
/// frame until the frame has left for the socket, so queued events, encoded
/// frames and the connection's write buffers all count toward the
/// watcher's `--watch-queue-bytes`.
pub struct Charge {
    bytes: usize,
    watcher: Arc<AtomicUsize>,
}

impl Charge {
    pub(super) fn new(bytes: usize, watcher: &Arc<AtomicUsize>) -> Self {
        watcher.fetch_add(bytes, Ordering::Relaxed);
        Self {
            bytes,
            watcher: watcher.clone(),
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.watcher.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// One item of a watch stream: the event, its shared encoded form and the
/// watcher's charge for it.
pub struct Delivery {
    pub event: Event,
    pub frame: Arc<SharedFrame>,
    pub charge: Charge,
}
