//! The shape every check but authentication has: a gate around the
//! endpoint. [`Gate::admit`] runs before the request goes in — it refuses
//! it with a response, or lets it through with a ticket — and
//! [`Gate::finish`] runs on the way out with that ticket and the response.
//! [`GateLayer`] makes a gate a tower layer whose service adds no
//! allocation and no boxed future to a request.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

/// What a gate decides about a request.
pub enum Verdict<T> {
    /// Let it through, with this ticket for [`Gate::finish`].
    Pass(T),
    /// Answer it with this response instead.
    Refuse(Response),
}

/// A check around the endpoint (see the module documentation).
pub trait Gate: Clone + Send + Sync + 'static {
    /// What letting a request through hands to [`Gate::finish`].
    type Ticket: Send + 'static;

    /// Lets the request through (it may add to it), or answers it.
    fn admit(&self, req: &mut Request) -> Verdict<Self::Ticket>;

    /// The response on its way out.
    fn finish(&self, ticket: Self::Ticket, resp: Response) -> Response {
        drop(ticket);
        resp
    }
}

/// A [`Gate`] as a tower layer.
#[derive(Clone)]
pub struct GateLayer<G>(pub G);

impl<G: Clone, S> Layer<S> for GateLayer<G> {
    type Service = Gated<G, S>;

    fn layer(&self, inner: S) -> Gated<G, S> {
        Gated {
            gate: self.0.clone(),
            inner,
        }
    }
}

/// The service of a [`GateLayer`].
#[derive(Clone)]
pub struct Gated<G, S> {
    gate: G,
    inner: S,
}

impl<G, S> Service<Request> for Gated<G, S>
where
    G: Gate,
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = GatedFuture<G, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        match self.gate.admit(&mut req) {
            Verdict::Pass(ticket) => GatedFuture::Admitted {
                inner: self.inner.call(req),
                gate: self.gate.clone(),
                ticket: Some(ticket),
            },
            Verdict::Refuse(refusal) => GatedFuture::Refused {
                refusal: Some(refusal),
            },
        }
    }
}

pin_project! {
    /// The response of a [`Gated`] service.
    #[project = GatedProjection]
    pub enum GatedFuture<G: Gate, F> {
        /// Let through: the endpoint's response, finished by the gate.
        Admitted {
            #[pin]
            inner: F,
            gate: G,
            ticket: Option<G::Ticket>,
        },
        /// Answered by the gate.
        Refused { refusal: Option<Response> },
    }
}

impl<G, F> Future for GatedFuture<G, F>
where
    G: Gate,
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            GatedProjection::Admitted {
                inner,
                gate,
                ticket,
            } => {
                let Ok(resp) = std::task::ready!(inner.poll(cx));
                Poll::Ready(Ok(match ticket.take() {
                    Some(ticket) => gate.finish(ticket, resp),
                    None => resp,
                }))
            }
            GatedProjection::Refused { refusal } => {
                Poll::Ready(Ok(refusal.take().unwrap_or_default()))
            }
        }
    }
}
