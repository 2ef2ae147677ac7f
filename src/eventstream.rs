//! AWS event-stream framing (`application/vnd.amazon.eventstream`), as Bedrock's streaming APIs send it:
//! a byte-level decoder for upstream streams and an encoder for the fake.
//!
//! A message is a 12-byte prelude (total length, headers length, CRC-32 of those 8 bytes; big-endian),
//! its headers (a name of 1 to 255 bytes, a type byte, a typed value), its payload, and a CRC-32 of all
//! that came before. The decoder checks both CRCs and every length, so a corrupted or truncated frame is
//! an error and never a misread event. Memory is bounded: a message whose declared length exceeds
//! `max_message_bytes` is refused from its prelude, before any of it is buffered. It decodes the same
//! whatever the chunking, and each byte is copied at most once into its message's buffer.
//!
//! Each message becomes one [`SseEvent`], so stream mappers read both framings the same way: an `event`
//! message is named by its `:event-type` header, with its payload as `data`; an `exception` or `error`
//! message is named [`EXCEPTION_PREFIX`] followed by its `:exception-type` (or `:error-code`), with its
//! payload (or `:error-message`) as `data`. Nothing here knows what any event means.

use crate::sse::SseEvent;

/// The event name given to exception and error messages, before their type.
pub const EXCEPTION_PREFIX: &str = ":exception:";

/// Largest message the decoder takes by default (AWS's own limit for event-stream messages is 16 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

const PRELUDE: usize = 12;
const MIN_MESSAGE: usize = PRELUDE + 4;
/// AWS's limit on a message's headers.
const MAX_HEADERS_BYTES: usize = 128 * 1024;

const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum EventStreamError {
    #[error("an upstream event-stream message of {length} bytes exceeds the limit of {limit}")]
    TooLarge { length: usize, limit: usize },
    #[error("an upstream event-stream message is malformed: {0}")]
    Malformed(&'static str),
    #[error("an upstream event-stream message failed its checksum")]
    Checksum,
}

/// Incremental decoder. Feed it whatever the network returns with [`EventStreamDecoder::push`].
#[derive(Debug)]
pub struct EventStreamDecoder {
    /// The bytes of the message being read (its prelude first).
    buf: Vec<u8>,
    /// The whole length of that message, once its prelude has been read and checked.
    expected: Option<usize>,
    max_message_bytes: usize,
    /// A message failed: everything after it is unreadable, since its length cannot be trusted.
    failed: bool,
}

impl Default for EventStreamDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_MESSAGE_BYTES)
    }
}

impl EventStreamDecoder {
    pub fn new(max_message_bytes: usize) -> Self {
        Self { buf: Vec::new(), expected: None, max_message_bytes, failed: false }
    }

    /// Decodes one read's worth of bytes, appending every message it completes to `out`.
    pub fn push(&mut self, mut chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), EventStreamError> {
        if self.failed {
            return Err(EventStreamError::Malformed("the stream is unreadable after an earlier bad message"));
        }
        while !chunk.is_empty() {
            let want = self.expected.unwrap_or(PRELUDE);
            let take = (want - self.buf.len()).min(chunk.len());
            self.buf.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if self.buf.len() < want {
                break;
            }
            let result = match self.expected {
                None => self.read_prelude(),
                Some(_) => {
                    let message = decode_message(&self.buf);
                    self.buf.clear();
                    self.expected = None;
                    message.map(|event| out.push(event))
                }
            };
            if let Err(e) = result {
                self.failed = true;
                return Err(e);
            }
        }
        Ok(())
    }

    fn read_prelude(&mut self) -> Result<(), EventStreamError> {
        let total = u32_at(&self.buf, 0) as usize;
        let headers = u32_at(&self.buf, 4) as usize;
        if CRC32.checksum(&self.buf[..8]) != u32_at(&self.buf, 8) {
            return Err(EventStreamError::Checksum);
        }
        if total > self.max_message_bytes {
            return Err(EventStreamError::TooLarge { length: total, limit: self.max_message_bytes });
        }
        if total < MIN_MESSAGE || headers > total - MIN_MESSAGE || headers > MAX_HEADERS_BYTES {
            return Err(EventStreamError::Malformed("its lengths do not add up"));
        }
        self.buf.reserve_exact(total - self.buf.len());
        self.expected = Some(total);
        Ok(())
    }

