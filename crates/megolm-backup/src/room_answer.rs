//! A room's backup as the server sends it (`GET /room_keys/keys/{roomId}`: `{"sessions": {ID:
//! entry, …}}`), split into its entries as the bytes arrive.
//!
//! Why not parse the whole answer: a room of a long-lived bot holds 100k sessions and more, about
//! 60 MB of JSON, and parsed at once (the text, then a map of every entry) it cost verify hundreds
//! of MB at 5M keys, where the store's own side costs 28 bytes a key. Split as it streams in, a
//! room costs what one network chunk and its complete entries cost.
//!
//! The splitter only finds where each entry begins and ends (strings and escapes respected, any
//! whitespace); each entry's value is then parsed on its own by whoever takes it. Members other
//! than `sessions` are skipped, as the whole-answer parse did.

use std::fmt;

#[derive(Debug, PartialEq, Eq)]
pub struct AnswerError(pub String);

impl fmt::Display for AnswerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AnswerError {}

/// One session's entry: its ID and the bytes of its value (a JSON object, unparsed).
#[derive(Debug, PartialEq, Eq)]
pub struct RawEntry {
    pub session_id: String,
    pub value: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the answer's opening brace.
    Start,
    /// In the answer object, before a member's name (`first`: no comma needed).
    TopMember { first: bool },
    /// In `sessions`, before an entry's ID.
    Session { first: bool },
    /// After the answer's closing brace.
    Done,
}

pub struct RoomAnswerSplitter {
    buf: Vec<u8>,
    state: State,
}

impl Default for RoomAnswerSplitter {
    fn default() -> Self {
        Self::new()
    }
}

/// What one step found: more bytes are needed, or it consumed `n` bytes.
enum Step {
    NeedMore,
    Took(usize),
}

impl RoomAnswerSplitter {
    pub fn new() -> Self {
        Self { buf: Vec::new(), state: State::Start }
    }

    /// Adds the next bytes of the answer; returns the entries they complete.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<RawEntry>, AnswerError> {
        self.buf.extend_from_slice(chunk);
        let mut entries = Vec::new();
        let mut at = 0;
        loop {
            match self.step(at, &mut entries)? {
                Step::NeedMore => break,
                Step::Took(n) => at += n,
            }
        }
        self.buf.drain(..at);
        Ok(entries)
    }

    /// The answer has ended: it must have been whole.
    pub fn finish(self) -> Result<(), AnswerError> {
        if self.state == State::Done && self.buf.iter().all(|b| b.is_ascii_whitespace()) {
            Ok(())
        } else {
            Err(AnswerError("the answer ended before its JSON did".into()))
        }
    }

    fn step(&mut self, at: usize, entries: &mut Vec<RawEntry>) -> Result<Step, AnswerError> {
        let bytes = &self.buf[at..];
        let mut i = skip_ws(bytes, 0);
        let Some(&b) = bytes.get(i) else { return Ok(Step::NeedMore) };
        match self.state {
            State::Start => {
                expect(b, b'{', "an object")?;
                self.state = State::TopMember { first: true };
                Ok(Step::Took(i + 1))
            }
            State::Done => Err(AnswerError(format!("unexpected {:?} after the answer's end", b as char))),
            State::TopMember { first } | State::Session { first } => {
                let in_sessions = matches!(self.state, State::Session { .. });
                if b == b'}' {
                    self.state = if in_sessions { State::TopMember { first: false } } else { State::Done };
                    return Ok(Step::Took(i + 1));
                }
                if !first {
                    expect(b, b',', "a comma or a closing brace")?;
                    i = skip_ws(bytes, i + 1);
                }
                // "name" : value
                let Some(name_end) = string_end(bytes, i)? else { return Ok(Step::NeedMore) };
                let name: String = serde_json::from_slice(&bytes[i..name_end]).map_err(|e| AnswerError(format!("a member's name is not a JSON string ({e})")))?;
                let colon = skip_ws(bytes, name_end);
                let Some(&c) = bytes.get(colon) else { return Ok(Step::NeedMore) };
                expect(c, b':', "a colon")?;
                let value = skip_ws(bytes, colon + 1);
                if !in_sessions && name == "sessions" {
                    let Some(&o) = bytes.get(value) else { return Ok(Step::NeedMore) };
                    expect(o, b'{', "`sessions` to be an object")?;
                    self.state = State::Session { first: true };
                    return Ok(Step::Took(value + 1));
                }
                let Some(value_end) = value_end(bytes, value)? else { return Ok(Step::NeedMore) };
                if in_sessions {
                    entries.push(RawEntry { session_id: name, value: bytes[value..value_end].to_vec() });
                    self.state = State::Session { first: false };
                } else {
                    self.state = State::TopMember { first: false };
                }
                Ok(Step::Took(value_end))
            }
        }
    }
}

