//! The domain: what the store holds and what is asked of it, the same for
//! every backend and every layer. A leaf: it imports nothing of ours, so
//! the engines, the watch machinery and the API all build on it.

mod backup;
mod entry;
mod error;
mod event;
mod fence;
mod lease;
mod op;
mod range;
mod readiness;
mod stats;
mod txn;
mod value;
mod watched;

use std::sync::Arc;

pub use backup::{Backup, BackupError, LeaseBackup};
pub use entry::{Entry, MAX_KEY_BYTES, Meta, epoch, start_clock};
pub use error::{BatchError, RangeError, StorageError, WatchError};
pub use event::{Event, EventKind, Position};
pub use fence::{Fence, head, queue_key, queue_prefix};
pub use lease::{LeaseError, LeaseHeld, LeaseId, LeasePage, LeaseState, Lifetime};
pub use op::{Action, Condition, Current, Op, Outcome, PrefixDeleted, Revisions};
pub use range::{Page, RangeRequest, ReadPoint};
pub use readiness::Readiness;
pub use stats::Stats;
pub use txn::{
    Comparison, Guard, KeyTest, Operand, Order, PrefixTest, Txn, TxnOp, TxnOutcome, TxnResult,
};
pub use value::Value;
pub use watched::Watched;

/// A key. Shared (`Arc`) because an operation, the expiry queue and the
/// events of a delete name the same key without copying it. (The map keeps
/// its own copy inside each [`Entry`].)
pub type Key = Arc<str>;
