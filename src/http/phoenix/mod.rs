//! The Phoenix Channels wire format: v2 arrays `[join_ref, ref, topic, event, payload]` and
//! v1 objects `{join_ref, ref, topic, event, payload}`, push envelopes encoded once per
//! channel, and the payloads of the events the endpoint understands.
//!
//! Every byte here comes from a client that may not have authenticated yet, so a message is
//! parsed straight into typed values and never into a generic JSON tree: references are short
//! strings or integers, topic and event are short strings, and the payload stays the raw JSON
//! text it arrived as (checked for syntax, nothing allocated) until the event is known and
//! allowed, when it is parsed into that event's payload type ([`payload`]).

mod payload;
#[cfg(test)]
mod props;

pub use payload::{JoinPayload, PublishPayload, RefreshPayload, parse};

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde_json::value::RawValue;
use std::fmt;

/// Longest topic, event or string reference accepted, in bytes.
pub const MAX_NAME: usize = 256;

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

/// A `join_ref` or `ref`, echoed back exactly as the client sent it: Phoenix clients send
/// strings, some older ones integers, and pushes carry null.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Ref {
    /// No reference.
    #[default]
    Null,
    /// A string reference.
    Text(String),
    /// An integer reference.
    Number(i64),
}

impl fmt::Display for Ref {
    /// The reference as JSON.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ref::Null => f.write_str("null"),
            Ref::Number(n) => write!(f, "{n}"),
            Ref::Text(s) => f.write_str(&json_string(s)),
        }
    }
}

impl<'de> Deserialize<'de> for Ref {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Ref, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ref;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(
                    f,
                    "a string of at most {MAX_NAME} bytes, an integer or null"
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Ref, E> {
                Ok(Ref::Text(Name::check(s)?))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Ref, E> {
                Ok(Ref::Number(n))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Ref, E> {
                i64::try_from(n)
                    .map(Ref::Number)
                    .map_err(|_| E::custom("reference out of range"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Ref, E> {
                Ok(Ref::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Ref, E> {
                Ok(Ref::Null)
            }
        }
        d.deserialize_any(V)
    }
}

/// A topic or event name: a string of at most [`MAX_NAME`] bytes, checked before it is copied.
struct Name(String);

impl Name {
    fn check<E: de::Error>(s: &str) -> Result<String, E> {
        if s.len() > MAX_NAME {
            return Err(E::custom(format!("longer than {MAX_NAME} bytes")));
        }
        Ok(s.to_owned())
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a string of at most {MAX_NAME} bytes")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Name, E> {
                Name::check(s).map(Name)
            }
        }
        d.deserialize_str(V)
    }
}

/// The v1 object form; unknown keys are skipped without being kept.
#[derive(serde::Deserialize)]
struct Object<'a> {
    #[serde(default)]
    join_ref: Ref,
    #[serde(default, rename = "ref")]
    reference: Ref,
    topic: Name,
    event: Name,
    #[serde(borrow, default)]
    payload: Option<&'a RawValue>,
}

/// One message, borrowing its payload's JSON text from the message.
#[derive(Debug)]
pub struct Frame<'a> {
    /// The join's reference (null outside a channel).
    pub join_ref: Ref,
    /// This message's reference (null for pushes).
    pub reference: Ref,
    /// `phoenix` or `events:<subscription_id>`.
    pub topic: String,
    /// `phx_join`, `heartbeat`, `publish_events`, ...
    pub event: String,
    /// The payload's JSON text, not parsed yet.
    pub payload: &'a RawValue,
}

/// What a message asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// `heartbeat` on `phoenix`.
    Heartbeat,
    /// `phx_join`.
    Join,
    /// `phx_leave`.
    Leave,
    /// `publish_events`.
    Publish,
    /// `refresh_token`: new tokens for a joined channel.
    RefreshToken,
    /// Anything else.
    Other,
}

impl<'a> Frame<'a> {
    /// Parses a text message of the given protocol version.
    pub fn decode(text: &'a str, vsn: Vsn) -> Result<Frame<'a>, String> {
        let frame = match vsn {
            Vsn::V2 => {
                type Array<'a> = (Ref, Ref, Name, Name, &'a RawValue);
                let (join_ref, reference, topic, event, payload): Array<'a> =
                    serde_json::from_str(text).map_err(|e| format!("not a v2 message: {e}"))?;
                Frame {
                    join_ref,
                    reference,
                    topic: topic.0,
                    event: event.0,
                    payload,
                }
            }
            Vsn::V1 => {
                // A derived struct would also take an array, field by field: v1 is objects only.
                if !text.trim_start().starts_with('{') {
                    return Err("not a v1 message: expected an object".into());
                }
                let o: Object<'a> =
                    serde_json::from_str(text).map_err(|e| format!("not a v1 message: {e}"))?;
                Frame {
                    join_ref: o.join_ref,
                    reference: o.reference,
                    topic: o.topic.0,
                    event: o.event.0,
                    payload: o.payload.unwrap_or(RawValue::NULL),
                }
            }
        };
        Ok(frame)
    }