fn expect(b: u8, wanted: u8, what: &str) -> Result<(), AnswerError> {
    if b == wanted {
        Ok(())
    } else {
        Err(AnswerError(format!("expected {what}, found {:?}", b as char)))
    }
}

fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

/// The end (exclusive) of the string starting at `i`, or None if the bytes stop first.
fn string_end(bytes: &[u8], i: usize) -> Result<Option<usize>, AnswerError> {
    match bytes.get(i) {
        None => return Ok(None),
        Some(b'"') => {}
        Some(&b) => return Err(AnswerError(format!("expected a string, found {:?}", b as char))),
    }
    let mut j = i + 1;
    while let Some(&b) = bytes.get(j) {
        match b {
            b'\\' => j += 2,
            b'"' => return Ok(Some(j + 1)),
            _ => j += 1,
        }
    }
    Ok(None)
}

/// The end (exclusive) of the JSON value starting at `i`, or None if the bytes stop first.
fn value_end(bytes: &[u8], i: usize) -> Result<Option<usize>, AnswerError> {
    let Some(&first) = bytes.get(i) else { return Ok(None) };
    match first {
        b'"' => string_end(bytes, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while let Some(&b) = bytes.get(j) {
                match b {
                    b'"' => match string_end(bytes, j)? {
                        Some(end) => {
                            j = end;
                            continue;
                        }
                        None => return Ok(None),
                    },
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(Some(j + 1));
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            Ok(None)
        }
        _ => {
            // A number, true, false or null: it ends at the next delimiter, which must have arrived.
            let end = bytes[i..].iter().position(|b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace());
            Ok(end.map(|n| i + n))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_in_pieces(answer: &str, piece: usize) -> Result<Vec<RawEntry>, AnswerError> {
        let mut s = RoomAnswerSplitter::new();
        let mut all = Vec::new();
        for chunk in answer.as_bytes().chunks(piece) {
            all.extend(s.push(chunk)?);
        }
        s.finish()?;
        Ok(all)
    }

    fn whole(answer: &str) -> Vec<(String, serde_json::Value)> {
        let v: serde_json::Value = serde_json::from_str(answer).unwrap();
        let mut out: Vec<_> = v["sessions"].as_object().map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[test]
    fn entries_are_the_same_whatever_the_chunk_boundaries() {
        let answer = r#" { "other": {"a": [1, "}", {"b": "\"{"}]}, "sessions" : {
            "s1": {"first_message_index": 0, "session_data": {"ciphertext": "a\"}b", "mac": "m", "ephemeral": "e"}},
            "s\u00e9\"2" :{"first_message_index":12,"forwarded_count":1,"is_verified":false,"session_data":{}} ,
            "s3": {"x": [[], {}], "y": null}
        }, "after": true, "n": -1.5e3 } "#;
        for piece in [1, 2, 3, 7, 64, answer.len()] {
            let mut got: Vec<_> = split_in_pieces(answer, piece)
                .unwrap()
                .into_iter()
                .map(|e| (e.session_id, serde_json::from_slice::<serde_json::Value>(&e.value).unwrap()))
                .collect();
            got.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(got, whole(answer), "pieces of {piece} bytes");
        }
    }

    #[test]
    fn an_answer_without_sessions_or_with_none_has_no_entries() {
        assert_eq!(split_in_pieces(r#"{}"#, 1).unwrap(), vec![]);
        assert_eq!(split_in_pieces(r#"{"sessions":{}}"#, 3).unwrap(), vec![]);
    }

    #[test]
    fn a_cut_or_broken_answer_is_an_error() {
        for bad in [r#"{"sessions":{"s1":{"a":1}"#, r#"{"sessions":{"s1":{"a":1}}"#, r#"["sessions"]"#, r#"{"sessions":[]}"#, r#"{"sessions":{"s1" {}}}"#, r#"{} {}"#, r#"<html>"#] {
            assert!(split_in_pieces(bad, 4).is_err(), "{bad}");
        }
    }
}
