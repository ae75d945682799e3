//! The gRPC transport: authenticate (the [`gate`], before the body is decoded), decode, call a
//! domain service, encode. No SQL and no policy: the services decide who may act, and
//! [`crate::usecases::Calls`] which rate limit a call counts against. The `EventRelay` impl
//! here handles the event RPCs and forwards the others to their group's file (`topics.rs`,
//! `subscriptions.rs`, `keys.rs`, `control.rs`).

mod call;
mod control;
mod convert;
mod count;
pub mod gate;
mod keys;
pub mod server;
mod status;
pub mod stream;
mod subscriptions;
mod topics;

use crate::app::App;
use crate::events::PullQuery;
use crate::page::{PageRequest, wire};
use crate::proto::{self, event_relay_server::EventRelay};
use crate::topics::TopicRef;
use tonic::{Request, Response, Status};

pub use convert::event as event_to_proto;

/// The EventRelay gRPC service over the node's domain services.
#[derive(Clone)]
pub struct Service {
    app: App,
}

impl Service {
    /// The service.
    pub fn new(app: App) -> Self {
        Service { app }
    }
}

/// What every handler returns.
type Reply<T> = std::result::Result<Response<T>, Status>;

#[tonic::async_trait]
impl EventRelay for Service {
    async fn publish_events(
        &self,
        req: Request<proto::PublishEventsRequest>,
    ) -> Reply<proto::PublishEventsResponse> {
        self.call("PublishEvents", async {
            let p = self.caller(&req)?.0;
            let req = convert::publish(req.into_inner())?;
            let published = self.app.calls.publish(&p, req).await?;
            Ok(convert::published(published))
        })
        .await
    }

    async fn pull_events(
        &self,
        req: Request<proto::PullEventsRequest>,
    ) -> Reply<proto::PullEventsResponse> {
        self.call("PullEvents", async {
            let p = self.caller(&req)?.0;
            let r = req.into_inner();
            let q = PullQuery::new(
                TopicRef::parse(&r.topic)?,
                r.batch_size,
                r.offset64.unwrap_or(i64::from(r.offset)),
                convert::filters(r.filters)?,
            )?;
            let b = self.app.calls.pull(&p, &q).await?;
            Ok(proto::PullEventsResponse {
                first_offset: b.first_offset,
                events: b.events.into_iter().map(convert::event).collect(),
                total_count: wire(b.total_count),
                next_offset: wire(b.next_offset),
                previous_offset: wire(b.previous_offset),
                total_batches: wire(b.total_batches),
                total_count64: b.total_count,
                next_offset64: b.next_offset,
                previous_offset64: b.previous_offset,
            })
        })
        .await
    }

    async fn list_topics(
        &self,
        req: Request<proto::ListTopicsRequest>,
    ) -> Reply<proto::ListTopicsResponse> {
        self.call("ListTopics", async {
            let p = self.principal(&req).await?;
            topics::list(&self.app, p, req.into_inner()).await
        })
        .await
    }

    async fn create_topic(
        &self,
        req: Request<proto::CreateTopicRequest>,
    ) -> Reply<proto::CreateTopicResponse> {
        self.call("CreateTopic", async {
            let p = self.principal(&req).await?;
            topics::create(&self.app, p, req.into_inner()).await
        })
        .await
    }

    async fn delete_topic(
        &self,
        req: Request<proto::DeleteTopicRequest>,
    ) -> Reply<proto::DeleteTopicResponse> {
        self.call("DeleteTopic", async {
            let p = self.principal(&req).await?;
            topics::delete(&self.app, p, req.into_inner()).await
        })
        .await
    }

    async fn update_topic(
        &self,
        req: Request<proto::UpdateTopicRequest>,
    ) -> Reply<proto::UpdateTopicResponse> {
        self.call("UpdateTopic", async {
            let p = self.principal(&req).await?;
            topics::update(&self.app, p, req.into_inner()).await
        })
        .await
    }

    async fn list_subscriptions(
        &self,
        req: Request<proto::ListSubscriptionsRequest>,
    ) -> Reply<proto::ListSubscriptionsResponse> {
        self.call("ListSubscriptions", async {
            let p = self.principal(&req).await?;
            subscriptions::list(&self.app, p, req.into_inner()).await
        })
        .await
    }

    async fn get_subscription(
        &self,
        req: Request<proto::GetSubscriptionRequest>,
    ) -> Reply<proto::GetSubscriptionResponse> {
        self.call("GetSubscription", async {
            let p = self.principal(&req).await?;
            subscriptions::get(&self.app, p, req.into_inner()).await
        })
        .await
    }

    async fn create_subscription(
        &self,
        req: Request<proto::CreateSubscriptionRequest>,
    ) -> Reply<proto::CreateSubscriptionResponse> {
        self.call("CreateSubscription", async {
            let p = self.principal(&req).await?;
            subscriptions::create(&self.app, p, req.into_inner()).await
        })
        .await
    }

    async fn delete_subscription(
        &self,
        req: Request<proto::DeleteSubscriptionRequest>,
    ) -> Reply<proto::DeleteSubscriptionResponse> {
        self.call("DeleteSubscription", async {
            let p = self.principal(&req).await?;
            subscriptions::delete(&self.app, p, req.into_inner()).await
        })
        .await
    }

