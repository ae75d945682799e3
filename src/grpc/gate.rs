//! The gate in front of the EventRelay gRPC service: it authenticates the `authorization`
//! header of every call before the request body is read, and answers UNAUTHENTICATED
//! (trailers only) without ever polling the body of a caller without valid credentials.
//!
//! Why here and not in the handlers: tonic decodes a request message in full before a handler
//! runs, and a protobuf `repeated` field of empty messages costs 2 bytes on the wire and a few
//! hundred in memory. An unauthenticated caller therefore could make a node allocate a hundred
//! times what it sends. Behind the gate the work an unauthenticated request causes is a header
//! lookup and a cached key lookup, whatever its body. The authenticated [`Caller`] rides on in
//! the request's extensions, so handlers do not authenticate a second time.
//!
//! The health and reflection services are not wrapped: probes and tools call them without
//! credentials.

use super::count::Counted;
use crate::auth::{Auth, Principal};
use crate::metrics::Metrics;
use crate::proto::event_relay_server::EventRelayServer;
use futures::future::BoxFuture;
use std::convert::Infallible;
use std::task::{Context, Poll};
use tonic::Status;
use tonic::body::Body;
use tonic::server::NamedService;
use tower::Service;

/// The authenticated caller of a gRPC call, as the gate found it.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Who is calling.
    pub principal: Principal,
    /// When the bearer expires by itself (a JWT's `exp`, unix seconds).
    pub expires: Option<i64>,
}

/// A gRPC service behind the authentication gate.
#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
    auth: Auth,
    metrics: Metrics,
    max_events: usize,
}

impl<S> Gate<S> {
    /// `inner` behind a gate that authenticates with `auth`, counts refusals in `metrics`, and
    /// refuses a `PublishEvents` message of more than `max_events` events before it is decoded.
    pub fn new(inner: S, auth: Auth, metrics: Metrics, max_events: usize) -> Self {
        Gate {
            inner,
            auth,
            metrics,
            max_events,
        }
    }
}

impl<S: NamedService> NamedService for Gate<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Gate<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        // The clone is the one that was not polled ready: keep the ready one for this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        let metrics = self.metrics.clone();
        let max_events = self.max_events;
        Box::pin(async move {
            let start = std::time::Instant::now();
            let header = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            match auth.authenticate_until(header).await {
                Ok((principal, expires)) => {
                    req.extensions_mut().insert(Caller { principal, expires });
                    if rpc_of(req.uri().path()) == "PublishEvents" {
                        // Counted on the raw bytes: an allowed caller cannot make the node
                        // decode more events than a request may hold.
                        req = req.map(|body| Body::new(Counted::new(body, max_events)));
                    }
                    inner.call(req).await
                }
                Err(e) => {
                    let rpc = rpc_of(req.uri().path());
                    // The body is dropped unread: h2 resets the stream, the client stops sending.
                    drop(req);
                    let status = Status::from(e);
                    metrics.rpc(rpc, "unauthenticated", start.elapsed());
                    Ok(status.into_http())
                }
            }
        })
    }
}

/// The RPCs of the service, for metric labels (`other` for unknown paths).
const RPCS: [&str; 23] = [
    "PublishEvents",
    "PullEvents",
    "ListTopics",
    "CreateTopic",
    "DeleteTopic",
    "ListSubscriptions",
    "GetSubscription",
    "CreateSubscription",
    "DeleteSubscription",
    "CreateApiKey",
    "RevokeApiKey",
    "AddSubscriptionsToApiKey",
    "DeleteSubscriptionsFromApiKey",
    "AddTopicsToApiKey",
    "DeleteTopicsFromApiKey",
    "CreateJWT",
    "ListDeadLetters",
    "PauseSubscription",
    "ResumeSubscription",
    "ResetSubscriptionCursor",
    "ListDeliveries",
    "StreamEvents",
    "other",
];

/// `PublishEvents` for `/eventrelay.EventRelay/PublishEvents`.
fn rpc_of(path: &str) -> &'static str {
    let method = path.rsplit('/').next().unwrap_or_default();
    RPCS.iter()
        .find(|r| **r == method)
        .copied()
        .unwrap_or("other")
}

/// The EventRelay service as served: behind the gate, with `max_message` as its decoding limit.
pub fn service(
    app: &crate::app::App,
    max_message: usize,
    max_reply: usize,
) -> Gate<EventRelayServer<super::Service>> {
    let server = EventRelayServer::new(super::Service::new(app.clone()))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_reply);
    Gate::new(
        server,
        app.auth.clone(),
        app.metrics.clone(),
        app.events.max_events_per_request(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_names_come_from_the_path() {
        assert_eq!(
            rpc_of("/eventrelay.EventRelay/PublishEvents"),
            "PublishEvents"
        );
        assert_eq!(rpc_of("/eventrelay.EventRelay/CreateJWT"), "CreateJWT");
        assert_eq!(rpc_of("/eventrelay.EventRelay/Nope"), "other");
        assert_eq!(rpc_of(""), "other");
    }
}
