//! A stream that ends when a signal fires: [`until`], and
//! [`Lifecycle::until_draining`](crate::Lifecycle::until_draining) for "end this stream when
//! the pod drains".
//!
//! # Example
//! ```
//! use futures_util::{stream, StreamExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let ticks = stream::iter(0..).then(|i| async move {
//!     tokio::task::yield_now().await;
//!     i
//! });
//! let mut ticks = std::pin::pin!(podcycle::until(ticks, stopped));
//! assert_eq!(ticks.next().await, Some(0));
//! stop.send(()).unwrap();
//! assert_eq!(ticks.next().await, None); // ended by the signal
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;

pin_project_lite::pin_project! {
    /// The stream returned by [`until`]: `stream`'s items until `signal` completes, then the
    /// end. Items already ready when the signal fires are not yielded.
    #[must_use = "streams do nothing unless polled"]
    #[derive(Debug)]
    pub struct Until<S, F> {
        #[pin]
        stream: S,
        #[pin]
        signal: F,
        ended: bool,
    }
}

/// Yields `stream`'s items until `signal` completes (e.g. [`Lifecycle::draining`](crate::Lifecycle::draining)),
/// then ends. To send a last event (`event: reconnect`) first, chain it:
/// `until(stream, signal).chain(stream::once(...))` — it then also follows a normal end.
pub fn until<S: Stream, F: Future>(stream: S, signal: F) -> Until<S, F> {
    Until {
        stream,
        signal,
        ended: false,
    }
}

impl<S: Stream, F: Future> Stream for Until<S, F> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        if this.signal.poll(cx).is_ready() {
            *this.ended = true;
            return Poll::Ready(None);
        }
        let next = this.stream.poll_next(cx);
        if let Poll::Ready(None) = next {
            *this.ended = true;
        }
        next
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.ended {
            (0, Some(0))
        } else {
            (0, self.stream.size_hint().1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{stream, StreamExt};

    #[tokio::test(start_paused = true)]
    async fn ends_when_the_signal_fires_and_stays_ended() {
        let ticks = stream::iter(0..).then(|i| async move {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            i
        });
        let signal = tokio::time::sleep(std::time::Duration::from_millis(2500));
        let items: Vec<u32> = until(ticks, signal).collect().await;
        assert_eq!(items, vec![0, 1]);
    }

    #[tokio::test]
    async fn a_stream_that_ends_first_ends_normally() {
        let items: Vec<u32> = until(stream::iter([1, 2]), std::future::pending::<()>())
            .collect()
            .await;
        assert_eq!(items, vec![1, 2]);
    }
}
