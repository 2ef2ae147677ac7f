//! Server-sent events: a byte-level decoder for upstream streams and the frame writer for ours.
//!
//! The decoder follows the WHATWG "parse an event stream" rules: lines end in LF, CR or CRLF (a CRLF may be
//! split across reads), `:` lines are comments, `data` lines join with `\n`, a blank line dispatches, a
//! leading UTF-8 BOM is dropped. It works on bytes and only decodes complete lines, so a multi-byte character
//! split across network reads is never damaged. Memory is bounded: an event larger than `max_event_bytes`
//! is an error, not an ever-growing buffer. Each byte is scanned once, whatever the chunking.
//! Nothing here knows about any provider's event types.

use bytes::Bytes;

/// One dispatched event. `event` is `None` when the stream gave no `event:` field (the default type).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: String,
    pub id: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    #[error("an upstream event exceeded {limit} bytes")]
    EventTooLarge { limit: usize },
}

/// Incremental decoder. Feed it whatever the network returns with [`SseDecoder::push`].
#[derive(Debug)]
pub struct SseDecoder {
    /// Bytes of a line not yet terminated.
    line: Vec<u8>,
    /// The previous read ended in CR, so a leading LF of the next read belongs to that CRLF.
    after_cr: bool,
    /// Still at the very start of the stream (a BOM may follow).
    at_start: bool,
    data: String,
    has_data: bool,
    event: Option<String>,
    last_id: Option<String>,
    max_event_bytes: usize,
}

pub const DEFAULT_MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

impl Default for SseDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_EVENT_BYTES)
    }
}

impl SseDecoder {
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            line: Vec::new(),
            after_cr: false,
            at_start: true,
            data: String::new(),
            has_data: false,
            event: None,
            last_id: None,
            max_event_bytes,
        }
    }

    /// Decodes one read's worth of bytes, appending every event it completes to `out`.
    pub fn push(&mut self, mut chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if self.after_cr && !chunk.is_empty() {
            self.after_cr = false;
            if chunk[0] == b'\n' {
                chunk = &chunk[1..];
            }
        }
        while let Some(pos) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (head, rest) = chunk.split_at(pos);
            let was_cr = rest[0] == b'\r';
            chunk = &rest[1..];
            if was_cr {
                if chunk.is_empty() {
                    self.after_cr = true;
                } else if chunk[0] == b'\n' {
                    chunk = &chunk[1..];
                }
            }
            if self.line.is_empty() {
                self.process_line(head, out)?;
            } else {
                self.line.extend_from_slice(head);
                let line = std::mem::take(&mut self.line);
                self.process_line(&line, out)?;
                self.line = line;
                self.line.clear();
            }
        }
        self.line.extend_from_slice(chunk);
        self.check_size()
    }

    /// Called at the end of the stream. Per the spec an unterminated final event is discarded.
    pub fn finish(&mut self) -> bool {
        let had_partial = !self.line.is_empty() || self.has_data;
        self.line.clear();
        self.reset_event();
        had_partial
    }

    /// The most recent `id:` seen (kept across events, as the spec's "last event ID").
    pub fn last_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    fn check_size(&self) -> Result<(), SseError> {
        if self.line.len() + self.data.len() > self.max_event_bytes {
            return Err(SseError::EventTooLarge { limit: self.max_event_bytes });
        }
        Ok(())
    }

    fn process_line(&mut self, mut line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if self.at_start {
            self.at_start = false;
            if let Some(rest) = line.strip_prefix(&[0xEF, 0xBB, 0xBF]) {
                line = rest;
            }
        }
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&value);
                self.has_data = true;
                self.check_size()?;
            }
            b"event" => self.event = Some(value.into_owned()),
            b"id" if !value.contains('\0') => self.last_id = Some(value.into_owned()),
            // `retry` only matters to reconnecting clients; unknown fields are ignored by the spec.
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        if self.has_data {
            out.push(SseEvent {
                event: self.event.take().filter(|e| !e.is_empty()),
                data: std::mem::take(&mut self.data),
                id: self.last_id.clone(),
            });
        }
        self.reset_event();
    }

    fn reset_event(&mut self) {
        self.data.clear();
        self.has_data = false;
        self.event = None;
    }
}