    /// What the message asks for.
    pub fn kind(&self) -> FrameKind {
        match self.event.as_str() {
            "heartbeat" if self.topic == "phoenix" => FrameKind::Heartbeat,
            "phx_join" => FrameKind::Join,
            "phx_leave" => FrameKind::Leave,
            "publish_events" => FrameKind::Publish,
            "refresh_token" => FrameKind::RefreshToken,
            _ => FrameKind::Other,
        }
    }

    /// The `phx_reply` to this message, encoded.
    pub fn reply(&self, vsn: Vsn, status: &str, response: serde_json::Value) -> String {
        let payload = serde_json::json!({ "status": status, "response": response });
        encode_raw(
            vsn,
            &self.join_ref,
            &self.reference,
            &self.topic,
            "phx_reply",
            &payload.to_string(),
        )
    }
}

fn json_string(s: &str) -> String {
    // Serializing a str cannot fail.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// Encodes a message whose payload is already JSON text (pushes reuse cached payloads).
pub fn encode_raw(
    vsn: Vsn,
    join_ref: &Ref,
    reference: &Ref,
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
    pub fn new(vsn: Vsn, join_ref: &Ref, reference: &Ref, topic: &str, event: &str) -> Self {
        let (topic, event) = (json_string(topic), json_string(event));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_versions_round_trip() {
        let v2 = r#"["1","2","events:x","phx_join",{"a":1}]"#;
        let f = Frame::decode(v2, Vsn::V2).unwrap();
        assert_eq!((f.topic.as_str(), f.kind()), ("events:x", FrameKind::Join));
        let again = encode_raw(
            Vsn::V2,
            &f.join_ref,
            &f.reference,
            &f.topic,
            &f.event,
            f.payload.get(),
        );
        assert_eq!(again, v2);
        let v1 = r#"{"topic":"phoenix","event":"heartbeat","payload":{},"ref":5,"extra":[1]}"#;
        let f = Frame::decode(v1, Vsn::V1).unwrap();
        assert_eq!(
            (f.reference.clone(), f.kind()),
            (Ref::Number(5), FrameKind::Heartbeat)
        );
        assert_eq!(
            f.reply(Vsn::V1, "ok", serde_json::json!({})),
            r#"{"join_ref":null,"ref":5,"topic":"phoenix","event":"phx_reply","payload":{"response":{},"status":"ok"}}"#
        );
        assert!(Frame::decode(v1, Vsn::V2).is_err());
        assert!(Frame::decode("[1,2,3]", Vsn::V2).is_err());
        assert!(Frame::decode("nope", Vsn::V1).is_err());
        assert_eq!(Vsn::parse(Some("2.0.0")), Vsn::V2);
        assert_eq!(Vsn::parse(None), Vsn::V1);
    }

    #[test]
    fn hostile_shapes_are_refused_before_anything_is_kept() {
        let long = "x".repeat(MAX_NAME + 1);
        for bad in [
            format!(r#"["1","2","{long}","phx_join",{{}}]"#),
            format!(r#"["1","{long}","t","phx_join",{{}}]"#),
            r#"["1","2","t","e",{},6]"#.to_owned(),
            r#"[[1],"2","t","e",{}]"#.to_owned(),
            r#"[{"a":1},"2","t","e",{}]"#.to_owned(),
            r#"["1",1.5,"t","e",{}]"#.to_owned(),
            r#"["1","2",7,"e",{}]"#.to_owned(),
            r#"["1","2","t","e",{"unclosed":[}]"#.to_owned(),
        ] {
            assert!(Frame::decode(&bad, Vsn::V2).is_err(), "{bad}");
        }
        // A missing or null payload is null; a missing topic is an error.
        let f = Frame::decode(r#"{"topic":"t","event":"e"}"#, Vsn::V1).unwrap();
        assert_eq!(f.payload.get(), "null");
        assert!(Frame::decode(r#"{"event":"e"}"#, Vsn::V1).is_err());
    }
}