    /// Whether the stream stopped part-way through a message (a cut, not an end).
    pub fn finish(&self) -> bool {
        !self.buf.is_empty()
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// A whole message (its prelude already checked) as an event.
fn decode_message(msg: &[u8]) -> Result<SseEvent, EventStreamError> {
    let end = msg.len() - 4;
    if CRC32.checksum(&msg[..end]) != u32_at(msg, end) {
        return Err(EventStreamError::Checksum);
    }
    let headers_end = PRELUDE + u32_at(msg, 4) as usize;
    let mut headers = Headers::default();
    let mut at = PRELUDE;
    while at < headers_end {
        at = headers.read_one(&msg[..headers_end], at)?;
    }
    let payload = &msg[headers_end..end];
    let text =
        |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| EventStreamError::Malformed("its payload is not UTF-8"));
    match headers.message_type.as_deref().unwrap_or("event") {
        "event" => Ok(SseEvent { event: headers.event_type, data: text(payload)?, id: None }),
        "exception" => Ok(SseEvent {
            event: Some(format!("{EXCEPTION_PREFIX}{}", headers.exception_type.as_deref().unwrap_or("unknown"))),
            data: text(payload)?,
            id: None,
        }),
        "error" => Ok(SseEvent {
            event: Some(format!("{EXCEPTION_PREFIX}{}", headers.error_code.as_deref().unwrap_or("unknown"))),
            data: headers.error_message.unwrap_or_default(),
            id: None,
        }),
        _ => Err(EventStreamError::Malformed("its :message-type is not event, exception or error")),
    }
}

/// The headers a message's meaning is read from; the others are skipped (after checking their shape).
#[derive(Debug, Default)]
struct Headers {
    message_type: Option<String>,
    event_type: Option<String>,
    exception_type: Option<String>,
    error_code: Option<String>,
    error_message: Option<String>,
}

impl Headers {
    /// Reads the header at `at`, returning where the next begins.
    fn read_one(&mut self, b: &[u8], at: usize) -> Result<usize, EventStreamError> {
        let short = EventStreamError::Malformed("a header runs past the headers' end");
        let name_len = *b.get(at).ok_or(short.clone())? as usize;
        let name_end = at + 1 + name_len;
        if name_len == 0 || name_end + 1 > b.len() {
            return Err(short);
        }
        let name = &b[at + 1..name_end];
        let value_at = name_end + 1;
        let fixed = |n: usize| if value_at + n <= b.len() { Ok(value_at + n) } else { Err(short.clone()) };
        let next = match b[name_end] {
            0 | 1 => value_at,
            2 => fixed(1)?,
            3 => fixed(2)?,
            4 => fixed(4)?,
            5 | 8 => fixed(8)?,
            9 => fixed(16)?,
            kind @ (6 | 7) => {
                if value_at + 2 > b.len() {
                    return Err(short);
                }
                let len = u16_at(b, value_at) as usize;
                let end = fixed(2 + len)?;
                if kind == 7 {
                    let value = std::str::from_utf8(&b[value_at + 2..end])
                        .map_err(|_| EventStreamError::Malformed("a string header is not UTF-8"))?;
                    let slot = match name {
                        b":message-type" => Some(&mut self.message_type),
                        b":event-type" => Some(&mut self.event_type),
                        b":exception-type" => Some(&mut self.exception_type),
                        b":error-code" => Some(&mut self.error_code),
                        b":error-message" => Some(&mut self.error_message),
                        _ => None,
                    };
                    if let Some(slot) = slot {
                        *slot = Some(value.to_owned());
                    }
                }
                end
            }
            _ => return Err(EventStreamError::Malformed("a header has an unknown type")),
        };
        Ok(next)
    }
}

/// One message: string headers and a payload, framed with both checksums.
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut head = Vec::new();
    for (name, value) in headers {
        head.push(name.len() as u8);
        head.extend_from_slice(name.as_bytes());
        head.push(7);
        head.extend_from_slice(&(value.len() as u16).to_be_bytes());
        head.extend_from_slice(value.as_bytes());
    }
    let total = PRELUDE + head.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(head.len() as u32).to_be_bytes());
    out.extend_from_slice(&CRC32.checksum(&out[..8]).to_be_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(payload);
    out.extend_from_slice(&CRC32.checksum(&out).to_be_bytes());
    out
}

/// An `event` message named `event_type`, as AWS services send them.
pub fn event(event_type: &str, payload: &[u8]) -> Vec<u8> {
    encode(&[(":event-type", event_type), (":content-type", "application/json"), (":message-type", "event")], payload)
}

