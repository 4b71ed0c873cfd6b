//! Prometheus metrics: request counts and latencies, recorded as requests
//! pass, and the store's state, read only when `/metrics` is scraped.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::domain::Stats;

/// The labels of a request: which operation (its OpenAPI operationId, or
/// `unmatched` when no operation was reached) and the answer's status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: &'static str,
    status: u16,
}

fn latency_histogram() -> Histogram {
    // 25 µs to about 3.3 s.
    Histogram::new(exponential_buckets(0.000_025, 2.0, 18))
}

/// Connection counts, kept by the listener.
#[derive(Debug, Default)]
pub struct ConnectionCounters {
    open: AtomicU64,
    rejected: AtomicU64,
    lean_watches: AtomicU64,
    /// Connections closed for making no send progress (`--send-timeout`).
    stalled: AtomicU64,
    /// Answers refused 503 because `--answer-memory` was in use.
    refused_answers: AtomicU64,
    /// Bytes of answers built and not yet taken by their clients: what
    /// `--answer-memory` bounds.
    pub answer_bytes: AtomicUsize,
}

impl ConnectionCounters {
    pub fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    pub fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// A watch request was served by the lean connection path.
    pub fn lean_watch(&self) {
        self.lean_watches.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection made no send progress for `--send-timeout`.
    pub fn stalled(&self) {
        self.stalled.fetch_add(1, Ordering::Relaxed);
    }

    /// An answer was refused for want of `--answer-memory`.
    pub fn refused_answer(&self) {
        self.refused_answers.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `bytes` to the answers' bytes until the returned guard drops,
    /// unless that would pass `limit`: then counts a refused answer and
    /// returns `None`.
    pub fn reserve_answer(self: &Arc<Self>, bytes: usize, limit: usize) -> Option<AnswerRoom> {
        let used = self.answer_bytes.fetch_add(bytes, Ordering::Relaxed);
        if used.saturating_add(bytes) > limit {
            self.answer_bytes.fetch_sub(bytes, Ordering::Relaxed);
            self.refused_answer();
            return None;
        }
        Some(AnswerRoom {
            counters: self.clone(),
            bytes,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections refused at `--max-connections` so far.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
}

/// Room reserved in `--answer-memory` for an answer being built.
pub struct AnswerRoom {
    counters: Arc<ConnectionCounters>,
    bytes: usize,
}

impl Drop for AnswerRoom {
    fn drop(&mut self) {
        self.counters
            .answer_bytes
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// The statuses whose series are looked up in the family once per
/// operation and kept ([`Metrics::observe`]): every status the API answers
/// often enough to matter.
const KEPT_STATUSES: [u16; 16] = [
    200, 201, 204, 304, 400, 401, 403, 404, 408, 409, 412, 413, 423, 429, 503, 507,
];

/// An operation's series, each created on its first request (a scrape
/// shows only the statuses it answered, as without them).
struct Kept {
    operation: &'static str,
    series: [OnceLock<Histogram>; KEPT_STATUSES.len()],
}

/// The server's metrics. Recording a request costs a few atomic adds and a
/// lock on its series; the store's figures cost nothing until a scrape
/// reads them.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Histogram, fn() -> Histogram>,
    /// The series of the operations named at start, hottest first, so a
    /// request finds its series without hashing its labels.
    kept: Vec<Kept>,
}

impl Metrics {
    /// Metrics that read the store's figures from `stats` at every scrape
    /// (it must not wait: a scrape must answer while the backend cannot).
    /// `operations` (hottest first) keep their series at hand.
    pub fn new(
        stats: impl Fn() -> Stats + Send + Sync + 'static,
        connections: Arc<ConnectionCounters>,
        operations: &[&'static str],
    ) -> Self {
        let mut registry = Registry::with_prefix("kv");
        let requests: Family<RequestLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "http_request_duration",
            "HTTP requests by operation and status, and how long the server took to answer \
             (for a watch, until the stream opened)",
            Unit::Seconds,
            requests.clone(),
        );
        registry.register_collector(Box::new(StoreCollector(Box::new(stats))));
        registry.register_collector(Box::new(ConnectionCollector(connections)));
        let kept = operations
            .iter()
            .map(|&operation| Kept {
                operation,
                series: Default::default(),
            })
            .collect();
        Self {
            registry,
            requests,
            kept,
        }
    }

    /// Counts one request.
    pub fn observe(&self, operation: &'static str, status: u16, seconds: f64) {
        let labels = RequestLabels { operation, status };
        let kept = self.kept.iter().find(|kept| kept.operation == operation);
        let slot = KEPT_STATUSES.iter().position(|&kept| kept == status);
        match (kept, slot) {
            (Some(kept), Some(slot)) => kept.series[slot]
                .get_or_init(|| self.requests.get_or_create_owned(&labels))
                .observe(seconds),
            _ => self.requests.get_or_create(&labels).observe(seconds),
        }
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Reads the store's counters when a scrape asks for them.
struct StoreCollector(Box<dyn Fn() -> Stats + Send + Sync>);

impl fmt::Debug for StoreCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreCollector")
    }
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let stats = (self.0)();
        let gauges = [
            (
                "keys",
                "Keys held, expired keys not yet swept included",
                stats.keys,
            ),
            ("revision", "The store's current revision", stats.revision),
            (
                "oldest_revision",
                "The oldest revision a watch can resume from",
                stats.oldest_revision,
            ),
            (
                "watch_streams",
                "Watch streams open now",
                stats.open_watches,
            ),
            ("leases", "Leases that exist now", stats.leases),
            (
                "watch_bytes",
                "Bytes of events and encoded frames watch streams hold now (bounded by --watch-memory)",
                stats.watch_bytes,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let counters = [
            (
                "expired_keys",
                "Keys removed because their TTL ran out",
                stats.expired,
            ),
            (
                "expired_leases",
                "Leases that ran out (their keys went with them; revoked ones not counted)",
                stats.expired_leases,
            ),
            (
                "dropped_watchers",
                "Watch streams ended because the client read too slowly (or the watchers' memory was full)",
                stats.lagging_watchers,
            ),
            (
                "disk_commits",
                "Transactions committed to the data dir (one per group of concurrent writes with --fsync always)",
                stats.disk_commits,
            ),
            (
                "disk_committed_writes",
                "Writes those transactions carried (divided by kv_disk_commits_total: the group size)",
                stats.disk_writes,
            ),
            (
                "disk_errors",
                "Commits the data dir refused (disk full or an I/O error)",
                stats.disk_errors,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        let seconds = ConstCounter::new(stats.disk_commit_seconds);
        seconds.encode(encoder.encode_descriptor(
            "disk_commit_seconds",
            "Time spent committing to the data dir, fsync included",
            None,
            seconds.metric_type(),
        )?)?;
        Ok(())
    }
}

/// Reads the connection counts when a scrape asks for them.
#[derive(Debug)]
struct ConnectionCollector(Arc<ConnectionCounters>);

impl Collector for ConnectionCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let open = ConstGauge::new(i64::try_from(self.0.open()).unwrap_or(i64::MAX));
        open.encode(encoder.encode_descriptor(
            "connections",
            "Client connections open now",
            None,
            open.metric_type(),
        )?)?;
        let rejected = ConstCounter::new(self.0.rejected_total());
        rejected.encode(encoder.encode_descriptor(
            "rejected_connections",
            "Connections answered 503 and closed because --max-connections were open",
            None,
            rejected.metric_type(),
        )?)?;
        let stalled = ConstCounter::new(self.0.stalled.load(Ordering::Relaxed));
        stalled.encode(encoder.encode_descriptor(
            "stalled_connections",
            "Connections closed because they took nothing of what they were sent for \
             --send-timeout",
            None,
            stalled.metric_type(),
        )?)?;
        let answers = self.0.answer_bytes.load(Ordering::Relaxed);
        let answers = ConstGauge::new(i64::try_from(answers).unwrap_or(i64::MAX));
        answers.encode(encoder.encode_descriptor(
            "answer_bytes",
            "Bytes of answers built and not yet taken by their clients (--answer-memory)",
            None,
            answers.metric_type(),
        )?)?;
        let refused = ConstCounter::new(self.0.refused_answers.load(Ordering::Relaxed));
        refused.encode(encoder.encode_descriptor(
            "refused_answers",
            "Answers refused 503 because --answer-memory was in use",
            None,
            refused.metric_type(),
        )?)?;
        let lean = ConstCounter::new(self.0.lean_watches.load(Ordering::Relaxed));
        lean.encode(encoder.encode_descriptor(
            "lean_watch_requests",
            "Watch requests served by the lean connection path (an HTTP/1.1 connection \
             whose first request is a watch) rather than by hyper",
            None,
            lean.metric_type(),
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_requests_and_store_state() {
        let metrics = Metrics::new(Stats::default, Arc::default(), &["get_key"]);
        metrics.observe("get_key", 200, 0.000_1);
        let text = metrics.encode().expect("encodes");
        assert!(text.contains(
            "kv_http_request_duration_seconds_count{operation=\"get_key\",status=\"200\"} 1"
        ));
        assert!(text.contains("kv_keys 0"), "{text}");
        assert!(text.contains("kv_expired_keys_total 0"), "{text}");
        assert!(text.contains("kv_connections 0"), "{text}");
        assert!(text.contains("kv_rejected_connections_total 0"), "{text}");
        assert!(text.contains("kv_lean_watch_requests_total 0"), "{text}");
        assert!(text.contains("kv_stalled_connections_total 0"), "{text}");
        assert!(text.contains("kv_answer_bytes 0"), "{text}");
        assert!(text.contains("kv_refused_answers_total 0"), "{text}");
    }
}
