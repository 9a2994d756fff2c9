//! The incremental `text/event-stream` scanner: fed chunks as they arrive (split anywhere, even
//! inside a `\r\n`), it finds each event's end, reads usage from the events that carry it and,
//! when stripping, takes out what the proxy's own `include_usage` added. No I/O, no async.
//!
//! Event framing follows the WHATWG rules: lines end in `\r\n`, `\n` or `\r`; a blank line ends
//! an event. An event's bytes run from the end of the previous event through its blank line's
//! line ending.
//!
//! Stripping (the client did not ask for usage, the proxy did) undoes both of the upstream's
//! changes, so the client gets the bytes it would have got: the usage-only event (empty
//! `choices`, non-null `usage`) is removed whole, and the `"usage":null` member the upstream adds
//! to every other chunk is cut out of it. An event can only be judged once complete, so while
//! stripping, the bytes of an unfinished event wait for its end (an SSE client cannot use part of
//! an event anyway); complete events in a chunk pass at once.

use std::mem;
use std::ops::Range;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::event::{event_data, first_usage_key, may_carry_usage, null_usage_member};
use super::{RawUsage, Usage};

/// The most of one event kept (pass-through: copied for parsing; stripping: held back). A
/// longer event passes unparsed; usage events are a few hundred bytes.
pub(super) const EVENT_LIMIT: usize = 1024 * 1024;

/// The size of the buffer events passed on in pieces are joined in (see `SseScanner::out`):
/// a few events of a few hundred bytes, small enough to keep for each open stream.
const OUT_CAPACITY: usize = 1024;

/// The fields of an event's JSON data that matter here.
#[derive(Debug, Deserialize)]
struct EventJson {
    /// Chat Completions / Completions chunks.
    choices: Option<Vec<IgnoredAny>>,
    /// Chat Completions / Completions: non-null on the usage chunk only.
    usage: Option<RawUsage>,
    /// Responses API: `response.completed` (and `.incomplete`, `.failed`) carry `response.usage`.
    response: Option<ResponseJson>,
    /// Anthropic Messages: `message_start` carries `message.usage` (the input tokens); the
    /// output tokens come in `message_delta`'s top-level `usage`.
    message: Option<ResponseJson>,
}

#[derive(Debug, Deserialize)]
struct ResponseJson {
    usage: Option<RawUsage>,
}

/// What happens to a complete event on its way to the client.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    /// Passed on as it is.
    Keep,
    /// Taken out whole (the injected usage-only event).
    Remove,
    /// Passed on without this byte range (the injected `"usage":null` member), relative to the
    /// event's first byte.
    Cut(Range<usize>),
}

/// One piece of the output for one input chunk.
#[derive(Debug)]
enum Piece {
    /// A range of the input chunk: passed on without copying.
    Slice(Range<usize>),
    /// Bytes held back from earlier chunks.
    Owned(Bytes),
}

/// The scanner's state between chunks.
#[derive(Debug)]
pub(super) struct SseScanner {
    /// Whether injected usage is taken out of the stream.
    strip: bool,
    /// The unfinished event's bytes from earlier chunks: a copy for parsing when passing through,
    /// bytes not yet passed on when stripping.
    pending: Vec<u8>,
    /// The unfinished event outgrew [`EVENT_LIMIT`]: its bytes pass on and it is not parsed.
    oversized: bool,
    /// The current line has no bytes yet (so a line ending here ends the event).
    line_empty: bool,
    /// The last byte seen was a CR inside an event: an LF next is part of the same line ending.
    after_cr: bool,
    /// An event ended on a CR that was the last byte of its chunk; an LF opening the next chunk
    /// belongs to that event. `Some(true)` when that event was removed (so is the LF).
    owed_lf: Option<bool>,
    /// The last usage seen.
    usage: Option<Usage>,
    /// Output pieces of the chunk being fed (kept to reuse the allocation).
    pieces: Vec<Piece>,
    /// Where an event passed on in pieces (the `"usage":null` member cut out, or its bytes held
    /// from earlier chunks) is joined: what is taken from it shares the buffer, which is used
    /// again in place once those bytes have been sent and dropped (the usual case: an event is
    /// written before the next arrives), so such an event costs no allocation of its own.
    out: BytesMut,
}

