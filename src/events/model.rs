//! Event types and their validation. A [`NewEvent`] is what a producer sends; [`validate`]
//! turns it into a [`ValidEvent`] or the list of reasons it was refused (which go to the
//! dead-letter table).

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

/// An event as a producer sends it, transport-neutral.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Event name, required.
    pub name: String,
    /// JSON text; empty means `{}`.
    pub data: String,
    /// Free text.
    pub source: String,
    /// Free text.
    pub group_key: String,
    /// Free text.
    pub reference_key: String,
    /// Free text.
    pub trace_key: String,
    /// Free text.
    pub user_id: String,
    /// Free text.
    pub anonymous_id: String,
    /// ISO-8601 time; empty means now.
    pub occurred_at: String,
    /// String context.
    pub context: BTreeMap<String, String>,
    /// The producer's name for this event, unique within its topic for the topic's dedupe
    /// window: a durable publish of a key already stored answers the original instead of
    /// storing a copy. Empty: no key.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub idempotency_key: String,
}

impl NewEvent {
    /// Bytes the event occupies, counted the same way for every transport.
    pub fn size(&self) -> usize {
        let fields = [
            &self.name,
            &self.data,
            &self.source,
            &self.group_key,
            &self.reference_key,
            &self.trace_key,
            &self.user_id,
            &self.anonymous_id,
            &self.occurred_at,
            &self.idempotency_key,
        ];
        fields.iter().map(|f| f.len()).sum::<usize>()
            + self
                .context
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

/// An event that passed validation and has its id and time.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidEvent {
    /// Assigned id (UUID v7: time-ordered, so indexes stay compact).
    pub id: Uuid,
    /// The original fields, with `data` normalised to valid JSON text.
    pub event: NewEvent,
    /// Parsed occurrence time.
    pub occurred_at: DateTime<Utc>,
}

impl ValidEvent {
    /// Its idempotency key, if it has one.
    pub fn key(&self) -> Option<&str> {
        Some(self.event.idempotency_key.as_str()).filter(|k| !k.is_empty())
    }
}

/// A stored (or live) event. Serde is for the cluster bus, which carries events between nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Its id.
    pub id: Uuid,
    /// Topic name.
    pub topic_name: String,
    /// Topic identifier, "" when none.
    pub topic_identifier: String,
    /// Event name.
    pub name: String,
    /// JSON text.
    pub data: String,
    /// Source.
    pub source: String,
    /// Group key.
    pub group_key: String,
    /// Reference key.
    pub reference_key: String,
    /// Trace key.
    pub trace_key: String,
    /// User id.
    pub user_id: String,
    /// Anonymous id.
    pub anonymous_id: String,
    /// When it occurred.
    pub occurred_at: DateTime<Utc>,
    /// String context.
    pub context: BTreeMap<String, String>,
    /// Offset in its topic; 0 for non-durable events.
    pub offset: i64,
}

impl Event {
    /// `name` or `name:identifier`, as the wire's `Event.topic`.
    pub fn topic(&self) -> String {
        if self.topic_identifier.is_empty() {
            self.topic_name.clone()
        } else {
            format!("{}:{}", self.topic_name, self.topic_identifier)
        }
    }

    /// The event as the JSON object websockets and webhooks carry (`data` as an object).
    pub fn to_json(&self) -> serde_json::Value {
        let data: serde_json::Value =
            serde_json::from_str(&self.data).unwrap_or(serde_json::Value::Null);
        serde_json::json!({
            "id": self.id,
            "topic_name": self.topic_name,
            "topic_identifier": self.topic_identifier,
            "name": self.name,
            "data": data,
            "source": self.source,
            "group_key": self.group_key,
            "reference_key": self.reference_key,
            "trace_key": self.trace_key,
            "user_id": self.user_id,
            "anonymous_id": self.anonymous_id,
            "occurred_at": format_time(&self.occurred_at),
            "offset": self.offset,
            "context": self.context,
            "errors": [],
        })
    }

    /// Builds the stored form of a validated event.
    pub fn from_valid(v: ValidEvent, topic_name: &str, identifier: &str, offset: i64) -> Self {
        let e = v.event;
        Event {
            id: v.id,
            topic_name: topic_name.to_owned(),
            topic_identifier: identifier.to_owned(),
            name: e.name,
            data: e.data,
            source: e.source,
            group_key: e.group_key,
            reference_key: e.reference_key,
            trace_key: e.trace_key,
            user_id: e.user_id,
            anonymous_id: e.anonymous_id,
            occurred_at: v.occurred_at,
            context: e.context,
            offset,
        }
    }
}

