//! Server-sent events from an upstream's stream, parsed by the rules of the HTML standard's
//! "Interpreting an event stream". Lines end in CRLF, LF or CR, anywhere across reads. A line
//! that starts with `:` is a comment, and a blank line dispatches the event. An event without
//! `data` lines is dropped, and a byte order mark at the start is skipped. The `id` and `retry`
//! fields are ignored, because an upstream stream is never resumed.
//!
//! The complete lines of a read are found with `memchr` and read in place. Only a line that
//! the end of a read cuts off is copied, so that the next read can complete it.

use std::borrow::Cow;

use futures_util::{Stream, StreamExt};

use super::ProviderError;

/// Maximum size of one event in bytes, its unfinished line included. An upstream that sends more
/// without a blank line is treated as broken, so that it cannot grow the gateway's memory.
pub const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// The UTF-8 byte order mark, which a stream may start with.
const BYTE_ORDER_MARK: &[u8] = b"\xEF\xBB\xBF";

/// One dispatched event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// The `event` field, or `message` when the event has none.
    pub event: String,
    /// The `data` lines, joined with line feeds.
    pub data: String,
}

/// Turns the bytes of an event stream into events, one read at a time.
#[derive(Debug, Default)]
pub struct Decoder {
    /// The start of a line that the last read cut off.
    partial: Vec<u8>,
    /// The last read ended with a CR, so an LF that starts the next one ends no line.
    after_cr: bool,
    /// Whether a line has ended, because a byte order mark is skipped only before the first.
    started: bool,
    /// The event being read: its type, its data, and whether a `data` line has come.
    event: String,
    data: String,
    has_data: bool,
}

