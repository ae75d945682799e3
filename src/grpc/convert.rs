//! Conversions between protobuf messages and domain types. They live beside the gRPC
//! adapter so the domain never sees generated code.

use crate::auth::{ApiKey, KeyType};
use crate::error::{Error, Result};
use crate::events::{self, DeadLetter, Event, NewEvent, format_time};
use crate::page::wire;
use crate::proto;
use crate::retention::{Policy, TopicRetention};
use crate::subscriptions::{NewSubscription, Subscription};
use crate::topics::Topic;
use uuid::Uuid;

/// Parses an id field; a malformed UUID is INVALID_ARGUMENT (the original crashed with UNKNOWN).
pub fn parse_id(s: &str, what: &str) -> Result<Uuid> {
    Uuid::parse_str(s.trim())
        .map_err(|_| Error::invalid(format!("{what} is not a valid UUID: {s:?}")))
}

/// Parses a list of ids.
pub fn parse_ids(v: &[String], what: &str) -> Result<Vec<Uuid>> {
    v.iter().map(|s| parse_id(s, what)).collect()
}

/// A topic without its retention (DeleteTopic's answer: the topic is gone).
pub fn topic(t: Topic) -> proto::Topic {
    proto::Topic {
        id: t.id.to_string(),
        name: t.name,
        retention: None,
        stats: None,
        dedupe_window_seconds: 0,
    }
}

/// A topic with its retention and statistics.
/// A topic as listed or answered, with its retention and dedupe window.
pub fn listed_topic(t: crate::usecases::ListedTopic) -> proto::Topic {
    topic_with(t.topic, t.retention.as_ref(), t.dedupe_window_seconds)
}

pub fn topic_with(t: Topic, r: Option<&TopicRetention>, window: i64) -> proto::Topic {
    proto::Topic {
        dedupe_window_seconds: window,
        retention: r.map(|r| retention_out(&r.policy)),
        stats: r.map(|r| {
            let s = &r.stats;
            proto::TopicStats {
                first_offset: s.bounds.first,
                last_offset: s.bounds.last,
                event_count: s.bounds.retained(),
                oldest_event_at: s.oldest_at.as_ref().map(format_time).unwrap_or_default(),
                bytes: s.bytes_on_disk,
                pruned_events: s.pruned_events,
                pruned_at: s.pruned_at.as_ref().map(format_time).unwrap_or_default(),
            }
        }),
        ..topic(t)
    }
}

/// A retention policy from the wire (0 = no limit; negative numbers are refused).
pub fn retention(r: proto::TopicRetention) -> Result<Policy> {
    Policy::from_parts(
        r.max_age_seconds,
        r.max_events,
        r.max_bytes,
        r.drop_undelivered,
    )
}

fn retention_out(p: &Policy) -> proto::TopicRetention {
    proto::TopicRetention {
        max_age_seconds: p.max_age_seconds(),
        max_events: p.max_events.unwrap_or(0),
        max_bytes: p.max_bytes.unwrap_or(0),
        drop_undelivered: p.drop_undelivered,
    }
}

/// A publish request from the wire; malformed conditions are INVALID_ARGUMENT.
pub fn publish(r: proto::PublishEventsRequest) -> Result<events::Publish> {
    Ok(events::Publish {
        guard: events::Guard::parse(r.expected_last_offset, &r.producer_id, r.producer_epoch)?,
        topic: r.topic,
        events: r.events.into_iter().map(new_event).collect(),
        durable: r.durable,
        all_or_nothing: r.all_or_nothing,
    })
}

/// A publish's answer.
pub fn published(p: events::Published) -> proto::PublishEventsResponse {
    let indexes = |v: Vec<usize>| v.into_iter().map(|i| i as i32).collect();
    proto::PublishEventsResponse {
        events: p.events.into_iter().map(event).collect(),
        duplicate_indexes: indexes(p.duplicates),
        dead_lettered_indexes: indexes(p.dead_lettered),
    }
}

pub fn new_event(e: proto::NewEvent) -> NewEvent {
    NewEvent {
        name: e.name,
        data: e.data,
        source: e.source,
        group_key: e.group_key,
        reference_key: e.reference_key,
        trace_key: e.trace_key,
        user_id: e.user_id,
        anonymous_id: e.anonymous_id,
        occurred_at: e.occurred_at,
        context: e.context.into_iter().collect(),
        idempotency_key: e.idempotency_key,
    }
}

