//! The shape every check but authentication has. [`Check::admit`] runs
//! before the request goes in — it answers the request itself, or lets it
//! through, handing on what it admitted it with — and [`Check::finish`]
//! runs on the way out with that and the response. [`CheckLayer`] makes a
//! check a tower layer whose service adds no allocation and no boxed future
//! to a request.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

/// What a check decides about a request.
pub enum Verdict<T> {
    /// Let it through, handing this to [`Check::finish`].
    Pass(T),
    /// Answer it with this response instead.
    Refuse(Response),
}

/// A check around the endpoint (see the module documentation).
pub trait Check: Clone + Send + Sync + 'static {
    /// What letting a request through hands to [`Check::finish`].
    type Admitted: Send + 'static;

    /// Lets the request through (it may add to it), or answers it.
    fn admit(&self, req: &mut Request) -> Verdict<Self::Admitted>;

    /// The response on its way out.
    fn finish(&self, admitted: Self::Admitted, resp: Response) -> Response {
        drop(admitted);
        resp
    }
}

/// A [`Check`] as a tower layer.
#[derive(Clone)]
pub struct CheckLayer<C>(pub C);

impl<C: Clone, S> Layer<S> for CheckLayer<C> {
    type Service = Checked<C, S>;

    fn layer(&self, inner: S) -> Checked<C, S> {
        Checked {
            check: self.0.clone(),
            inner,
        }
    }
}

/// The service of a [`CheckLayer`].
#[derive(Clone)]
pub struct Checked<C, S> {
    check: C,
    inner: S,
}

impl<C, S> Service<Request> for Checked<C, S>
where
    C: Check,
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = CheckedFuture<C, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        match self.check.admit(&mut req) {
            Verdict::Pass(admitted) => CheckedFuture::Admitted {
                inner: self.inner.call(req),
                check: self.check.clone(),
                admitted: Some(admitted),
            },
            Verdict::Refuse(refusal) => CheckedFuture::Refused {
                refusal: Some(refusal),
            },
        }
    }
}

pin_project! {
    /// The response of a [`Checked`] service.
    #[project = CheckedProjection]
    pub enum CheckedFuture<C: Check, F> {
        /// Let through: the endpoint's response, finished by the check.
        Admitted {
            #[pin]
            inner: F,
            check: C,
            admitted: Option<C::Admitted>,
        },
        /// Answered by the check.
        Refused { refusal: Option<Response> },
    }
}

impl<C, F> Future for CheckedFuture<C, F>
where
    C: Check,
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CheckedProjection::Admitted {
                inner,
                check,
                admitted,
            } => {
                let Ok(resp) = std::task::ready!(inner.poll(cx));
                Poll::Ready(Ok(match admitted.take() {
                    Some(admitted) => check.finish(admitted, resp),
                    None => resp,
                }))
            }
            CheckedProjection::Refused { refusal } => {
                Poll::Ready(Ok(refusal.take().unwrap_or_default()))
            }
        }
    }
}
