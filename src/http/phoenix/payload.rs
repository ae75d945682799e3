//! The payloads of the events the endpoint understands, parsed from a message's raw payload
//! only once the event is known and allowed: `phx_join` and `refresh_token` (tokens, an
//! optional `after_offset`) and `publish_events` (the original's shape). Unknown keys are
//! skipped without being kept; values that may be any JSON (`data`, context values) stay the
//! JSON text they arrived as.

use crate::events::NewEvent;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::fmt;

/// Longest token accepted (a JWT of this server is about 200 bytes).
const MAX_TOKEN: usize = 4 * 1024;

/// Parses a payload into the type its event expects.
pub fn parse<'a, T: Deserialize<'a>>(payload: &'a RawValue) -> Result<T, String> {
    serde_json::from_str(payload.get()).map_err(|e| format!("invalid payload: {e}"))
}

/// A token field: a string of at most [`MAX_TOKEN`] bytes; empty counts as absent.
#[derive(Default)]
struct Token(Option<String>);

impl<'de> Deserialize<'de> for Token {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Token, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Token;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a token string of at most {MAX_TOKEN} bytes, or null")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Token, E> {
                if s.len() > MAX_TOKEN {
                    return Err(E::custom(format!("token longer than {MAX_TOKEN} bytes")));
                }
                Ok(Token((!s.is_empty()).then(|| s.to_owned())))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Token, E> {
                Ok(Token(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// An `after_offset`: an integer, a string of one (the original's clients send either), or null.
#[derive(Default)]
struct Offset(Option<i64>);

impl<'de> Deserialize<'de> for Offset {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Offset, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Offset;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("after_offset must be an integer")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Offset, E> {
                Ok(Offset(Some(n)))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Offset, E> {
                i64::try_from(n)
                    .map(|n| Offset(Some(n)))
                    .map_err(|_| E::custom("after_offset out of range"))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Offset, E> {
                s.trim()
                    .parse()
                    .map(|n| Offset(Some(n)))
                    .map_err(|_| E::custom("after_offset must be an integer"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Offset, E> {
                Ok(Offset(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// The `phx_join` payload.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct JoinPayload {
    consumer_token: Token,
    producer_token: Token,
    after_offset: Offset,
}

impl JoinPayload {
    /// The consumer JWT, when one was given.
    pub fn consumer_token(&self) -> Option<&str> {
        self.consumer_token.0.as_deref()
    }

    /// The producer JWT, when one was given.
    pub fn producer_token(&self) -> Option<&str> {
        self.producer_token.0.as_deref()
    }

    /// Where to resume: replay stored events after this offset first.
    pub fn after_offset(&self) -> Option<i64> {
        self.after_offset.0
    }
}

/// The `refresh_token` payload: new tokens for the roles the channel was joined with.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RefreshPayload {
    consumer_token: Token,
    producer_token: Token,
}

impl RefreshPayload {
    /// The new consumer JWT, when one was given.
    pub fn consumer_token(&self) -> Option<&str> {
        self.consumer_token.0.as_deref()
    }

    /// The new producer JWT, when one was given.
    pub fn producer_token(&self) -> Option<&str> {
        self.producer_token.0.as_deref()
    }
}

/// The `publish_events` payload of the original.
#[derive(Deserialize)]
pub struct PublishPayload<'a> {
    /// `name` or `name:identifier`.
    #[serde(default)]
    pub topic: String,
    /// Store the events (else live only).
    #[serde(default)]
    pub durable: bool,
    /// The events.
    #[serde(borrow, default)]
    pub events: Vec<WsEvent<'a>>,
    /// Store nothing if any event would be dead-lettered (as over gRPC).
    #[serde(default)]
    pub all_or_nothing: bool,
    /// Store only if the topic's last offset is this (as over gRPC).
    #[serde(default)]
    pub expected_last_offset: Option<i64>,
    /// Producer fencing: the producer's id (empty or absent: none).
    #[serde(default)]
    pub producer_id: Option<String>,
    /// Producer fencing: its epoch.
    #[serde(default)]
    pub producer_epoch: i64,
}

/// One event of `publish_events`; fields may be strings, null, or (for `data` and context
/// values) any JSON, which is kept as its JSON text.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct WsEvent<'a> {
    #[serde(borrow)]
    name: Option<&'a RawValue>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow)]
    source: Option<&'a RawValue>,
    #[serde(borrow)]
    group_key: Option<&'a RawValue>,
    #[serde(borrow)]
    reference_key: Option<&'a RawValue>,
    #[serde(borrow)]
    trace_key: Option<&'a RawValue>,
    #[serde(borrow)]
    user_id: Option<&'a RawValue>,
    #[serde(borrow)]
    anonymous_id: Option<&'a RawValue>,
    #[serde(borrow)]
    occurred_at: Option<&'a RawValue>,
    #[serde(borrow)]
    context: BTreeMap<String, &'a RawValue>,
    #[serde(borrow)]
    idempotency_key: Option<&'a RawValue>,
}

/// A field's text: a string's contents, nothing for null, any other JSON as its text.
fn text(v: Option<&RawValue>) -> String {
    let Some(raw) = v else {
        return String::new();
    };
    let json = raw.get();
    if json.starts_with('"') {
        // A string the parser already checked: only its escapes need decoding.
        serde_json::from_str(json).unwrap_or_default()
    } else if json == "null" {
        String::new()
    } else {
        json.to_owned()
    }
}

impl WsEvent<'_> {
    /// The transport-neutral event.
    pub fn into_new(self) -> NewEvent {
        NewEvent {
            name: text(self.name),
            data: text(self.data),
            source: text(self.source),
            group_key: text(self.group_key),
            reference_key: text(self.reference_key),
            trace_key: text(self.trace_key),
            user_id: text(self.user_id),
            anonymous_id: text(self.anonymous_id),
            occurred_at: text(self.occurred_at),
            context: self
                .context
                .into_iter()
                .map(|(k, v)| (k, text(Some(v))))
                .collect(),
            idempotency_key: text(self.idempotency_key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> &RawValue {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn join_payloads_take_the_original_shapes() {
        let j: JoinPayload = parse(raw(
            r#"{"consumer_token":"a.b.c","producer_token":"","after_offset":"12","x":[1,{}]}"#,
        ))
        .unwrap();
        assert_eq!(j.consumer_token(), Some("a.b.c"));
        assert_eq!(j.producer_token(), None);
        assert_eq!(j.after_offset(), Some(12));
        let j: JoinPayload = parse(raw(r#"{"after_offset":7,"consumer_token":null}"#)).unwrap();
        assert_eq!((j.after_offset(), j.consumer_token()), (Some(7), None));
        for bad in [
            r#"{"after_offset":"x"}"#,
            r#"{"after_offset":1.5}"#,
            r#"{"consumer_token":5}"#,
            r#"[1]"#,
        ] {
            assert!(parse::<JoinPayload>(raw(bad)).is_err(), "{bad}");
        }
        let long = format!(r#"{{"consumer_token":"{}"}}"#, "x".repeat(MAX_TOKEN + 1));
        assert!(parse::<JoinPayload>(raw(&long)).is_err());
        // A null payload (v1 without one) is an empty join.
        assert!(parse::<JoinPayload>(RawValue::NULL).is_err());
    }

    #[test]
    fn publish_events_keep_any_json_as_its_text() {
        let p: PublishPayload = parse(raw(r#"{"topic":"t","durable":true,"events":[
                {"name":"a","data":{"k": [1, 2]},"user_id":null,"context":{"ip":"1.2.3.4","n":3}},
                {"name":"b\n\"q\"","data":"{\"k\": 1}"}]}"#))
        .unwrap();
        assert!(p.durable);
        let e: Vec<NewEvent> = p.events.into_iter().map(WsEvent::into_new).collect();
        assert_eq!(e[0].data, r#"{"k": [1, 2]}"#);
        assert_eq!(e[0].user_id, "");
        assert_eq!(e[0].context["ip"], "1.2.3.4");
        assert_eq!(e[0].context["n"], "3");
        assert_eq!(e[1].name, "b\n\"q\"");
        assert_eq!(e[1].data, r#"{"k": 1}"#);
    }
}
