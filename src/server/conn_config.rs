//! What every connection shares from the server: the application and the
//! hot lane, the deadlines, the bounds on answers, TLS and the counters.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;

use super::guarded_io::Timeouts;
use super::hot_lane::HotLane;
use super::tls::Tls;
use crate::metrics::ConnectionCounters;

/// What bounds the answers of every connection.
#[derive(Clone, Copy, Debug)]
pub struct AnswerLimits {
    /// Bytes of answers all connections together may hold before large
    /// ones are refused (`--answer-memory`).
    pub memory: usize,
    /// Requests one HTTP/2 connection may have open at once
    /// (`--max-streams`).
    pub streams: u32,
}

/// Everything a connection needs from the server.
pub struct ConnConfig<E, B> {
    /// The poem application, for every request the hot lane does not take.
    pub app: E,
    pub hot: HotLane<B>,
    pub local_addr: SocketAddr,
    pub timeouts: Timeouts,
    pub answers: AnswerLimits,
    pub builder: auto::Builder<TokioExecutor>,
    /// HTTPS only, when set.
    pub tls: Option<Arc<Tls>>,
    pub counters: Arc<ConnectionCounters>,
}

impl<E, B> ConnConfig<E, B> {
    pub fn new(
        app: E,
        hot: HotLane<B>,
        local_addr: SocketAddr,
        timeouts: Timeouts,
        answers: AnswerLimits,
        tls: Option<Arc<Tls>>,
        counters: Arc<ConnectionCounters>,
    ) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http2().max_concurrent_streams(answers.streams);
        Self {
            app,
            hot,
            local_addr,
            timeouts,
            answers,
            builder,
            tls,
            counters,
        }
    }
}