/// RFC 3339 with milliseconds and `Z`, the form every transport emits.
pub fn format_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Parses ISO-8601 times: RFC 3339 with an offset, or a naive date-time taken as UTC.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .map(|n| n.and_utc())
}

/// Longest event name accepted.
pub const MAX_EVENT_NAME_LEN: usize = 255;

/// Longest idempotency key accepted, in bytes (a UUID, a hash, or a producer's
/// `<instance>-<sequence>` fit many times over; the keys table stays compact).
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;

/// An event refused at publish time, with every reason: what a dead letter records.
#[derive(Clone, Debug, PartialEq)]
pub struct Refused {
    /// The event as received.
    pub event: NewEvent,
    /// Why it was refused.
    pub errors: Vec<String>,
}

impl Refused {
    /// An event refused for one reason.
    pub fn new(event: NewEvent, reason: impl Into<String>) -> Self {
        Refused {
            event,
            errors: vec![reason.into()],
        }
    }
}

/// Validates one event; on failure returns every reason, for the dead-letter record.
pub fn validate(mut e: NewEvent) -> Result<ValidEvent, Box<Refused>> {
    let mut errors = Vec::new();
    if e.name.trim().is_empty() {
        errors.push("name can't be blank".to_owned());
    } else if e.name.len() > MAX_EVENT_NAME_LEN {
        errors.push(format!(
            "name must be at most {MAX_EVENT_NAME_LEN} characters"
        ));
    }
    if e.data.trim().is_empty() {
        e.data = "{}".into();
    } else if let Err(err) = serde_json::from_str::<serde::de::IgnoredAny>(&e.data) {
        errors.push(format!("data is not valid JSON: {err}"));
    }
    if e.data.contains("\\u0000") {
        // Postgres jsonb cannot store NUL characters.
        errors.push("data must not contain \\u0000".to_owned());
    }
    if e.idempotency_key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
        errors.push(format!(
            "idempotency_key must be at most {MAX_IDEMPOTENCY_KEY_BYTES} bytes"
        ));
    }
    let occurred_at = if e.occurred_at.is_empty() {
        Some(Utc::now())
    } else {
        parse_time(&e.occurred_at)
    };
    if occurred_at.is_none() {
        errors.push(format!(
            "occurred_at is not a valid ISO-8601 time: {:?}",
            e.occurred_at
        ));
    }
    let has_nul = [
        &e.name,
        &e.source,
        &e.group_key,
        &e.reference_key,
        &e.trace_key,
    ]
    .iter()
    .chain([&e.user_id, &e.anonymous_id, &e.idempotency_key].iter())
    .any(|s| s.contains('\0'))
        || e.context
            .iter()
            .any(|(k, v)| k.contains('\0') || v.contains('\0'));
    if has_nul {
        errors.push("text fields must not contain NUL characters".to_owned());
    }
    match occurred_at {
        Some(occurred_at) if errors.is_empty() => Ok(ValidEvent {
            id: Uuid::now_v7(),
            event: e,
            occurred_at,
        }),
        _ => Err(Box::new(Refused { event: e, errors })),
    }
}

/// A valid one-event publish for unit tests of the write path.
#[cfg(test)]
pub(super) fn tick() -> ValidEvent {
    validate(NewEvent {
        name: "tick".into(),
        data: "{}".into(),
        ..Default::default()
    })
    .expect("a valid event")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(name: &str, data: &str, at: &str) -> NewEvent {
        NewEvent {
            name: name.into(),
            data: data.into(),
            occurred_at: at.into(),
            ..Default::default()
        }
    }

    #[test]
    fn valid_events() {
        for (data, at) in [
            ("{\"a\":1}", ""),
            ("", "2020-01-01T00:00:00.000Z"),
            ("[1,2]", "2020-01-01T00:00:00+02:00"),
            ("3", "2020-01-01T00:00:00"),
        ] {
            let v = validate(ev("user.created", data, at)).expect(data);
            assert!(!v.event.data.is_empty());
        }
        let v = validate(ev("x", "", "2020-01-01T02:00:00+02:00")).unwrap();
        assert_eq!(format_time(&v.occurred_at), "2020-01-01T00:00:00.000Z");
    }

    #[test]
    fn invalid_events_list_every_reason() {
        let errors = validate(ev("", "{not json", "yesterday"))
            .unwrap_err()
            .errors;
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].contains("name"));
        assert!(errors[1].contains("data is not valid JSON"));
        assert!(errors[2].contains("occurred_at"));
        let errors = validate(ev("x", "{\"a\":\"\\u0000\"}", ""))
            .unwrap_err()
            .errors;
        assert!(errors[0].contains("u0000"));
    }
}