/// An `exception` message of `exception_type`.
pub fn exception(exception_type: &str, payload: &[u8]) -> Vec<u8> {
    encode(
        &[(":exception-type", exception_type), (":content-type", "application/json"), (":message-type", "exception")],
        payload,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(chunks: &[&[u8]]) -> Result<Vec<SseEvent>, EventStreamError> {
        let mut d = EventStreamDecoder::default();
        let mut out = Vec::new();
        for c in chunks {
            d.push(c, &mut out)?;
        }
        Ok(out)
    }

    #[test]
    fn an_event_and_an_exception_decode_to_named_events() {
        let mut bytes = event("contentBlockDelta", br#"{"delta":{"text":"Hi"}}"#);
        bytes.extend(exception("throttlingException", br#"{"message":"slow down"}"#));
        let events = decode_all(&[&bytes]).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].event.as_deref(), Some("contentBlockDelta"));
        assert_eq!(events[0].data, r#"{"delta":{"text":"Hi"}}"#);
        assert_eq!(events[1].event.as_deref(), Some(":exception:throttlingException"));
        assert_eq!(events[1].data, r#"{"message":"slow down"}"#);
    }

    /// A message as AWS documents it, with typed headers of every kind: the ones we do not read are
    /// skipped by their lengths, and the string ones still name the event.
    #[test]
    fn headers_of_every_type_are_read_past() {
        let mut head = Vec::new();
        let mut add = |name: &str, kind: u8, value: &[u8]| {
            head.push(name.len() as u8);
            head.extend_from_slice(name.as_bytes());
            head.push(kind);
            head.extend_from_slice(value);
        };
        add("t", 0, &[]);
        add("f", 1, &[]);
        add("b", 2, &[7]);
        add("s", 3, &[0, 7]);
        add("i", 4, &[0, 0, 0, 7]);
        add("l", 5, &[0; 8]);
        add("bytes", 6, &[0, 2, 0xff, 0xfe]);
        add("ts", 8, &[0; 8]);
        add("uuid", 9, &[1; 16]);
        add(":event-type", 7, b"\x00\x0bmessageStop");
        let payload = br#"{"stopReason":"end_turn"}"#;
        let total = PRELUDE + head.len() + payload.len() + 4;
        let mut msg = (total as u32).to_be_bytes().to_vec();
        msg.extend_from_slice(&(head.len() as u32).to_be_bytes());
        msg.extend_from_slice(&CRC32.checksum(&msg).to_be_bytes());
        msg.extend_from_slice(&head);
        msg.extend_from_slice(payload);
        msg.extend_from_slice(&CRC32.checksum(&msg).to_be_bytes());
        let events = decode_all(&[&msg]).unwrap();
        assert_eq!(events[0].event.as_deref(), Some("messageStop"));
        assert_eq!(events[0].data, r#"{"stopReason":"end_turn"}"#);
    }

    #[test]
    fn a_message_over_the_limit_is_refused_from_its_prelude() {
        let big = event("chunk", &vec![b'x'; 2000]);
        let mut d = EventStreamDecoder::new(1000);
        let mut out = Vec::new();
        // Only the prelude is given: the refusal comes before the body is buffered.
        assert_eq!(
            d.push(&big[..PRELUDE], &mut out),
            Err(EventStreamError::TooLarge { length: big.len(), limit: 1000 })
        );
        assert!(d.buf.capacity() < 1000, "nothing of the message was reserved");
        assert!(d.push(b"more", &mut out).is_err(), "and the stream stays failed");
    }

    #[test]
    fn a_corrupted_byte_fails_a_checksum() {
        let good = event("chunk", br#"{"a":1}"#);
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x20;
            // Either a checksum fails, or (a length made larger) the decoder is still waiting for the
            // rest: never a misread event.
            let mut d = EventStreamDecoder::default();
            let mut out = Vec::new();
            let result = d.push(&bad, &mut out);
            assert!(out.is_empty(), "byte {i} gave an event");
            assert!(result.is_err() || d.finish(), "byte {i}");
        }
    }

    #[test]
    fn a_stream_cut_inside_a_message_is_noticed() {
        let msg = event("chunk", br#"{"a":1}"#);
        let mut d = EventStreamDecoder::default();
        let mut out = Vec::new();
        d.push(&msg[..msg.len() - 3], &mut out).unwrap();
        assert!(out.is_empty() && d.finish());
        d.push(&msg[msg.len() - 3..], &mut out).unwrap();
        assert!(out.len() == 1 && !d.finish());
    }

    fn messages() -> impl Strategy<Value = Vec<(String, Vec<u8>, bool)>> {
        prop::collection::vec(("[a-zA-Z]{1,20}", prop::collection::vec(any::<u8>(), 0..300), any::<bool>()), 0..8)
            .prop_map(|v| {
                v.into_iter()
                    .map(|(name, bytes, exc)| {
                        // Payloads are text (JSON upstream); keep arbitrary bytes but as valid UTF-8.
                        (name, String::from_utf8_lossy(&bytes).into_owned().into_bytes(), exc)
                    })
                    .collect()
            })
    }

    proptest! {
        /// However the network splits the bytes, the same events come out.
        #[test]
        fn every_split_decodes_the_same(msgs in messages(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12)) {
            let mut bytes = Vec::new();
            for (name, payload, exc) in &msgs {
                bytes.extend(if *exc { exception(name, payload) } else { event(name, payload) });
            }
            let whole = decode_all(&[&bytes]).unwrap();
            prop_assert_eq!(whole.len(), msgs.len());
            for (e, (name, payload, exc)) in whole.iter().zip(&msgs) {
                let expected = if *exc { format!("{EXCEPTION_PREFIX}{name}") } else { name.clone() };
                prop_assert_eq!(e.event.as_deref(), Some(expected.as_str()));
                prop_assert_eq!(e.data.as_bytes(), payload.as_slice());
            }
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut pieces = Vec::new();
            let mut last = 0;
            for p in points {
                pieces.push(&bytes[last..p]);
                last = p;
            }
            pieces.push(&bytes[last..]);
            prop_assert_eq!(decode_all(&pieces).unwrap(), whole);
        }

        /// Arbitrary bytes never panic and never make the decoder hold more than its limit.
        #[test]
        fn garbage_is_an_error_not_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
            let mut d = EventStreamDecoder::new(1024);
            let mut out = Vec::new();
            let _ = d.push(&bytes, &mut out);
            prop_assert!(d.buf.len() <= 1024);
        }
    }
}