/// `data: <payload>\n\n` as one buffer, ready to hand to the response body.
pub fn data_frame(payload: &[u8]) -> Bytes {
    let mut buf = Vec::with_capacity(payload.len() + 8);
    buf.extend_from_slice(b"data: ");
    buf.extend_from_slice(payload);
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

/// `event: <name>\ndata: <payload>\n\n`, for dialects with named events.
pub fn named_frame(event: &str, payload: &[u8]) -> Bytes {
    let mut buf = Vec::with_capacity(payload.len() + event.len() + 16);
    buf.extend_from_slice(b"event: ");
    buf.extend_from_slice(event.as_bytes());
    buf.extend_from_slice(b"\ndata: ");
    buf.extend_from_slice(payload);
    buf.extend_from_slice(b"\n\n");
    Bytes::from(buf)
}

pub const DONE_FRAME: &[u8] = b"data: [DONE]\n\n";

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut d = SseDecoder::default();
        let mut out = Vec::new();
        for c in chunks {
            d.push(c, &mut out).unwrap();
        }
        out
    }

    fn ev(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent { event: event.map(str::to_owned), data: data.to_owned(), id: None }
    }

    #[test]
    fn lf_crlf_and_cr_all_end_lines() {
        let got = decode_all(&[b"data: a\n\ndata: b\r\n\r\ndata: c\r\rdata: d\r\n\n"]);
        assert_eq!(got, vec![ev(None, "a"), ev(None, "b"), ev(None, "c"), ev(None, "d")]);
    }

    #[test]
    fn crlf_split_across_reads_is_one_line_end() {
        let got = decode_all(&[b"data: a\r", b"\n", b"\r", b"\ndata: b\n\n"]);
        assert_eq!(got, vec![ev(None, "a"), ev(None, "b")]);
    }

    #[test]
    fn comments_multiline_data_and_event_names() {
        let got = decode_all(&[b": keep-alive\n\nevent: message_start\ndata: {\"a\":\ndata: 1}\n\ndata:no-space\n\n"]);
        assert_eq!(got, vec![ev(Some("message_start"), "{\"a\":\n1}"), ev(None, "no-space")]);
    }

    #[test]
    fn bom_is_stripped_and_unknown_fields_ignored() {
        let got = decode_all(&[b"\xEF\xBB", b"\xBFdata: x\nretry: 10\nfoo: bar\ndata : ignored\n\n"]);
        assert_eq!(got, vec![ev(None, "x")]);
    }

    #[test]
    fn empty_data_field_dispatches_but_bare_blank_lines_do_not() {
        let got = decode_all(&[b"\n\nevent: ping\n\ndata\n\n"]);
        assert_eq!(got, vec![ev(None, "")]);
    }

    #[test]
    fn id_is_remembered() {
        let mut d = SseDecoder::default();
        let mut out = Vec::new();
        d.push(b"id: 7\ndata: x\n\ndata: y\n\n", &mut out).unwrap();
        assert_eq!(out[1].id.as_deref(), Some("7"));
        assert_eq!(d.last_id(), Some("7"));
    }

    #[test]
    fn unterminated_final_event_is_reported_not_dispatched() {
        let mut d = SseDecoder::default();
        let mut out = Vec::new();
        d.push(b"data: complete\n\ndata: partial", &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert!(d.finish());
    }

    #[test]
    fn oversized_event_is_an_error() {
        let mut d = SseDecoder::new(16);
        let mut out = Vec::new();
        assert_eq!(d.push(b"data: 0123456789abcdefghij", &mut out), Err(SseError::EventTooLarge { limit: 16 }));
        let mut d = SseDecoder::new(16);
        assert!(d.push(b"data: 0123456789\ndata: abcdefghij\n", &mut out).is_err());
    }

    fn arb_event() -> impl Strategy<Value = SseEvent> {
        (proptest::option::of("[a-z_]{1,12}"), proptest::collection::vec("[^\r\n]{0,20}", 1..4))
            .prop_map(|(event, lines)| SseEvent { event, data: lines.join("\n"), id: None })
    }

    fn encode(events: &[SseEvent], endings: &[&str]) -> Vec<u8> {
        let mut s = String::new();
        let mut i = 0;
        let mut eol = || {
            i += 1;
            endings[i % endings.len()]
        };
        for e in events {
            if let Some(name) = &e.event {
                s.push_str("event: ");
                s.push_str(name);
                s.push_str(eol());
            }
            for line in e.data.split('\n') {
                s.push_str("data: ");
                s.push_str(line);
                s.push_str(eol());
            }
            s.push_str(eol());
        }
        s.into_bytes()
    }

    proptest! {
        #[test]
        fn any_chunking_and_line_endings_give_the_same_events(
            events in proptest::collection::vec(arb_event(), 0..8),
            // A CR followed by an LF is one line end, so no mix lets a bare CR precede an LF.
            endings in prop_oneof![
                Just(vec!["\n"]), Just(vec!["\r"]), Just(vec!["\r\n"]),
                Just(vec!["\n", "\r\n"]), Just(vec!["\r\n", "\r"]),
            ],
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let bytes = encode(&events, &endings);
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for p in points {
                chunks.push(&bytes[last..p]);
                last = p;
            }
            chunks.push(&bytes[last..]);
            // Splitting anywhere, including inside multi-byte characters, changes nothing.
            prop_assert_eq!(decode_all(&chunks), events);
        }
    }
}
