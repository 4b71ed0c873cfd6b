//! A connection's socket as hyper sees it: read deadlines between and
//! during request heads, and hyper's bare parse-error answers replaced by
//! problem+json.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::raw_response::{self, RawProblem};
use crate::metrics::ConnectionCounters;
use crate::watch::CloseWatcher;

/// A watch the store drops closes its connection at once.
impl CloseWatcher for ConnShared {
    fn close(&self) {
        self.abort();
    }
}

/// The future of [`ConnShared::signalled`].
pub struct Signalled<'a> {
    shared: &'a ConnShared,
    abort_only: bool,
}

impl Future for Signalled<'_> {
    type Output = Signal;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Signal> {
        match self.shared.poll_signal(cx) {
            Poll::Ready(Signal::ShutDown) if self.abort_only => Poll::Pending,
            other => other,
        }
    }
}

/// The three deadlines a connection lives under.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// From a request's first byte (or the connection's start) to the end
    /// of its head.
    pub header: Duration,
    /// Between two reads of a request body.
    pub body: Duration,
    /// With no request in flight, until the next one starts.
    pub idle: Duration,
    /// With something to send, and nothing sent (`super::stalls`).
    pub send: Duration,
}

/// What a connection's task is told from outside hyper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Close now: a deadline passed, or the store dropped a watcher here.
    Abort,
    /// The server is stopping: finish what is in flight, then close.
    ShutDown,
}

const NO_SIGNAL: u8 = 0;
const ABORT: u8 = 1;
const SHUT_DOWN: u8 = 2;

/// What a connection shares with the requests it serves and the listener.
///
/// Signals are an atomic and a waker rather than cancellation tokens: the
/// connection's task checks them every time it wakes, once per request,
/// and a token's check takes a lock.
pub struct ConnShared {
    counters: Arc<ConnectionCounters>,
    /// Requests whose response has not been written to the end (a watch
    /// stream stays in flight while it is open).
    in_flight: AtomicUsize,
    /// The read that waits while requests are in flight: woken when the
    /// last one ends, as hyper does not read again by itself.
    reader: AtomicWaker,
    signal: AtomicU8,
    task: AtomicWaker,
    /// Bytes of this connection's answers that the HTTP stack has not
    /// released yet (sent, or dropped): see `super::answers`.
    owed: AtomicUsize,
    /// Bumped on every sign of send progress: a write that went through
    /// after the socket was full, or answer bytes released.
    progress: AtomicU64,
    /// The last write found the socket full.
    blocked: AtomicBool,
    /// The stall sweeper's own view (`super::stalls`): the progress it last
    /// saw, and for how many of its ticks it has not changed while the
    /// connection had something to send.
    seen_progress: AtomicU64,
    stalled_ticks: AtomicU32,
}

impl ConnShared {
    pub fn new(counters: Arc<ConnectionCounters>) -> Self {
        Self {
            counters,
            in_flight: AtomicUsize::new(0),
            reader: AtomicWaker::new(),
            signal: AtomicU8::new(NO_SIGNAL),
            task: AtomicWaker::new(),
            owed: AtomicUsize::new(0),
            progress: AtomicU64::new(0),
            blocked: AtomicBool::new(false),
            seen_progress: AtomicU64::new(0),
            stalled_ticks: AtomicU32::new(0),
        }
    }

    /// The server's connection counters (and the answer budget's use).
    pub fn counters(&self) -> &ConnectionCounters {
        &self.counters
    }
    fn raise(&self, signal: u8) {
        // Abort wins over shutdown, and neither is taken back.
        self.signal.fetch_max(signal, Ordering::AcqRel);
        self.task.wake();
    }

    /// Closes the connection at once.
    pub fn abort(&self) {
        self.raise(ABORT);
    }

    /// Whether [`Self::abort`] was called.
    pub fn is_aborted(&self) -> bool {
        self.signal.load(Ordering::Acquire) == ABORT
    }

    /// Closes the connection once its requests in flight are done.
    pub fn shut_down(&self) {
        self.raise(SHUT_DOWN);
    }

