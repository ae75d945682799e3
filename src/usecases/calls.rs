//! Per-key rate limits, decided once for every transport. A transport says what its caller
//! does (a [`Call`]); this module picks the limit that counts it (durable or live publish,
//! pull, admin) and asks the node's [`RateLimiter`]. Publishing and pulling count inside their
//! use cases here ([`Calls::publish`], [`Calls::pull`]), so gRPC and websockets publish under
//! the same limits without either choosing one. No transport sees the limiter.

use crate::auth::Principal;
use crate::error::Result;
use crate::events::{Events, Publish, Published, PullBatch, PullQuery};
use crate::ratelimit::{CallKind, RateLimiter};
use std::sync::Arc;

/// What a caller does, as far as rate limits are concerned. The name each carries is the
/// call's name in the refusal ("Rate limit exceeded for <name> at ...").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// Publishing events, durable (stored) or live only.
    Publish {
        /// Whether the events are stored.
        durable: bool,
    },
    /// Reading a batch of stored events (PullEvents).
    Pull,
    /// Opening a listener of events: gRPC `StreamEvents`, a websocket `phx_join`, an SSE
    /// stream. A listener counts as a pull.
    Listen(&'static str),
    /// Anything else (topics, subscriptions, keys, JWTs, dead letters, webhook control), by
    /// the name of its RPC.
    Manage(&'static str),
}

impl Call {
    /// The limit this call counts against.
    fn limit(self) -> CallKind {
        match self {
            Call::Publish { durable: true } => CallKind::DurablePublish,
            Call::Publish { durable: false } => CallKind::LivePublish,
            Call::Pull | Call::Listen(_) => CallKind::Pull,
            Call::Manage(_) => CallKind::Admin,
        }
    }

    /// The call's name in a refusal.
    fn name(self) -> &'static str {
        match self {
            Call::Publish { .. } => "PublishEvents",
            Call::Pull => "PullEvents",
            Call::Listen(name) | Call::Manage(name) => name,
        }
    }
}

/// Calls as the rate limits count them; cheap to clone.
#[derive(Clone)]
pub struct Calls {
    limiter: Arc<RateLimiter>,
    events: Events,
}

impl Calls {
    /// The use cases over the node's limiter and events service.
    pub fn new(limiter: RateLimiter, events: Events) -> Self {
        Calls {
            limiter: Arc::new(limiter),
            events,
        }
    }

    /// Counts one call by the caller's key; over its limit is RESOURCE_EXHAUSTED.
    pub async fn admit(&self, p: &Principal, call: Call) -> Result<()> {
        self.limiter
            .check(p.key_id, call.limit(), call.name())
            .await
    }

    /// Publishes, counted against the key's durable or live publish limit as the request
    /// asks.
    pub async fn publish(&self, p: &Principal, req: Publish) -> Result<Published> {
        let call = Call::Publish {
            durable: req.durable,
        };
        self.admit(p, call).await?;
        self.events.publish(p, req).await
    }

    /// Pulls a batch of stored events, counted against the key's pull limit.
    pub async fn pull(&self, p: &Principal, q: &PullQuery) -> Result<PullBatch> {
        self.admit(p, Call::Pull).await?;
        self.events.pull(p, q).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_call_counts_against_its_limit_under_its_name() {
        let table = [
            (
                Call::Publish { durable: true },
                CallKind::DurablePublish,
                "PublishEvents",
            ),
            (
                Call::Publish { durable: false },
                CallKind::LivePublish,
                "PublishEvents",
            ),
            (Call::Pull, CallKind::Pull, "PullEvents"),
            (Call::Listen("phx_join"), CallKind::Pull, "phx_join"),
            (Call::Listen("sse"), CallKind::Pull, "sse"),
            (Call::Manage("ListTopics"), CallKind::Admin, "ListTopics"),
        ];
        for (call, limit, name) in table {
            assert_eq!((call.limit(), call.name()), (limit, name), "{call:?}");
        }
    }
}
