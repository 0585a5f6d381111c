//! A room key in the interchange format every tool speaks: the entries of Element's key export,
//! of `extracted-keys.json`, and of whatever `upload --from` is given. Serialized natively so
//! that plaintext session keys never become JavaScript strings, which cannot be wiped.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use crate::backup_data::{
    append_json_string, first_message_index_of, validate_exported_key, BackedUpRoomKey, JsonOut,
    KeyError,
};

/// Field order as in Element's export.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct ExportedRoomKey {
    pub algorithm: String,
    pub room_id: String,
    pub sender_key: String,
    pub session_id: String,
    pub session_key: Zeroizing<String>,
    pub sender_claimed_keys: BTreeMap<String, String>,
    #[serde(default)]
    pub forwarding_curve25519_key_chain: Vec<String>,
}

impl ExportedRoomKey {
    /// The checks every entry passes before it leaves (true session ID, well-formed keys).
    pub fn validate(&self) -> Result<(), KeyError> {
        validate_exported_key(
            &self.room_id,
            &self.session_id,
            &self.sender_key,
            &self.session_key,
            &self.sender_claimed_keys,
        )
    }

    pub fn first_message_index(&self) -> Result<u32, KeyError> {
        first_message_index_of(&self.session_key)
    }

    /// The JSON of [`ExportedRoomKey::backed_up`] (the plaintext of a backup entry), serialized
    /// from borrowed fields instead of a clone of every field, into a wiped buffer.
    pub fn backed_up_json(&self) -> Zeroizing<Vec<u8>> {
        // Written directly, in `BackedUpRoomKey`'s field order and as serde_json writes it, into
        // a buffer sized so that it never moves: a reallocation would leave a copy unwiped.
        let fields = [&self.algorithm, &self.sender_key, &*self.session_key]
            .iter()
            .map(|f| f.len())
            .chain(self.sender_claimed_keys.iter().map(|(k, v)| k.len() + v.len() + 1))
            .chain(self.forwarding_curve25519_key_chain.iter().map(|k| k.len() + 1))
            .sum::<usize>();
        // A character escapes to at most six (`\u001f`).
        let mut out = Zeroizing::new(Vec::with_capacity((6 * fields + 256).max(4096)));
        let json = &mut *out;
        json.push_str("{\"algorithm\":");
        append_json_string(json, &self.algorithm);
        json.push_str(",\"sender_key\":");
        append_json_string(json, &self.sender_key);
        json.push_str(",\"session_key\":");
        append_json_string(json, &self.session_key);
        json.push_str(",\"sender_claimed_keys\":{");
        for (i, (algorithm, key)) in self.sender_claimed_keys.iter().enumerate() {
            if i > 0 {
                json.push_str(",");
            }
            append_json_string(json, algorithm);
            json.push_str(":");
            append_json_string(json, key);
        }
        json.push_str("},\"forwarding_curve25519_key_chain\":[");
        for (i, key) in self.forwarding_curve25519_key_chain.iter().enumerate() {
            if i > 0 {
                json.push_str(",");
            }
            append_json_string(json, key);
        }
        json.push_str("]}");
        out
    }

    /// The plaintext that goes inside an encrypted backup entry.
    pub fn backed_up(&self) -> BackedUpRoomKey {
        BackedUpRoomKey {
            algorithm: self.algorithm.clone(),
            sender_key: self.sender_key.clone(),
            session_key: self.session_key.clone(),
            sender_claimed_keys: self.sender_claimed_keys.clone(),
            forwarding_curve25519_key_chain: self.forwarding_curve25519_key_chain.clone(),
        }
    }
}

/// Keys as JSON array elements (`{..},\n{..}`, no brackets), ready to be appended to a file.
/// Growing a buffer by reallocation would leave copies of the keys in freed memory, so each key is
/// serialized alone into a wiped buffer and the result allocated once at its final size.
pub fn to_json_elements<'a>(
    keys: impl IntoIterator<Item = &'a ExportedRoomKey>,
) -> Zeroizing<Vec<u8>> {
    let parts: Vec<Zeroizing<Vec<u8>>> = keys.into_iter().map(crate::to_json_wiped).collect();
    let len = parts.iter().map(|p| p.len()).sum::<usize>() + 2 * parts.len().saturating_sub(1);
    let mut out = Zeroizing::new(Vec::with_capacity(len));
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b",\n");
        }
        out.extend_from_slice(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_backed_up_json_is_the_owned_one() {
        let claimed = [("ed25519".to_owned(), "e".to_owned()), ("x".to_owned(), "y".to_owned())];
        let odd = "\u{1}\\\"é\u{7f}\n".repeat(700);
        for (chain, claimed, sender_key) in [
            (vec![], claimed.clone().into(), "sk"),
            (vec!["c1".to_owned(), "c\"2".to_owned()], claimed.into(), "s/k+"),
            (vec![odd.clone()], BTreeMap::new(), odd.as_str()),
        ] {
            let key = ExportedRoomKey {
                algorithm: "m.megolm.v1.aes-sha2".into(),
                room_id: "!r:s".into(),
                sender_key: sender_key.into(),
                session_id: "id".into(),
                session_key: Zeroizing::new("AQAA/+".into()),
                sender_claimed_keys: claimed,
                forwarding_curve25519_key_chain: chain,
            };
            assert_eq!(&*key.backed_up_json(), &*crate::to_json_wiped(&key.backed_up()));
        }
    }
}