    /// Waits until the connection is signalled (`Abort` only, with
    /// `abort_only`: after shutdown has begun).
    pub fn signalled(&self, abort_only: bool) -> Signalled<'_> {
        Signalled {
            shared: self,
            abort_only,
        }
    }

    fn poll_signal(&self, cx: &mut Context<'_>) -> Poll<Signal> {
        self.task.register(cx.waker());
        match self.signal.load(Ordering::Acquire) {
            NO_SIGNAL => Poll::Pending,
            ABORT => Poll::Ready(Signal::Abort),
            _ => Poll::Ready(Signal::ShutDown),
        }
    }

    /// The connection's answers now hold `bytes` more.
    pub fn owe(&self, bytes: usize) {
        self.owed.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The HTTP stack released `bytes` of the connection's answers: sent
    /// them, or dropped them.
    pub fn repaid(&self, bytes: usize) {
        if bytes > 0 {
            self.owed.fetch_sub(bytes, Ordering::Relaxed);
            self.progress.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One tick of the stall sweeper: how many ticks in a row the
    /// connection has had something to send (a full socket, or answer bytes
    /// not yet released) without any progress.
    pub fn stall_tick(&self) -> u32 {
        let waiting = self.blocked.load(Ordering::Relaxed) || self.owed.load(Ordering::Relaxed) > 0;
        let progress = self.progress.load(Ordering::Relaxed);
        if !waiting || self.seen_progress.swap(progress, Ordering::Relaxed) != progress {
            self.stalled_ticks.store(0, Ordering::Relaxed);
            return 0;
        }
        self.stalled_ticks.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    pub fn request_ended(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.reader.wake();
        }
    }
}

/// Where the connection is between requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No request in flight and no byte of the next one: `idle` applies.
    Idle,
    /// A request head has started (or the connection is new): `header`
    /// applies.
    Head,
    /// A request is in flight: no read deadline (bodies have their own).
    Busy,
}

/// Which protocol the client speaks, known from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Unknown,
    Http1,
    /// HTTP/2 with prior knowledge: frames such as PING arrive outside
    /// requests, so only the idle deadline applies, and answers cannot be
    /// written raw.
    Http2,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// The socket hyper reads and writes, with the deadlines of [`Timeouts`].
///
/// Why here: hyper's HTTP/1 connection has no idle timeout, and its header
/// timeout cannot tell a slow head from an idle keep-alive connection. The
/// socket sees every byte and, through [`ConnShared::in_flight`], whether a
/// request is being served, which is all it takes. A stalled head gets a
/// 408 problem+json written straight to the socket, then the connection is
/// closed; an idle connection is closed without a word, as HTTP/1.1 allows.
///
/// It also reports vectored writes, so hyper queues response body chunks
/// (shared `Bytes`, e.g. one watch event's frame for ten thousand watchers)
/// instead of copying each into a per-connection buffer.
pub struct GuardedIo<S = TcpStream> {
    io: S,
    shared: Arc<ConnShared>,
    timeouts: Timeouts,
    phase: Phase,
    protocol: Protocol,
    /// When the current phase's clock started; its deadline is this plus
    /// its timeout. Read when the connection first waits in the phase (a
    /// read that finds nothing), not when the phase begins: phases change
    /// three times per request and most never wait, and the two moments are
    /// one poll apart.
    since: Option<Instant>,
    /// A timer at or before the current phase's deadline. Moved only when
    /// it would fire late, or has fired early: resetting a tokio timer
    /// takes the timer wheel's lock, and phases change twice per request.
    deadline: Pin<Box<Sleep>>,
    /// A problem+json answer standing in for one hyper wrote; drained
    /// before anything else is written.
    replacement: Option<Bytes>,
    /// The last write found the socket full (mirrored in
    /// [`ConnShared::blocked`], written only when it changes).
    blocked: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> GuardedIo<S> {
    pub fn new(io: S, shared: Arc<ConnShared>, timeouts: Timeouts) -> Self {
        Self {
            io,
            shared,
            timeouts,
            phase: Phase::Head,
            protocol: Protocol::Unknown,
            since: None,
            deadline: Box::pin(tokio::time::sleep(timeouts.header)),
            replacement: None,
            blocked: false,
        }
    }

    fn busy(&self) -> bool {
        self.shared.in_flight.load(Ordering::Acquire) > 0
    }

    fn enter(&mut self, phase: Phase) {
        if self.phase != phase {
            self.phase = phase;
            self.since = None;
        }
    }

    /// When the current phase times out (`None` while busy).
    fn due(&mut self) -> Option<Instant> {
        let after = match self.phase {
            Phase::Idle => self.timeouts.idle,
            Phase::Head => self.timeouts.header,
            Phase::Busy => return None,
        };
        Some(*self.since.get_or_insert_with(Instant::now) + after)
    }

    fn on_read(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.protocol == Protocol::Unknown {
            let n = bytes.len().min(H2_PREFACE.len());
            self.protocol = if bytes[..n] == H2_PREFACE[..n] {
                Protocol::Http2
            } else {
                Protocol::Http1
            };
            if self.protocol == Protocol::Http2 {
                self.enter(Phase::Idle);
            }
        }
        if self.phase == Phase::Idle && self.protocol == Protocol::Http1 && !self.busy() {
            self.enter(Phase::Head);
        }
    }

    /// A read found nothing: the connection waits on the client.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.busy() {
            self.enter(Phase::Busy);
            self.shared.reader.register(cx.waker());
            // The last request may have ended meanwhile.
            if self.busy() {
                return Poll::Pending;
            }
        }
        if self.phase == Phase::Busy {
            self.enter(Phase::Idle);
        }
        let Some(due) = self.due() else {
            return Poll::Pending;
        };
        loop {
            if self.deadline.deadline() > due {
                self.deadline.as_mut().reset(due);
            }
            ready!(self.deadline.as_mut().poll(cx));
            if Instant::now() >= due {
                break;
            }
            // Fired for an earlier phase: wait for this one's deadline.
            self.deadline.as_mut().reset(due);
        }
        if self.phase == Phase::Head && self.protocol != Protocol::Http2 {
            // Best effort: a fresh connection's send buffer has room, and
            // a client that cannot take 300 bytes gets the close alone.
            let answer = raw_response::problem(RawProblem::HeaderTimeout);
            let _ = Pin::new(&mut self.io).poll_write(cx, &answer);
            let _ = Pin::new(&mut self.io).poll_flush(cx);
        }
        // hyper keeps an idle connection open after an end of stream or a
        // read error on it: the connection's task closes the socket.
        self.shared.abort();
        Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
    }

    /// Notes what a write to the socket did, for the stall sweeper: a full
    /// socket, or progress after one.
    fn wrote(&mut self, result: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match &result {
            Poll::Pending if !self.blocked => {
                self.blocked = true;
                self.shared.blocked.store(true, Ordering::Relaxed);
            }
            Poll::Ready(Ok(written)) if self.blocked && *written > 0 => {
                self.blocked = false;
                self.shared.blocked.store(false, Ordering::Relaxed);
                self.shared.progress.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        result
    }

    /// Writes what is left of a replacement answer.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(pending) = &mut self.replacement {
            if pending.is_empty() {
                self.replacement = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, pending))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            pending.advance(n);
        }
        Poll::Ready(Ok(()))
    }

    /// hyper answers a head it cannot parse with an empty 400, 414 or 431
    /// of its own; no request reached the server then. Returns the
    /// problem+json answer to write instead.
    fn replacement_for(&self, head: &[u8]) -> Option<Bytes> {
        if self.protocol != Protocol::Http1 || self.busy() {
            return None;
        }
        raw_response::replace_parse_error(head)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for GuardedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.on_read(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => this.poll_deadline(cx),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for GuardedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if let Some(replacement) = this.replacement_for(buf) {
            this.replacement = Some(replacement);
            return Poll::Ready(Ok(buf.len()));
        }
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        this.wrote(written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        if let Some(first) = bufs.iter().find(|buf| !buf.is_empty())
            && let Some(replacement) = this.replacement_for(first)
        {
            this.replacement = Some(replacement);
            return Poll::Ready(Ok(bufs.iter().map(|buf| buf.len()).sum()));
        }
        let written = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.wrote(written)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}