fn new_event_out(e: NewEvent) -> proto::NewEvent {
    proto::NewEvent {
        name: e.name,
        data: e.data,
        source: e.source,
        group_key: e.group_key,
        reference_key: e.reference_key,
        trace_key: e.trace_key,
        user_id: e.user_id,
        anonymous_id: e.anonymous_id,
        occurred_at: e.occurred_at,
        context: e.context.into_iter().collect(),
        idempotency_key: e.idempotency_key,
    }
}

pub fn event(e: Event) -> proto::Event {
    proto::Event {
        topic: e.topic(),
        id: e.id.to_string(),
        name: e.name,
        data: e.data,
        source: e.source,
        group_key: e.group_key,
        reference_key: e.reference_key,
        trace_key: e.trace_key,
        user_id: e.user_id,
        anonymous_id: e.anonymous_id,
        occurred_at: format_time(&e.occurred_at),
        context: e.context.into_iter().collect(),
        // The int32 field is kept for old clients and saturates; offset64 is exact.
        offset: wire(e.offset),
        offset64: e.offset,
        errors: vec![],
    }
}

pub fn dead_letter(d: DeadLetter) -> proto::DeadLetter {
    proto::DeadLetter {
        id: d.id.to_string(),
        topic: d.topic,
        event: Some(new_event_out(d.event)),
        errors: d.errors,
        inserted_at: format_time(&d.inserted_at),
    }
}

pub fn filters(v: Vec<proto::PullEventsFilter>) -> Result<Vec<events::Filter>> {
    events::parse_filters(
        v.iter()
            .map(|f| (f.field.as_str(), f.comparison.as_str(), f.value.as_str())),
    )
}

pub fn new_subscription(s: proto::NewSubscription) -> NewSubscription {
    NewSubscription {
        name: s.name,
        topic_name: s.topic_name,
        topic_identifier: s.topic_identifier,
        push: s.push,
        config: s.config.into_iter().collect(),
        paused: s.paused,
        subscription_type: s.subscription_type,
    }
}

pub fn subscription(s: Subscription) -> proto::Subscription {
    proto::Subscription {
        id: s.id.to_string(),
        name: s.name,
        topic_identifier: s.topic.identifier_str().to_owned(),
        topic_name: s.topic.name.to_string(),
        push: s.push,
        config: s.config.into_iter().collect(),
        paused: s.paused,
        subscription_type: s.kind.as_str().to_owned(),
        // Shown only once, by CreateSubscription (see `subscription_with_secret`).
        signing_secret: String::new(),
    }
}

/// A just-created subscription, with its signing secret: the only time it is sent.
pub fn subscription_with_secret(s: Subscription) -> proto::Subscription {
    let secret = s.signing_secret.clone();
    proto::Subscription {
        signing_secret: secret,
        ..subscription(s)
    }
}

pub fn key_type(t: i32) -> Result<KeyType> {
    match proto::ApiKeyType::try_from(t) {
        Ok(proto::ApiKeyType::Producer) => Ok(KeyType::Producer),
        Ok(proto::ApiKeyType::Consumer) => Ok(KeyType::Consumer),
        Ok(proto::ApiKeyType::Admin) => Ok(KeyType::Admin),
        Err(_) => Err(Error::invalid(format!("unknown api key type {t}"))),
    }
}

pub fn api_key(k: ApiKey) -> proto::ApiKey {
    let kind = match k.key_type {
        KeyType::Producer => proto::ApiKeyType::Producer,
        KeyType::Consumer => proto::ApiKeyType::Consumer,
        KeyType::Admin => proto::ApiKeyType::Admin,
    };
    let status = if k.revoked {
        proto::ApiKeyStatus::Revoked
    } else {
        proto::ApiKeyStatus::Active
    };
    proto::ApiKey {
        bearer_token: k.bearer_token().unwrap_or_default(),
        id: k.id.to_string(),
        key: k.key,
        secret: k.secret.unwrap_or_default(),
        status: status as i32,
        r#type: kind as i32,
        name: k.name,
    }
}
