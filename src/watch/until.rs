//! A watch stream that ends when the server stops or its caller's token is
//! revoked.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::Stream;
use futures_util::future::BoxFuture;
use futures_util::task::AtomicWaker;

/// `stream` until `end` completes.
///
/// Why not `StreamExt::take_until`: it polls its future before every item,
/// and a cancellation token's future takes a mutex each time; with ten
/// thousand watchers that was two locks per watcher per event (~500 of
/// ~4 800 instructions a delivery; BENCHMARKS.md, issue 26). Here `end` is
/// polled with a waker of its own, and again only once that waker has been
/// woken: a delivery costs an atomic swap instead.
pub struct Until<S> {
    stream: S,
    end: Option<BoxFuture<'static, ()>>,
    woken: Arc<EndWoken>,
    waker: Waker,
}

/// Whether `end` has been woken since it was last polled, and the task to
/// wake when it is.
struct EndWoken {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for EndWoken {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<S> Until<S> {
    pub fn new(stream: S, end: BoxFuture<'static, ()>) -> Self {
        let woken = Arc::new(EndWoken {
            // Polled once first, to be woken at all.
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        Self {
            stream,
            end: Some(end),
            waker: Waker::from(woken.clone()),
            woken,
        }
    }
}

impl<S: Stream + Unpin> Stream for Until<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = &mut *self;
        let Some(end) = this.end.as_mut() else {
            return Poll::Ready(None);
        };
        this.woken.task.register(cx.waker());
        if this.woken.woken.swap(false, Ordering::AcqRel)
            && end
                .as_mut()
                .poll(&mut Context::from_waker(&this.waker))
                .is_ready()
        {
            this.end = None;
            return Poll::Ready(None);
        }
        let next = Pin::new(&mut this.stream).poll_next(cx);
        if let Poll::Ready(None) = next {
            // Ended: never polled again.
            this.end = None;
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{FutureExt, StreamExt, stream};
    use tokio_util::sync::CancellationToken;

    #[tokio::test]
    async fn a_stream_never_idle_ends_at_once() {
        let stop = CancellationToken::new();
        let mut until = Until::new(stream::repeat(1), stop.clone().cancelled_owned().boxed());
        for _ in 0..1000 {
            assert_eq!(until.next().await, Some(1));
        }
        stop.cancel();
        assert_eq!(until.next().await, None);
    }

    #[tokio::test]
    async fn an_idle_stream_is_woken_to_end() {
        let stop = CancellationToken::new();
        let mut until = Until::new(
            stream::pending::<u8>(),
            stop.clone().cancelled_owned().boxed(),
        );
        assert!(until.next().now_or_never().is_none());
        let next = tokio::spawn(async move { until.next().await });
        stop.cancel();
        assert_eq!(next.await.ok(), Some(None));
    }
}