    async fn create_api_key(
        &self,
        req: Request<proto::CreateApiKeyRequest>,
    ) -> Reply<proto::CreateApiKeyResponse> {
        self.call("CreateApiKey", async {
            let p = self.principal(&req).await?;
            keys::create(&self.app, p, req.into_inner()).await
        })
        .await
    }

    async fn revoke_api_key(
        &self,
        req: Request<proto::RevokeApiKeyRequest>,
    ) -> Reply<proto::RevokeApiKeyResponse> {
        self.call("RevokeApiKey", async {
            let p = self.principal(&req).await?;
            keys::revoke(&self.app, p, req.into_inner()).await
        })
        .await
    }

    async fn add_subscriptions_to_api_key(
        &self,
        req: Request<proto::AddSubscriptionsToApiKeyRequest>,
    ) -> Reply<proto::AddSubscriptionsToApiKeyResponse> {
        self.call("AddSubscriptionsToApiKey", async {
            let p = self.principal(&req).await?;
            keys::add_subscriptions(&self.app, p, req.into_inner()).await
        })
        .await
    }

    async fn delete_subscriptions_from_api_key(
        &self,
        req: Request<proto::DeleteSubscriptionsFromApiKeyRequest>,
    ) -> Reply<proto::DeleteSubscriptionsFromApiKeyResponse> {
        self.call("DeleteSubscriptionsFromApiKey", async {
            let p = self.principal(&req).await?;
            keys::delete_subscriptions(&self.app, p, req.into_inner()).await
        })
        .await
    }

    async fn add_topics_to_api_key(
        &self,
        req: Request<proto::AddTopicsToApiKeyRequest>,
    ) -> Reply<proto::AddTopicsToApiKeyResponse> {
        self.call("AddTopicsToApiKey", async {
            let p = self.principal(&req).await?;
            keys::add_topics(&self.app, p, req.into_inner()).await
        })
        .await
    }

    async fn delete_topics_from_api_key(
        &self,
        req: Request<proto::DeleteTopicsFromApiKeyRequest>,
    ) -> Reply<proto::DeleteTopicsFromApiKeyResponse> {
        self.call("DeleteTopicsFromApiKey", async {
            let p = self.principal(&req).await?;
            keys::delete_topics(&self.app, p, req.into_inner()).await
        })
        .await
    }

    async fn create_jwt(
        &self,
        req: Request<proto::CreateJwtRequest>,
    ) -> Reply<proto::CreateJwtResponse> {
        self.call("CreateJWT", async {
            let p = self.principal(&req).await?;
            let jwt = self.app.auth.jwt().issue(&p, req.into_inner().expiration)?;
            Ok(proto::CreateJwtResponse { jwt })
        })
        .await
    }

    async fn list_dead_letters(
        &self,
        req: Request<proto::ListDeadLettersRequest>,
    ) -> Reply<proto::ListDeadLettersResponse> {
        self.call("ListDeadLetters", async {
            let p = self.principal(&req).await?;
            let r = req.into_inner();
            let page = self
                .app
                .events
                .dead_letters(&p, &r.topic, PageRequest::new(r.page, r.page_size))
                .await?;
            Ok(proto::ListDeadLettersResponse {
                dead_letters: page.items.into_iter().map(convert::dead_letter).collect(),
                total_count: wire(page.total_count),
                next_page: wire(page.next_page),
            })
        })
        .await
    }

    async fn pause_subscription(
        &self,
        req: Request<proto::PauseSubscriptionRequest>,
    ) -> Reply<proto::PauseSubscriptionResponse> {
        self.call("PauseSubscription", async {
            let p = self.principal(&req).await?;
            control::pause(&self.app, p, req.into_inner()).await
        })
        .await
    }

    async fn resume_subscription(
        &self,
        req: Request<proto::ResumeSubscriptionRequest>,
    ) -> Reply<proto::ResumeSubscriptionResponse> {
        self.call("ResumeSubscription", async {
            let p = self.principal(&req).await?;
            control::resume(&self.app, p, req.into_inner()).await
        })
        .await
    }

    async fn reset_subscription_cursor(
        &self,
        req: Request<proto::ResetSubscriptionCursorRequest>,
    ) -> Reply<proto::ResetSubscriptionCursorResponse> {
        self.call("ResetSubscriptionCursor", async {
            let p = self.principal(&req).await?;
            control::reset_cursor(&self.app, p, req.into_inner()).await
        })
        .await
    }

    async fn list_deliveries(
        &self,
        req: Request<proto::ListDeliveriesRequest>,
    ) -> Reply<proto::ListDeliveriesResponse> {
        self.call("ListDeliveries", async {
            let p = self.principal(&req).await?;
            control::list_deliveries(&self.app, p, req.into_inner()).await
        })
        .await
    }

    type StreamEventsStream = stream::EventStream;

    async fn stream_events(
        &self,
        req: Request<proto::StreamEventsRequest>,
    ) -> Reply<Self::StreamEventsStream> {
        let opened = self
            .call("StreamEvents", async {
                let (p, expires) = self.caller(&req)?;
                let keepalive = stream::wants_keepalive(req.metadata());
                stream::open(&self.app, p, expires, keepalive, req.into_inner()).await
            })
            .await?;
        let (events, first) = opened.into_inner();
        let mut res = Response::new(events);
        res.metadata_mut()
            .insert(stream::FIRST_OFFSET_HEADER, first.into());
        Ok(res)
    }
}