impl Decoder {
    /// Reads `bytes`, the next part of the stream, and appends the events it completes to
    /// `out`. Fails on a line that is not UTF-8 and on an event over [`MAX_EVENT_BYTES`]. After
    /// an error, the rest of the stream must not be decoded.
    pub fn decode(&mut self, mut bytes: &[u8], out: &mut Vec<Event>) -> Result<(), ProviderError> {
        if bytes.is_empty() {
            return Ok(());
        }
        if std::mem::take(&mut self.after_cr) && bytes[0] == b'\n' {
            bytes = &bytes[1..];
        }
        while let Some(end) = memchr::memchr2(b'\n', b'\r', bytes) {
            let line = if self.partial.is_empty() {
                Cow::Borrowed(&bytes[..end])
            } else {
                self.partial.extend_from_slice(&bytes[..end]);
                Cow::Owned(std::mem::take(&mut self.partial))
            };
            self.read_line(&line, out)?;
            let mut next = end + 1;
            if bytes[end] == b'\r' {
                match bytes.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            bytes = &bytes[next..];
        }
        if self.partial.len() + bytes.len() + self.data.len() > MAX_EVENT_BYTES {
            return Err(event_too_large());
        }
        self.partial.extend_from_slice(bytes);
        Ok(())
    }

    fn read_line(&mut self, line: &[u8], out: &mut Vec<Event>) -> Result<(), ProviderError> {
        let mut line = line;
        if !std::mem::replace(&mut self.started, true) {
            line = line.strip_prefix(BYTE_ORDER_MARK).unwrap_or(line);
        }
        let line = std::str::from_utf8(line).map_err(|error| {
            ProviderError::InvalidResponse(format!("the stream is not valid UTF-8: {error}"))
        })?;
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line.starts_with(':') {
            return Ok(());
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
                if self.data.len() > MAX_EVENT_BYTES {
                    return Err(event_too_large());
                }
            }
            "event" => {
                self.event.clear();
                self.event.push_str(value);
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<Event>) {
        let mut event = std::mem::take(&mut self.event);
        if !std::mem::take(&mut self.has_data) {
            return;
        }
        if event.is_empty() {
            event.push_str("message");
        }
        out.push(Event {
            event,
            data: std::mem::take(&mut self.data),
        });
    }
}

fn event_too_large() -> ProviderError {
    ProviderError::InvalidResponse(format!(
        "a stream event is larger than {MAX_EVENT_BYTES} bytes"
    ))
}

/// Reads the events of a stream of bytes. The events end at the first error, which is yielded
/// last. An event that the end of the stream cuts off is dropped, as the standard requires.
pub fn events<S, B>(bytes: S) -> impl Stream<Item = Result<Event, ProviderError>> + Send + 'static
where
    S: Stream<Item = Result<B, ProviderError>> + Send + 'static,
    B: AsRef<[u8]> + Send,
{
    async_stream::stream! {
        let mut bytes = std::pin::pin!(bytes);
        let mut decoder = Decoder::default();
        let mut ready = Vec::new();
        while let Some(read) = bytes.next().await {
            let decoded = read.and_then(|read| decoder.decode(read.as_ref(), &mut ready));
            for event in ready.drain(..) {
                yield Ok(event);
            }
            if let Err(error) = decoded {
                yield Err(error);
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(data: &str) -> Event {
        Event {
            event: "message".to_owned(),
            data: data.to_owned(),
        }
    }

    /// Decodes `parts` in order, as separate reads.
    fn decode(parts: &[&[u8]]) -> Result<Vec<Event>, ProviderError> {
        let mut decoder = Decoder::default();
        let mut out = Vec::new();
        for part in parts {
            decoder.decode(part, &mut out)?;
        }
        Ok(out)
    }

    #[test]
    fn reads_the_standards_examples() {
        let stream = b"data: YHOO\ndata: +2\ndata: 10\n\n: test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n";
        let events = decode(&[stream]).expect("valid stream");
        assert_eq!(
            events,
            vec![
                message("YHOO\n+2\n10"),
                message("first event"),
                message("second event"),
                message(" third event"),
            ]
        );
    }

    #[test]
    fn data_lines_make_events() {
        let events = decode(&[b"data\n\ndata\ndata\n\ndata:\n\nevent: ping\n\n"]).expect("valid");
        assert_eq!(events, vec![message(""), message("\n"), message("")]);
    }

    #[test]
    fn event_names_are_kept_and_reset() {
        let events = decode(&[b"event: message_start\ndata: {}\n\ndata: x\n\n"]).expect("valid");
        assert_eq!(
            events,
            vec![
                Event {
                    event: "message_start".to_owned(),
                    data: "{}".to_owned()
                },
                message("x"),
            ]
        );
    }

    #[test]
    fn line_endings_and_splits_agree() {
        let expected = vec![message("a\nb"), message("c")];
        for newline in ["\n", "\r\n", "\r"] {
            let text =
                format!("data: a{newline}data: b{newline}{newline}data: c{newline}{newline}");
            let bytes = text.as_bytes();
            for cut in 0..=bytes.len() {
                let events = decode(&[&bytes[..cut], &bytes[cut..]]).expect("valid");
                assert_eq!(events, expected, "newline {newline:?}, cut at {cut}");
            }
        }
    }

    #[test]
    fn byte_order_mark_skipped_at_start() {
        let events = decode(&[b"\xEF\xBB\xBFdata: a\n\n"]).expect("valid");
        assert_eq!(events, vec![message("a")]);
        let events = decode(&[b"data: a\n\n\xEF\xBB\xBFdata: b\n\n"]).expect("valid");
        assert_eq!(
            events,
            vec![message("a")],
            "the second line's field is not `data`"
        );
    }

    #[test]
    fn unfinished_event_is_dropped() {
        let events = decode(&[b"data: whole\n\ndata: cut"]).expect("valid");
        assert_eq!(events, vec![message("whole")]);
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let error = decode(&[b"data: \xFF\n\n"]).expect_err("invalid UTF-8");
        assert!(error.to_string().contains("UTF-8"), "{error}");
    }

    #[test]
    fn endless_line_is_an_error() {
        let mut decoder = Decoder::default();
        let mut out = Vec::new();
        let block = vec![b'a'; 1024 * 1024];
        let result =
            (0..=MAX_EVENT_BYTES / block.len()).try_for_each(|_| decoder.decode(&block, &mut out));
        let error = result.expect_err("over the bound");
        assert!(error.to_string().contains("larger than"), "{error}");
    }
}
