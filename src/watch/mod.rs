//! The watch machinery every backend shares: the registry of watchers and
//! their queues, what each is charged for the memory it pins, the one
//! heartbeat timer, and the history a stream resumes from. A backend feeds
//! it events in revision order; the API reads the streams it hands out.

mod charge;
mod heartbeat;
mod history;
mod queue;
mod registry;
mod stream;
mod until;

pub use charge::{Charge, Delivery, SharedFrame};
pub use heartbeat::run_heartbeat;
pub use history::History;
pub use queue::{Receiver, WatchItem};
pub use registry::{CloseWatcher, Closer, TooManyWatches, WatchLimits, Watchers};
pub use stream::{Broken, Resume, SnapshotItem, WatchStream};
pub use until::Until;
