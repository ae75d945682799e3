//! Handlers of the API-key RPCs: create, revoke, and the topic and subscription grants. Each
//! decodes, calls the authentication service (which checks that the caller is an admin) and
//! encodes; the `EventRelay` impl in `grpc/mod.rs` only forwards to them.

use super::convert::{self, parse_id, parse_ids};
use crate::app::App;
use crate::auth::Principal;
use crate::error::Result;
use crate::proto;
use crate::topics::TopicRef;

fn topic_refs(names: &[String]) -> Result<Vec<TopicRef>> {
    names.iter().map(|n| TopicRef::parse(n)).collect()
}

pub async fn create(
    app: &App,
    p: Principal,
    r: proto::CreateApiKeyRequest,
) -> Result<proto::CreateApiKeyResponse> {
    let key = app
        .auth
        .create_key(
            &p,
            convert::key_type(r.r#type)?,
            &r.name,
            &topic_refs(&r.topic_names)?,
            &parse_ids(&r.subscription_ids, "subscription_ids")?,
        )
        .await?;
    Ok(proto::CreateApiKeyResponse {
        api_key: Some(convert::api_key(key)),
    })
}

pub async fn revoke(
    app: &App,
    p: Principal,
    r: proto::RevokeApiKeyRequest,
) -> Result<proto::RevokeApiKeyResponse> {
    let key = app.auth.revoke_key(&p, parse_id(&r.id, "id")?).await?;
    Ok(proto::RevokeApiKeyResponse {
        api_key: Some(convert::api_key(key)),
    })
}

pub async fn add_subscriptions(
    app: &App,
    p: Principal,
    r: proto::AddSubscriptionsToApiKeyRequest,
) -> Result<proto::AddSubscriptionsToApiKeyResponse> {
    let ids = parse_ids(&r.subscription_ids, "subscription_ids")?;
    let added = app
        .auth
        .grant_subscriptions(&p, parse_id(&r.id, "id")?, &ids)
        .await?;
    Ok(proto::AddSubscriptionsToApiKeyResponse {
        id: r.id,
        subscription_ids: added.iter().map(ToString::to_string).collect(),
    })
}

pub async fn delete_subscriptions(
    app: &App,
    p: Principal,
    r: proto::DeleteSubscriptionsFromApiKeyRequest,
) -> Result<proto::DeleteSubscriptionsFromApiKeyResponse> {
    let ids = parse_ids(&r.subscription_ids, "subscription_ids")?;
    let removed = app
        .auth
        .withdraw_subscriptions(&p, parse_id(&r.id, "id")?, &ids)
        .await?;
    Ok(proto::DeleteSubscriptionsFromApiKeyResponse {
        id: r.id,
        subscription_ids: removed.iter().map(ToString::to_string).collect(),
    })
}

pub async fn add_topics(
    app: &App,
    p: Principal,
    r: proto::AddTopicsToApiKeyRequest,
) -> Result<proto::AddTopicsToApiKeyResponse> {
    let topics = topic_refs(&r.topic_names)?;
    let added = app
        .auth
        .grant_topics(&p, parse_id(&r.id, "id")?, &topics)
        .await?;
    Ok(proto::AddTopicsToApiKeyResponse {
        id: r.id,
        topic_names: added,
    })
}

pub async fn delete_topics(
    app: &App,
    p: Principal,
    r: proto::DeleteTopicsFromApiKeyRequest,
) -> Result<proto::DeleteTopicsFromApiKeyResponse> {
    let topics = topic_refs(&r.topic_names)?;
    let removed = app
        .auth
        .withdraw_topics(&p, parse_id(&r.id, "id")?, &topics)
        .await?;
    Ok(proto::DeleteTopicsFromApiKeyResponse {
        id: r.id,
        topic_names: removed,
    })
}