impl SseScanner {
    pub(super) fn new(strip: bool) -> Self {
        Self {
            strip,
            pending: Vec::new(),
            oversized: false,
            line_empty: true,
            after_cr: false,
            owed_lf: None,
            usage: None,
            pieces: Vec::new(),
            out: BytesMut::new(),
        }
    }

    /// The last usage seen so far.
    pub(super) fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Whether the scanner may change the stream.
    pub(super) fn strips(&self) -> bool {
        self.strip
    }

    /// Scans one chunk and returns what to pass on now: the chunk itself when not stripping.
    pub(super) fn feed(&mut self, chunk: Bytes) -> Bytes {
        if chunk.is_empty() {
            return chunk;
        }
        let mut start = 0;
        if let Some(removed) = self.owed_lf.take()
            && chunk.first() == Some(&b'\n')
        {
            if !removed {
                self.keep(0..1);
            }
            start = 1;
        }
        let mut i = start;
        while i < chunk.len() {
            if !self.line_empty && !self.after_cr {
                // Inside a line only its end matters: jump to it.
                match memchr::memchr2(b'\r', b'\n', &chunk[i..]) {
                    Some(offset) => i += offset,
                    None => break,
                }
            }
            let byte = chunk[i];
            i += 1;
            if mem::take(&mut self.after_cr) && byte == b'\n' {
                continue;
            }
            match byte {
                b'\r' | b'\n' if self.line_empty => {
                    // A blank line: the event ends after its line ending.
                    let mut owed = false;
                    if byte == b'\r' {
                        match chunk.get(i) {
                            Some(b'\n') => i += 1,
                            Some(_) => {}
                            None => owed = true,
                        }
                    }
                    let removed = self.end_event(&chunk, start..i);
                    if owed {
                        self.owed_lf = Some(removed);
                    }
                    start = i;
                }
                b'\r' | b'\n' => {
                    self.line_empty = true;
                    self.after_cr = byte == b'\r';
                }
                _ => self.line_empty = false,
            }
        }
        self.continue_event(&chunk, start..chunk.len());
        if self.strip {
            self.output(&chunk)
        } else {
            chunk
        }
    }

    /// At the end of the stream: an unfinished event is judged as if complete (a client drops
    /// it, but its usage was spent); returns what is still to pass on.
    pub(super) fn finish(&mut self) -> Bytes {
        let pending = mem::take(&mut self.pending);
        if pending.is_empty() || self.oversized {
            return Bytes::new();
        }
        let action = self.judge(&pending);
        if !self.strip {
            return Bytes::new();
        }
        match action {
            Action::Keep => Bytes::from(pending),
            Action::Remove => Bytes::new(),
            Action::Cut(cut) => {
                joined(&mut self.out, &[&pending[..cut.start], &pending[cut.end..]])
            }
        }
    }

    /// An event ends at `range` of `chunk`; returns whether it was removed.
    fn end_event(&mut self, chunk: &Bytes, range: Range<usize>) -> bool {
        if mem::take(&mut self.oversized) {
            self.pending.clear();
            self.keep(range);
            return false;
        }
        if self.pending.is_empty() {
            let action = self.judge(&chunk[range.clone()]);
            return match action {
                Action::Keep => {
                    self.keep(range);
                    false
                }
                Action::Remove => true,
                Action::Cut(cut) => {
                    self.keep(range.start..range.start + cut.start);
                    self.keep(range.start + cut.end..range.end);
                    false
                }
            };
        }
        // The event began in an earlier chunk: judge (and pass on) the held copy.
        let mut event = mem::take(&mut self.pending);
        if event.len() + range.len() > EVENT_LIMIT {
            if self.strip {
                self.pieces.push(Piece::Owned(Bytes::from(event)));
            }
            self.keep(range);
            return false;
        }
        event.extend_from_slice(&chunk[range]);
        let action = self.judge(&event);
        let removed = action == Action::Remove;
        if self.strip && !removed {
            let parts: [&[u8]; 2] = match &action {
                Action::Cut(cut) => [&event[..cut.start], &event[cut.end..]],
                _ => [&event, &[]],
            };
            let bytes = joined(&mut self.out, &parts);
            self.pieces.push(Piece::Owned(bytes));
        }
        // Reuse the allocation for the next straddling event.
        event.clear();
        self.pending = event;
        removed
    }

