//! A room key in the interchange format every tool speaks: the entries of Element's key export,
//! of `extracted-keys.json`, and of whatever `upload --from` is given. Serialized natively so
//! that plaintext session keys never become JavaScript strings, which cannot be wiped.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use crate::backup_data::{
    first_message_index_of, validate_exported_key, BackedUpRoomKey, KeyError,
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
        /// Same fields, same order, same serialization as `BackedUpRoomKey`.
        #[derive(serde::Serialize)]
        struct BackedUpRef<'a> {
            algorithm: &'a str,
            sender_key: &'a str,
            session_key: &'a str,
            sender_claimed_keys: &'a BTreeMap<String, String>,
            forwarding_curve25519_key_chain: &'a [String],
        }
        crate::to_json_wiped(&BackedUpRef {
            algorithm: &self.algorithm,
            sender_key: &self.sender_key,
            session_key: &self.session_key,
            sender_claimed_keys: &self.sender_claimed_keys,
            forwarding_curve25519_key_chain: &self.forwarding_curve25519_key_chain,
        })
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
        for chain in [vec![], vec!["c1".to_owned(), "c\"2".to_owned()]] {
            let key = ExportedRoomKey {
                algorithm: "m.megolm.v1.aes-sha2".into(),
                room_id: "!r:s".into(),
                sender_key: "sk".into(),
                session_id: "id".into(),
                session_key: Zeroizing::new("AQAA/+".into()),
                sender_claimed_keys: [("ed25519".to_owned(), "e".to_owned()), ("x".to_owned(), "y".to_owned())].into(),
                forwarding_curve25519_key_chain: chain,
            };
            assert_eq!(&*key.backed_up_json(), &*crate::to_json_wiped(&key.backed_up()));
        }
    }
}
