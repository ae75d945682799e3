//! The Phoenix Channels wire format: v2 arrays `[join_ref, ref, topic, event, payload]` and
//! v1 objects `{join_ref, ref, topic, event, payload}`, push envelopes encoded once per
//! channel, and the `publish_events` payload.

use crate::events::NewEvent;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Protocol version, chosen by the `vsn` query parameter (`2.0.0` → arrays).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vsn {
    /// Objects.
    V1,
    /// Arrays.
    V2,
}

impl Vsn {
    /// From the `vsn` query parameter; absent or 1.x is v1, as in Phoenix.
    pub fn parse(vsn: Option<&str>) -> Self {
        if vsn.is_some_and(|v| v.starts_with("2.")) {
            Vsn::V2
        } else {
            Vsn::V1
        }
    }
}

/// One message. `join_ref` and `ref` are echoed back exactly as the client sent them.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// The join's reference (null outside a channel).
    pub join_ref: Value,
    /// This message's reference (null for pushes).
    pub reference: Value,
    /// `phoenix` or `events:<subscription_id>`.
    pub topic: String,
    /// `phx_join`, `heartbeat`, `event:published`, ...
    pub event: String,
    /// The payload.
    pub payload: Value,
}

impl Frame {
    /// Parses a text message.
    pub fn decode(text: &str, vsn: Vsn) -> Result<Frame, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let field = |v: &Value, k: &str| v.get(k).cloned().unwrap_or(Value::Null);
        let (join_ref, reference, topic, event, payload) = match (vsn, v) {
            (Vsn::V2, Value::Array(mut a)) if a.len() == 5 => {
                let payload = a.pop().unwrap_or(Value::Null);
                let event = a.pop().unwrap_or(Value::Null);
                let topic = a.pop().unwrap_or(Value::Null);
                let reference = a.pop().unwrap_or(Value::Null);
                let join_ref = a.pop().unwrap_or(Value::Null);
                (join_ref, reference, topic, event, payload)
            }
            (Vsn::V1, v @ Value::Object(_)) => (
                field(&v, "join_ref"),
                field(&v, "ref"),
                field(&v, "topic"),
                field(&v, "event"),
                field(&v, "payload"),
            ),
            _ => return Err("not a Phoenix message of this protocol version".into()),
        };
        match (topic, event) {
            (Value::String(topic), Value::String(event)) => Ok(Frame {
                join_ref,
                reference,
                topic,
                event,
                payload,
            }),
            _ => Err("topic and event must be strings".into()),
        }
    }

    /// Encodes for the wire.
    pub fn encode(&self, vsn: Vsn) -> String {
        let payload = self.payload.to_string();
        encode_raw(
            vsn,
            &self.join_ref,
            &self.reference,
            &self.topic,
            &self.event,
            &payload,
        )
    }

    /// The `phx_reply` to this message.
    pub fn reply(&self, status: &str, response: Value) -> Frame {
        Frame {
            join_ref: self.join_ref.clone(),
            reference: self.reference.clone(),
            topic: self.topic.clone(),
            event: "phx_reply".into(),
            payload: json!({ "status": status, "response": response }),
        }
    }
}

/// Encodes a message whose payload is already JSON text (pushes reuse cached payloads).
pub fn encode_raw(
    vsn: Vsn,
    join_ref: &Value,
    reference: &Value,
    topic: &str,
    event: &str,
    payload: &str,
) -> String {
    Envelope::new(vsn, join_ref, reference, topic, event).wrap(payload)
}

/// Everything of a message but its payload, encoded once: a channel's pushes differ only in
/// their payloads, and a busy topic pushes each event to every client.
pub struct Envelope {
    prefix: String,
    suffix: &'static str,
}

impl Envelope {
    /// The envelope of messages with these fields.
    pub fn new(vsn: Vsn, join_ref: &Value, reference: &Value, topic: &str, event: &str) -> Self {
        let topic = Value::from(topic);
        let event = Value::from(event);
        match vsn {
            Vsn::V2 => Envelope {
                prefix: format!("[{join_ref},{reference},{topic},{event},"),
                suffix: "]",
            },
            Vsn::V1 => Envelope {
                prefix: format!(
                    r#"{{"join_ref":{join_ref},"ref":{reference},"topic":{topic},"event":{event},"payload":"#
                ),
                suffix: "}",
            },
        }
    }

    /// The message carrying `payload` (JSON text).
    pub fn wrap(&self, payload: &str) -> String {
        let mut text = String::with_capacity(self.prefix.len() + payload.len() + 1);
        text.push_str(&self.prefix);
        text.push_str(payload);
        text.push_str(self.suffix);
        text
    }
}

/// The `publish_events` payload of the original.
#[derive(Deserialize)]
pub struct PublishPayload {
    #[serde(default)]
    pub topic: String,
    #[serde(default)]
    pub durable: bool,
    #[serde(default)]
    pub events: Vec<WsEvent>,
}

/// One event of `publish_events`; fields may be strings, null, or (for `data` and context
/// values) any JSON, which is kept as its JSON text.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct WsEvent {
    name: Value,
    data: Value,
    source: Value,
    group_key: Value,
    reference_key: Value,
    trace_key: Value,
    user_id: Value,
    anonymous_id: Value,
    occurred_at: Value,
    context: BTreeMap<String, Value>,
}

fn text(v: Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s,
        other => other.to_string(),
    }
}

impl WsEvent {
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
                .map(|(k, v)| (k, text(v)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_versions_round_trip() {
        let v2 = r#"["1","2","events:x","phx_join",{"a":1}]"#;
        let f = Frame::decode(v2, Vsn::V2).unwrap();
        assert_eq!(
            (f.topic.as_str(), f.event.as_str()),
            ("events:x", "phx_join")
        );
        assert_eq!(f.encode(Vsn::V2), v2);
        let v1 = r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":5}"#;
        let f = Frame::decode(v1, Vsn::V1).unwrap();
        assert_eq!(f.reference, json!(5));
        let back: Value = serde_json::from_str(&f.reply("ok", json!({})).encode(Vsn::V1)).unwrap();
        assert_eq!(back["payload"], json!({"status": "ok", "response": {}}));
        assert_eq!(back["ref"], json!(5));
        assert!(Frame::decode(v1, Vsn::V2).is_err());
        assert!(Frame::decode("[1,2,3]", Vsn::V2).is_err());
        assert!(Frame::decode("nope", Vsn::V1).is_err());
        assert_eq!(Vsn::parse(Some("2.0.0")), Vsn::V2);
        assert_eq!(Vsn::parse(None), Vsn::V1);
    }
}