    /// `range` of `chunk` begins or continues an unfinished event.
    fn continue_event(&mut self, chunk: &Bytes, range: Range<usize>) {
        if range.is_empty() {
            return;
        }
        if self.oversized {
            self.keep(range);
        } else if self.pending.len() + range.len() > EVENT_LIMIT {
            self.oversized = true;
            let held = mem::take(&mut self.pending);
            if self.strip {
                self.pieces.push(Piece::Owned(Bytes::from(held)));
            }
            self.keep(range);
        } else {
            self.pending.extend_from_slice(&chunk[range]);
        }
    }

    /// Reads usage from a complete event and decides what to pass on.
    fn judge(&mut self, event: &[u8]) -> Action {
        let fields = event_data(event);
        let Some(data) = fields.data else {
            return Action::Keep;
        };
        let Some(first) = first_usage_key(&data) else {
            return Action::Keep;
        };
        if may_carry_usage(&data, first)
            && let Ok(json) = serde_json::from_slice::<EventJson>(&data)
        {
            // A count an event leaves out (a `message_delta` names no input tokens) is the
            // one seen before.
            let chat = json.usage.as_ref().and_then(|u| u.usage_after(self.usage));
            let nested = json.response.or(json.message).and_then(|r| r.usage);
            let nested = nested.and_then(|u| u.usage_after(self.usage));
            if let Some(usage) = chat.or(nested) {
                self.usage = Some(usage);
            }
            if self.strip && chat.is_some() && json.choices.is_some_and(|c| c.is_empty()) {
                return Action::Remove;
            }
        }
        if self.strip
            && let Some(offset) = fields.single_line_at
            && let Some(cut) = null_usage_member(&data)
        {
            return Action::Cut(offset + cut.start..offset + cut.end);
        }
        Action::Keep
    }

    /// Passes `range` of the current chunk on (when stripping; otherwise all of it passes).
    fn keep(&mut self, range: Range<usize>) {
        if !self.strip || range.is_empty() {
            return;
        }
        if let Some(Piece::Slice(last)) = self.pieces.last_mut()
            && last.end == range.start
        {
            last.end = range.end;
            return;
        }
        self.pieces.push(Piece::Slice(range));
    }

    /// Joins the pieces kept from `chunk`: a slice of it when they are one contiguous run.
    fn output(&mut self, chunk: &Bytes) -> Bytes {
        let out = match self.pieces.as_slice() {
            [] => Bytes::new(),
            [Piece::Slice(range)] => chunk.slice(range.clone()),
            [Piece::Owned(bytes)] => bytes.clone(),
            [Piece::Slice(a), Piece::Slice(b)] => {
                joined(&mut self.out, &[&chunk[a.clone()], &chunk[b.clone()]])
            }
            pieces => {
                let parts: Vec<&[u8]> = pieces
                    .iter()
                    .map(|piece| match piece {
                        Piece::Slice(range) => &chunk[range.clone()],
                        Piece::Owned(bytes) => &bytes[..],
                    })
                    .collect();
                joined(&mut self.out, &parts)
            }
        };
        self.pieces.clear();
        out
    }
}

