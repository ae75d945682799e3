//! Handlers of the subscription RPCs: list, get, create, delete. Each decodes, calls the
//! subscriptions service (which decides who may act) and encodes; the `EventRelay` impl in
//! `grpc/mod.rs` only forwards to them.

use super::convert::{self, parse_id};
use crate::app::App;
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::page::{PageRequest, wire};
use crate::proto;

pub async fn list(
    app: &App,
    p: Principal,
    r: proto::ListSubscriptionsRequest,
) -> Result<proto::ListSubscriptionsResponse> {
    let page = app
        .subscriptions
        .list(&p, PageRequest::new(r.page, r.page_size))
        .await?;
    Ok(proto::ListSubscriptionsResponse {
        subscriptions: page.items.into_iter().map(convert::subscription).collect(),
        total_count: wire(page.total_count),
        next_page: wire(page.next_page),
        previous_page: wire(page.previous_page),
        total_pages: wire(page.total_pages),
    })
}

pub async fn get(
    app: &App,
    p: Principal,
    r: proto::GetSubscriptionRequest,
) -> Result<proto::GetSubscriptionResponse> {
    let s = app.subscriptions.get(&p, parse_id(&r.id, "id")?).await?;
    Ok(proto::GetSubscriptionResponse {
        subscription: Some(convert::subscription(s)),
    })
}

pub async fn create(
    app: &App,
    p: Principal,
    r: proto::CreateSubscriptionRequest,
) -> Result<proto::CreateSubscriptionResponse> {
    let new = r
        .subscription
        .ok_or_else(|| Error::invalid("subscription is required"))?;
    let s = app
        .subscriptions
        .create(&p, convert::new_subscription(new))
        .await?;
    Ok(proto::CreateSubscriptionResponse {
        subscription: Some(convert::subscription_with_secret(s)),
    })
}

pub async fn delete(
    app: &App,
    p: Principal,
    r: proto::DeleteSubscriptionRequest,
) -> Result<proto::DeleteSubscriptionResponse> {
    let s = app.subscriptions.delete(&p, parse_id(&r.id, "id")?).await?;
    Ok(proto::DeleteSubscriptionResponse {
        subscription: Some(convert::subscription(s)),
    })
}
