//! A request body that must keep arriving: [`IdleTimeout`] fails the body
//! with [`BodyIdle`] when no frame arrives for a while, so a client cannot
//! hold a call (and what the router keeps for it) by never finishing its
//! request. Used by both listeners; each maps [`BodyIdle`] to its wire's
//! status (gRPC `DEADLINE_EXCEEDED`, HTTP 408).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

/// The request body stopped arriving for longer than the idle limit.
#[derive(Debug, thiserror::Error)]
#[error("the request body sent nothing for {0:?}")]
pub struct BodyIdle(pub Duration);

impl BodyIdle {
    /// Whether `error` (or one of its sources) is a [`BodyIdle`].
    pub fn is_in(error: &(dyn std::error::Error + 'static)) -> bool {
        let mut next = Some(error);
        while let Some(e) = next {
            if e.is::<BodyIdle>() {
                return true;
            }
            next = e.source();
        }
        false
    }
}

/// `B`, failing with [`BodyIdle`] once it sends nothing for `idle`.
#[derive(Debug)]
pub struct IdleTimeout<B> {
    inner: B,
    idle: Duration,
    /// Made when the body first has nothing ready, dropped when a frame
    /// comes: a body that arrives whole (the usual gRPC request: headers
    /// and message in one write) never touches the timer wheel.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<B> IdleTimeout<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, idle: Duration) -> Self {
        IdleTimeout {
            inner,
            idle,
            timer: None,
        }
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let idle = this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyIdle(idle))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::BodyExt;

    /// A body that sends one chunk, then nothing, forever.
    struct Stalls(Option<Bytes>);

    impl Body for Stalls {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            match self.0.take() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None => Poll::Pending,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_sending_fails_after_the_idle_limit() {
        use tokio::time::Instant;
        let mut body = IdleTimeout::new(
            Stalls(Some(Bytes::from_static(b"x"))),
            Duration::from_secs(10),
        );
        let started = Instant::now();
        assert!(body.frame().await.unwrap().unwrap().is_data());
        let error = body.frame().await.unwrap().unwrap_err();
        assert!(BodyIdle::is_in(&*error), "{error}");
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_finished_body_is_not_cut() {
        let body = IdleTimeout::new(
            http_body_util::Full::new(Bytes::from_static(b"abc")),
            Duration::from_secs(1),
        );
        assert_eq!(body.collect().await.unwrap().to_bytes(), "abc");
    }
}