/// `parts` one after the other, taken from `out`: a new buffer is allocated only when `out`
/// has no room left and what was taken from it earlier is still held (not yet sent).
fn joined(out: &mut BytesMut, parts: &[&[u8]]) -> Bytes {
    let len = parts.iter().map(|part| part.len()).sum();
    if out.capacity() < len {
        // Reclaims the whole buffer in place when nothing taken from it is held any more.
        out.reserve(len.max(OUT_CAPACITY));
    }
    for part in parts {
        out.extend_from_slice(part);
    }
    out.split().freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `parts` one by one; returns the output and the usage.
    fn scan(strip: bool, parts: &[&[u8]]) -> (Vec<u8>, Option<Usage>) {
        let mut scanner = SseScanner::new(strip);
        let mut out = Vec::new();
        for part in parts {
            out.extend_from_slice(&scanner.feed(Bytes::copy_from_slice(part)));
        }
        out.extend_from_slice(&scanner.finish());
        (out, scanner.usage())
    }

    const INJECTED: &str = concat!(
        "data: {\"choices\":[],\"prompt_filter_results\":[]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"id\":\"c\",\"usage\":null}\n\n",
        "data: {\"choices\":[],\"id\":\"c\",\"usage\":{\"completion_tokens\":2,\"prompt_tokens\":3,\"total_tokens\":5}}\n\n",
        "data: [DONE]\n\n",
    );
    const PLAIN: &str = concat!(
        "data: {\"choices\":[],\"prompt_filter_results\":[]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"id\":\"c\"}\n\n",
        "data: [DONE]\n\n",
    );
    const USAGE: Usage = Usage {
        prompt_tokens: 3,
        completion_tokens: 2,
        cached_tokens: 0,
    };

    /// Passing through, the bytes are untouched and the usage chunk's counts are read.
    #[test]
    fn pass_through_reads_usage() {
        let (out, usage) = scan(false, &[INJECTED.as_bytes()]);
        assert_eq!(out, INJECTED.as_bytes());
        assert_eq!(usage, Some(USAGE));
    }

    /// Stripping removes the usage-only event and the `"usage":null` members, and nothing else.
    #[test]
    fn strip_restores_the_plain_stream() {
        let (out, usage) = scan(true, &[INJECTED.as_bytes()]);
        assert_eq!(String::from_utf8(out).unwrap(), PLAIN);
        assert_eq!(usage, Some(USAGE));
    }

    /// Events split anywhere, in every line-ending style, give the same bytes and usage.
    #[test]
    fn every_split_every_line_ending() {
        for ending in ["\n", "\r\n", "\r"] {
            let injected = INJECTED.replace('\n', ending);
            let plain = PLAIN.replace('\n', ending);
            for strip in [false, true] {
                let expected = if strip { &plain } else { &injected };
                for at in 0..=injected.len() {
                    let (a, b) = injected.as_bytes().split_at(at);
                    let (out, usage) = scan(strip, &[a, b]);
                    assert_eq!(
                        String::from_utf8(out).unwrap(),
                        *expected,
                        "{ending:?} strip={strip} at={at}"
                    );
                    assert_eq!(usage, Some(USAGE));
                }
                let bytes: Vec<&[u8]> = injected.as_bytes().chunks(1).collect();
                assert_eq!(scan(strip, &bytes).0, expected.as_bytes());
            }
        }
    }

    /// Responses API: usage from `response.completed`; nothing is stripped there.
    #[test]
    fn responses_completed() {
        let stream = concat!(
            "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"usage\":null}}\n\n",
            "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"usage\"}\n\n",
            "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"output\":[],",
            "\"usage\":{\"input_tokens\":4,\"output_tokens\":6,\"total_tokens\":10}}}\n\n",
        );
        for strip in [false, true] {
            let (out, usage) = scan(strip, &[stream.as_bytes()]);
            assert_eq!(out, stream.as_bytes());
            assert_eq!(
                usage,
                Some(Usage {
                    prompt_tokens: 4,
                    completion_tokens: 6,
                    cached_tokens: 0,
                })
            );
        }
    }

    /// A stream without usage reports none; comments, ids and blank runs pass untouched.
    #[test]
    fn anthropic_stream() {
        let stream = concat!(
            "event: message_start\n",
            "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":12,\"cache_creation_input_tokens\":2,\"cache_read_input_tokens\":3,\"output_tokens\":1}}}\n\n",
            "event: content_block_delta\n",
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"usage\"}}\n\n",
            "event: message_delta\n",
            "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":7}}\n\n",
            "event: message_stop\n",
            "data: {\"type\":\"message_stop\"}\n\n",
        );
        let (out, usage) = scan(false, &[stream.as_bytes()]);
        assert_eq!(out, stream.as_bytes());
        assert_eq!(
            usage,
            Some(Usage {
                prompt_tokens: 17,
                completion_tokens: 7,
                cached_tokens: 3,
            })
        );
    }

    #[test]
    fn no_usage() {
        let stream = ": keep-alive\n\nid: 1\ndata: {\"choices\":[]}\n\n\n\ndata: [DONE]\n\n";
        for strip in [false, true] {
            let (out, usage) = scan(strip, &[stream.as_bytes()]);
            assert_eq!(out, stream.as_bytes());
            assert_eq!(usage, None);
        }
    }

    /// An unfinished event at the end still counts and, when kept, still passes.
    #[test]
    fn unfinished_last_event() {
        let stream =
            "data: {\"choices\":[{}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}";
        for strip in [false, true] {
            let (out, usage) = scan(strip, &[stream.as_bytes()]);
            assert_eq!(out, stream.as_bytes());
            assert_eq!(usage.map(|u| u.total()), Some(2));
        }
    }

    /// A multi-line data event is parsed joined; an event over the limit passes unparsed.
    #[test]
    fn multi_line_and_oversized() {
        let stream = "data: {\"choices\":[],\ndata: \"usage\":{\"prompt_tokens\":1}}\n\n";
        let (out, usage) = scan(true, &[stream.as_bytes()]);
        assert_eq!(out, b"");
        assert_eq!(usage.map(|u| u.prompt_tokens), Some(1));

        let big = format!(
            "data: {{\"x\":\"{}\",\"choices\":[],\"usage\":{{\"prompt_tokens\":1}}}}\n\ndata: [DONE]\n\n",
            "a".repeat(EVENT_LIMIT)
        );
        let parts: Vec<&[u8]> = big.as_bytes().chunks(64 * 1024).collect();
        for strip in [false, true] {
            let (out, usage) = scan(strip, &parts);
            assert_eq!(out, big.as_bytes());
            assert_eq!(usage, None);
        }
    }

    /// Cut events are joined in one reused buffer: what was passed on earlier keeps its bytes
    /// while later events are joined (held, as a write queue holds them), and after it is dropped.
    #[test]
    fn joined_events_keep_their_bytes() {
        let event = |i: usize| {
            format!(
                "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{i}\"}}}}],\"usage\":null}}\n\n"
            )
        };
        let plain =
            |i: usize| format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{i}\"}}}}]}}\n\n");
        let mut scanner = SseScanner::new(true);
        let mut held = Vec::new();
        for i in 0..200 {
            let out = scanner.feed(Bytes::from(event(i)));
            assert_eq!(out, plain(i).as_bytes());
            if i % 3 == 0 {
                held.push((i, out));
            }
        }
        for (i, out) in held {
            assert_eq!(out, plain(i).as_bytes());
        }
    }

    /// Stripping never holds a complete event: each chunk's whole events pass at once.
    #[test]
    fn complete_events_are_not_held() {
        let mut scanner = SseScanner::new(true);
        let out = scanner.feed(Bytes::from_static(b"data: [DONE]\n\ndata: {\"cho"));
        assert_eq!(&out[..], b"data: [DONE]\n\n");
        let out = scanner.feed(Bytes::from_static(b"ices\":[1]}\n\n"));
        assert_eq!(&out[..], b"data: {\"choices\":[1]}\n\n");
    }
}
