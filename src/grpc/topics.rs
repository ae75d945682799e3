//! Handlers of the topic RPCs: list, create, delete, update. Each decodes, calls the topic
//! management use case ([`crate::usecases::TopicAdmin`], which checks that the caller is an
//! admin) and encodes; the `EventRelay` impl in `grpc/mod.rs` only forwards to them.

use super::convert::{self, parse_id};
use crate::app::App;
use crate::auth::Principal;
use crate::error::Result;
use crate::page::{PageRequest, wire};
use crate::proto;
use crate::topics::{DedupeWindow, TopicName};

pub async fn list(
    app: &App,
    p: Principal,
    r: proto::ListTopicsRequest,
) -> Result<proto::ListTopicsResponse> {
    let page = app
        .topic_admin
        .list(&p, PageRequest::new(r.page, r.page_size), "")
        .await?;
    Ok(proto::ListTopicsResponse {
        topics: page.items.into_iter().map(convert::listed_topic).collect(),
        total_count: wire(page.total_count),
        next_page: wire(page.next_page),
        previous_page: wire(page.previous_page),
        total_pages: wire(page.total_pages),
    })
}

pub async fn create(
    app: &App,
    p: Principal,
    r: proto::CreateTopicRequest,
) -> Result<proto::CreateTopicResponse> {
    let name = TopicName::parse(&r.name)?;
    let policy = r.retention.map(convert::retention).transpose()?;
    let window = DedupeWindow::parse(r.dedupe_window_seconds)?;
    let t = app.topic_admin.create(&p, &name, policy, window).await?;
    Ok(proto::CreateTopicResponse {
        topic: Some(convert::listed_topic(t)),
    })
}

pub async fn delete(
    app: &App,
    p: Principal,
    r: proto::DeleteTopicRequest,
) -> Result<proto::DeleteTopicResponse> {
    let t = app.topic_admin.delete(&p, parse_id(&r.id, "id")?).await?;
    Ok(proto::DeleteTopicResponse {
        topic: Some(convert::topic(t)),
    })
}

pub async fn update(
    app: &App,
    p: Principal,
    r: proto::UpdateTopicRequest,
) -> Result<proto::UpdateTopicResponse> {
    let id = parse_id(&r.id, "id")?;
    let policy = r.retention.map(convert::retention).transpose()?;
    let window = r
        .dedupe_window_seconds
        .map(DedupeWindow::parse)
        .transpose()?;
    let t = app.topic_admin.update(&p, id, policy, window).await?;
    Ok(proto::UpdateTopicResponse {
        topic: Some(convert::listed_topic(t)),
    })
}
