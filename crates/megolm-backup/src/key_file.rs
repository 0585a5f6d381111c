//! Reading keys that already exist as files, for `upload --from`: `extracted-keys.json` (an object
//! whose `keys` array holds the keys), a bare JSON array of keys, or Element's encrypted
//! "MEGOLM SESSION DATA" export (one authenticated blob: the caller decrypts it with
//! `decrypt_export` and hands the plaintext here). Streamed element by element, so memory stays flat whatever the
//! size of the file; a malformed element is reported and the rest goes on.

use std::fmt;
use std::io::Read;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use zeroize::Zeroizing;

use crate::exported_key::ExportedRoomKey;

/// What one element of a key file turned out to be.
pub enum KeyFileItem {
    Key(ExportedRoomKey),
    /// Not a room key (`message` says why, without the element's content).
    Malformed {
        kind: &'static str,
        message: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("not a key file: {0}")]
    Json(String),
    #[error("stopped by the consumer")]
    Stopped,
}

const STOPPED: &str = "\u{0}stopped";
pub const EXPORT_HEADER: &str = "-----BEGIN MEGOLM SESSION DATA-----";

/// Calls `each(index, item)` for every element of the key array; `each` returns false to stop.
pub fn for_each_key(
    reader: impl Read,
    mut each: impl FnMut(u64, KeyFileItem) -> bool,
) -> Result<(), KeyFileError> {
    let mut de =
        serde_json::Deserializer::from_reader(std::io::BufReader::with_capacity(1 << 16, reader));
    let mut index = 0u64;
    let outcome = TopLevel {
        each: &mut each,
        index: &mut index,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    match outcome {
        Ok(()) => Ok(()),
        Err(e) if e.to_string().starts_with(STOPPED) => Err(KeyFileError::Stopped),
        Err(e) => Err(KeyFileError::Json(e.to_string())),
    }
}

fn classify(raw: Box<RawValue>) -> KeyFileItem {
    let text: Zeroizing<String> = Zeroizing::new(String::from(Box::<str>::from(raw)));
    match serde_json::from_str::<ExportedRoomKey>(&text) {
        Ok(key) => match key.validate() {
            Ok(()) => KeyFileItem::Key(key),
            Err(e) => KeyFileItem::Malformed {
                kind: if matches!(e, crate::KeyError::RoomId) {
                    "invalid_room_id"
                } else {
                    "invalid_key"
                },
                message: format!("session {} in {}: {e}", key.session_id, key.room_id),
            },
        },
        // serde's message names the field and the position, never the value.
        Err(e) if e.to_string().starts_with("missing field") => KeyFileItem::Malformed {
            kind: "missing_field",
            message: e.to_string(),
        },
        Err(e) => KeyFileItem::Malformed {
            kind: "invalid_json",
            message: format!(
                "not a room key: {}",
                e.to_string().split(" at line").next().unwrap_or("")
            ),
        },
    }
}

struct TopLevel<'a, F> {
    each: &'a mut F,
    index: &'a mut u64,
}

impl<'de, F: FnMut(u64, KeyFileItem) -> bool> DeserializeSeed<'de> for TopLevel<'_, F> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, F: FnMut(u64, KeyFileItem) -> bool> Visitor<'de> for TopLevel<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array of room keys, or an object with a `keys` array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(raw) = seq.next_element::<Box<RawValue>>()? {
            let i = *self.index;
            *self.index += 1;
            if !(self.each)(i, classify(raw)) {
                return Err(de::Error::custom(STOPPED));
            }
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut found = false;
        while let Some(field) = map.next_key::<String>()? {
            if field == "keys" && !found {
                found = true;
                map.next_value_seed(TopLevel {
                    each: &mut *self.each,
                    index: &mut *self.index,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        if found {
            Ok(())
        } else {
            Err(de::Error::custom("the object has no `keys` array"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_json(room: &str, signing: u8) -> String {
        let mut b = vec![1u8, 0, 0, 0, 5];
        b.extend_from_slice(&[7u8; 128]);
        b.extend_from_slice(&[signing; 32]);
        let sk = crate::b64(&b);
        let sid = crate::b64(&[signing; 32]);
        let k32 = crate::b64(&[3u8; 32]);
        format!(
            r#"{{"algorithm":"m.megolm.v1.aes-sha2","room_id":"{room}","sender_key":"{k32}","session_id":"{sid}","session_key":"{sk}","sender_claimed_keys":{{"ed25519":"{k32}"}},"forwarding_curve25519_key_chain":[]}}"#
        )
    }

    fn collect(text: &str) -> (Vec<String>, Vec<&'static str>) {
        let (mut keys, mut bad) = (Vec::new(), Vec::new());
        for_each_key(text.as_bytes(), |_, item| {
            match item {
                KeyFileItem::Key(k) => keys.push(k.room_id),
                KeyFileItem::Malformed { kind, .. } => bad.push(kind),
            }
            true
        })
        .unwrap();
        (keys, bad)
    }

    #[test]
    fn reads_extract_files_and_bare_arrays_and_reports_bad_elements() {
        let good = key_json("!a:x", 1);
        let wrong_room = key_json("a:x", 2);
        let file = format!(
            r#"{{"version":1,"keys":[{good},{wrong_room},{{"room_id":"!b:x"}},42],"total_keys":4}}"#
        );
        assert_eq!(
            collect(&file),
            (
                vec!["!a:x".to_owned()],
                vec!["invalid_room_id", "missing_field", "invalid_json"]
            )
        );
        assert_eq!(collect(&format!("[{good}]")).0, vec!["!a:x".to_owned()]);
        assert!(for_each_key(&b"{\"version\":1}"[..], |_, _| true).is_err());
        assert!(for_each_key(&b"[{}"[..], |_, _| true).is_err());
    }

    #[test]
    fn a_tampered_session_id_is_caught() {
        let k = key_json("!a:x", 1).replace(&crate::b64(&[1u8; 32]), &crate::b64(&[9u8; 32]));
        let (keys, bad) = collect(&format!("[{k}]"));
        assert!(
            keys.is_empty() && bad == vec!["invalid_key"],
            "{keys:?} {bad:?}"
        );
    }

    #[test]
    fn the_consumer_can_stop() {
        let text = format!("[{},{}]", key_json("!a:x", 1), key_json("!a:x", 2));
        let mut seen = 0;
        let r = for_each_key(text.as_bytes(), |_, _| {
            seen += 1;
            false
        });
        assert!(matches!(r, Err(KeyFileError::Stopped)) && seen == 1);
    }
}
