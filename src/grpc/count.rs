//! The event count of a `PublishEvents` request, read off its raw bytes as they arrive, before
//! tonic decodes the message.
//!
//! Why: the gate keeps unauthenticated callers from making a node decode anything, but an
//! authenticated producer could still send a message of the size limit made of empty events
//! (`0x12 0x00` repeated: two bytes on the wire, a few hundred bytes each once decoded) and make
//! the node allocate a hundred times what it sent before `ER_MAX_EVENTS_PER_REQUEST` is checked.
//! [`Counted`] scans the top-level fields of each length-prefixed message (a small state machine,
//! no allocation) and, when a message has more events than the limit, ends the body with
//! INVALID_ARGUMENT in place of the message's last bytes, so decoding never starts. The answer is
//! the one the check after decoding gives (the whole count, the limit), so clients see no change. Anything it cannot follow (a compressed message, an unknown wire
//! type) it leaves to prost, which refuses malformed input itself.

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tonic::Status;
use tonic::body::Body;

/// The field number of `PublishEventsRequest.events`.
const EVENTS_FIELD: u64 = 2;

/// Where the scanner is in the stream of length-prefixed messages.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Reading the 5-byte prefix (compressed flag, big-endian length).
    Prefix { have: u8, buf: [u8; 5] },
    /// Reading a field's tag varint.
    Tag { value: u64, shift: u32 },
    /// Skipping a varint value.
    Varint,
    /// Reading a length-delimited field's length; `event` when the field is an event.
    Length { value: u64, shift: u32, event: bool },
    /// Skipping this many bytes of a field's value.
    Skip(u64),
    /// Skipping the rest of a message the scanner does not follow.
    Opaque,
}

const PREFIX: State = State::Prefix {
    have: 0,
    buf: [0; 5],
};
const TAG: State = State::Tag { value: 0, shift: 0 };

/// Counts the events of each message fed to it and says when one has more than `max`.
#[derive(Debug)]
pub struct EventCounter {
    max: usize,
    count: usize,
    /// Bytes of the current message not yet read.
    left: u64,
    state: State,
}

impl EventCounter {
    /// A counter that refuses a message with more than `max` events.
    pub fn new(max: usize) -> Self {
        EventCounter {
            max,
            count: 0,
            left: 0,
            state: PREFIX,
        }
    }

    /// Reads the next bytes of the stream; an error once a message has more than `max` events.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while let Some(&b) = data.first() {
            if let State::Prefix { have, buf } = &mut self.state {
                buf[usize::from(*have)] = b;
                *have += 1;
                data = &data[1..];
                if *have == 5 {
                    let compressed = buf[0] != 0;
                    self.left = u64::from(u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]));
                    self.count = 0;
                    self.state = match (self.left, compressed) {
                        (0, _) => PREFIX,
                        (_, true) => State::Opaque,
                        _ => TAG,
                    };
                }
                continue;
            }
            let in_message = usize::try_from(self.left).unwrap_or(usize::MAX);
            let taken = match &mut self.state {
                State::Opaque => data.len().min(in_message),
                State::Skip(n) => {
                    let k = data
                        .len()
                        .min(in_message)
                        .min(usize::try_from(*n).unwrap_or(usize::MAX));
                    *n -= k as u64;
                    if *n == 0 {
                        self.state = TAG;
                    }
                    k
                }
                _ => {
                    self.byte(b);
                    1
                }
            };
            data = &data[taken..];
            self.left -= taken as u64;
            if self.left == 0 {
                self.state = PREFIX;
                if self.count > self.max {
                    return Err(Status::invalid_argument(format!(
                        "too many events: {} in one request, at most {} allowed",
                        self.count, self.max
                    )));
                }
            }
        }
        Ok(())
    }

    /// One byte of a tag, a varint or a length.
    fn byte(&mut self, b: u8) {
        let more = b & 0x80 != 0;
        let bits = u64::from(b & 0x7f);
        self.state = match self.state {
            State::Tag { shift, .. } | State::Length { shift, .. } if shift > 63 => State::Opaque,
            State::Tag { value, shift } => {
                let value = value | bits << shift;
                if more {
                    State::Tag {
                        value,
                        shift: shift + 7,
                    }
                } else {
                    match value & 7 {
                        0 => State::Varint,
                        1 => State::Skip(8),
                        2 => State::Length {
                            value: 0,
                            shift: 0,
                            event: value >> 3 == EVENTS_FIELD,
                        },
                        5 => State::Skip(4),
                        _ => State::Opaque,
                    }
                }
            }
            State::Varint if more => State::Varint,
            State::Varint => TAG,
            State::Length {
                value,
                shift,
                event,
            } => {
                let value = value | bits << shift;
                if more {
                    State::Length {
                        value,
                        shift: shift + 7,
                        event,
                    }
                } else {
                    if event {
                        self.count += 1;
                    }
                    if value == 0 { TAG } else { State::Skip(value) }
                }
            }
            other => other,
        };
    }
}

/// A request body that ends with INVALID_ARGUMENT in place of a message with more events than
/// allowed.
pub struct Counted {
    inner: Body,
    counter: EventCounter,
    failed: bool,
}

impl Counted {
    /// `inner`, refused past `max` events per message.
    pub fn new(inner: Body, max: usize) -> Self {
        Counted {
            inner,
            counter: EventCounter::new(max),
            failed: false,
        }
    }
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(None);
        }
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(Ok(data)) = &frame
            && let Some(bytes) = data.data_ref()
            && let Err(status) = this.counter.feed(bytes)
        {
            this.failed = true;
            return Poll::Ready(Some(Err(status)));
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{NewEvent, PublishEventsRequest};
    use proptest::prelude::*;
    use prost::Message;

    fn framed(msg: &PublishEventsRequest) -> Vec<u8> {
        let body = msg.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn request(events: usize, data: &str) -> PublishEventsRequest {
        PublishEventsRequest {
            topic: "orders".into(),
            events: (0..events)
                .map(|i| NewEvent {
                    name: format!("e{i}"),
                    data: data.into(),
                    ..Default::default()
                })
                .collect(),
            durable: true,
            ..Default::default()
        }
    }

    #[test]
    fn empty_events_are_counted_and_refused_at_the_end_of_their_message() {
        // The attack: a message of nothing but `0x12 0x00`.
        let mut bytes = vec![0];
        bytes.extend_from_slice(&200_000u32.to_be_bytes());
        bytes.extend(std::iter::repeat_n([0x12, 0x00], 100_000).flatten());
        let mut c = EventCounter::new(1000);
        let (head, last) = bytes.split_at(bytes.len() - 1);
        c.feed(head).expect("the message is not over yet");
        let err = c.feed(last).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            err.message(),
            "too many events: 100000 in one request, at most 1000 allowed"
        );
    }

    proptest! {
        #[test]
        fn a_request_passes_exactly_when_it_has_at_most_max_events(
            events in 0usize..40,
            max in 0usize..40,
            data in "[a-z{}\":0-9]{0,300}",
            cut in 1usize..64,
        ) {
            let bytes = framed(&request(events, &data));
            let mut twice = bytes.clone();
            twice.extend_from_slice(&bytes);
            let mut c = EventCounter::new(max);
            // Fed in arbitrary pieces, two messages in a row: the count restarts per message.
            let result = twice.chunks(cut).try_for_each(|piece| c.feed(piece));
            prop_assert_eq!(result.is_ok(), events <= max);
            if events <= max {
                let at_start = matches!(c.state, State::Prefix { have: 0, .. });
                prop_assert!(at_start, "the scan ends between messages");
            }
        }
    }
}
