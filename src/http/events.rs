//! Reading `GET /registry/stream` as a client (ronctl tail, followers): one server-sent event
//! at a time from a buffered reader.
//!
//! Invariant: memory per event is bounded: a line longer than [`STREAM_LINE_MAX`] ends the
//! stream as broken (`InvalidData`) instead of being buffered, so a hostile or broken upstream
//! cannot make a client grow without bound.

use std::io::{BufRead, Read};

/// One stream line (event field) longer than this ends the stream as broken.
pub const STREAM_LINE_MAX: u64 = 64 * 1024;

/// One parsed SSE event.
#[derive(Debug, Default)]
pub struct Event {
    /// The `event:` field; `message` when the event named none.
    pub event: String,
    /// The `id:` field, when it is a version number.
    pub id: Option<u64>,
    /// The `data:` lines, joined.
    pub data: String,
}

/// Read one event (lines bounded); `Ok(None)` at end of stream.
pub fn next_event(reader: &mut dyn BufRead) -> std::io::Result<Option<Event>> {
    let mut e = Event::default();
    loop {
        let mut line = Vec::new();
        let n = reader.take(STREAM_LINE_MAX).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(None);
        }
        if !line.ends_with(b"\n") && n as u64 >= STREAM_LINE_MAX {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "stream line too long",
            ));
        }
        let line = String::from_utf8_lossy(&line);
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            if e.event.is_empty() && e.data.is_empty() {
                continue;
            }
            if e.event.is_empty() {
                e.event = "message".into();
            }
            return Ok(Some(e));
        }
        if let Some(v) = line.strip_prefix("event:") {
            e.event = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("id:") {
            e.id = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("data:") {
            e.data.push_str(v.trim_start());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_across_blank_lines_and_retry_fields() {
        let text = "retry: 1000\n\nevent: heartbeat\ndata: {\"version\":0}\n\nevent: commit\nid: 1\ndata: {\"version\":1,\"hash\":\"ab\"}\n\ndata: x\n\n";
        let mut r = std::io::BufReader::new(text.as_bytes());
        let a = next_event(&mut r).unwrap().unwrap();
        assert_eq!((a.event.as_str(), a.id), ("heartbeat", None));
        assert_eq!(a.data, "{\"version\":0}");
        let b = next_event(&mut r).unwrap().unwrap();
        assert_eq!((b.event.as_str(), b.id), ("commit", Some(1)));
        let c = next_event(&mut r).unwrap().unwrap();
        assert_eq!((c.event.as_str(), c.data.as_str()), ("message", "x"));
        assert!(next_event(&mut r).unwrap().is_none());
    }

    #[test]
    fn an_overlong_line_is_refused_not_buffered() {
        let long = format!("data: {}\n\n", "x".repeat(STREAM_LINE_MAX as usize + 10));
        let mut r = std::io::BufReader::new(long.as_bytes());
        let e = next_event(&mut r).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    }
}
