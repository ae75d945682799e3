//! Handlers of the webhook control RPCs: pause, resume, reset a cursor, list deliveries.
//! Each decodes, calls the delivery service (which checks that the caller is an admin) and
//! encodes; the `EventRelay` impl in `grpc/mod.rs` only forwards to them.

use super::convert::{self, parse_id};
use crate::app::App;
use crate::auth::Principal;
use crate::delivery::DeliveryRecord;
use crate::error::Result;
use crate::events::format_time;
use crate::page::{PageRequest, wire};
use crate::proto;

pub async fn pause(
    app: &App,
    p: Principal,
    r: proto::PauseSubscriptionRequest,
) -> Result<proto::PauseSubscriptionResponse> {
    let s = app.delivery.pause(&p, parse_id(&r.id, "id")?).await?;
    Ok(proto::PauseSubscriptionResponse {
        subscription: Some(convert::subscription(s)),
    })
}

pub async fn resume(
    app: &App,
    p: Principal,
    r: proto::ResumeSubscriptionRequest,
) -> Result<proto::ResumeSubscriptionResponse> {
    let s = app.delivery.resume(&p, parse_id(&r.id, "id")?).await?;
    Ok(proto::ResumeSubscriptionResponse {
        subscription: Some(convert::subscription(s)),
    })
}

pub async fn reset_cursor(
    app: &App,
    p: Principal,
    r: proto::ResetSubscriptionCursorRequest,
) -> Result<proto::ResetSubscriptionCursorResponse> {
    let s = app
        .delivery
        .reset_cursor(&p, parse_id(&r.id, "id")?, r.offset)
        .await?;
    Ok(proto::ResetSubscriptionCursorResponse {
        subscription: Some(convert::subscription(s)),
    })
}

pub async fn list_deliveries(
    app: &App,
    p: Principal,
    r: proto::ListDeliveriesRequest,
) -> Result<proto::ListDeliveriesResponse> {
    let id = parse_id(&r.subscription_id, "subscription_id")?;
    let d = app
        .delivery
        .deliveries(&p, id, PageRequest::new(r.page, r.page_size))
        .await?;
    Ok(proto::ListDeliveriesResponse {
        deliveries: d.page.items.into_iter().map(delivery).collect(),
        total_count: wire(d.page.total_count),
        next_page: wire(d.page.next_page),
        delivered_offset: d.delivered_offset,
    })
}

fn delivery(d: DeliveryRecord) -> proto::Delivery {
    proto::Delivery {
        id: d.id.to_string(),
        event_offset: d.event_offset,
        event_id: d.event_id.to_string(),
        attempt: d.attempt,
        status: d.status,
        response_status: d.response_status.unwrap_or(0),
        error: d.error.unwrap_or_default(),
        duration_ms: d.duration_ms,
        attempted_at: format_time(&d.attempted_at),
        epoch: d.epoch,
    }
}
