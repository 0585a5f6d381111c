//! Damage done to genuine stores after the fact, the way real stores break: each damaged value is
//! re-sealed with the store's own cipher (so only the intended layer is broken).

use std::path::Path;

use anyhow::{Context, Result};
use base64::Engine;
use matrix_sdk_store_encryption::StoreCipher;
use rand::RngCore;
use serde_json::{json, Value};

const KINDS_ENCRYPTED: &[&str] = &["room_id_sigil", "truncated_json", "flipped_ciphertext_bit", "random_bytes", "missing_field", "bad_pickle"];
const KINDS_PLAIN: &[&str] = &["room_id_sigil", "truncated_json", "random_bytes", "missing_field", "bad_pickle"];

pub fn damage_entries(sled_dir: &Path, passphrase: Option<&str>) -> Result<Vec<Value>> {
    let db = sled::Config::new().path(sled_dir).open().context("open the store with sled")?;
    let cipher = match passphrase {
        Some(p) => Some(StoreCipher::import(p, &db.get(b"store_cipher\xff")?.context("store cipher")?)?),
        None => None,
    };
    let tree = db.open_tree("inbound_group_sessions")?;
    let kinds = if cipher.is_some() { KINDS_ENCRYPTED } else { KINDS_PLAIN };
    let entries: Vec<_> = tree.iter().collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    // every fourth entry, so damage sits between good entries
    for (kind, (key, value)) in kinds.iter().zip(entries.iter().step_by(4)) {
        let pickle: Value = match &cipher {
            Some(c) => c.decrypt_value(value)?,
            None => serde_json::from_slice(value)?,
        };
        let signing_key: Vec<u8> = serde_json::from_value(pickle["pickle"]["signing_key"].clone())?;
        let session_id = base64::engine::general_purpose::STANDARD_NO_PAD.encode(signing_key);
        let room_id = pickle["room_id"].as_str().unwrap_or_default().to_owned();
        let seal = |v: &Value| -> Result<Vec<u8>> {
            Ok(match &cipher {
                Some(c) => c.encrypt_value(v)?,
                None => serde_json::to_vec(v)?,
            })
        };
        let new_value: Vec<u8> = match *kind {
            "room_id_sigil" => {
                let mut p = pickle.clone();
                p["room_id"] = json!(room_id.trim_start_matches('!'));
                seal(&p)?
            }
            "truncated_json" => {
                let bytes = serde_json::to_vec(&pickle)?;
                let cut = bytes[..bytes.len() / 2].to_vec();
                match &cipher {
                    Some(c) => serde_json::to_vec(&c.encrypt_value_data(cut)?)?,
                    None => cut,
                }
            }
            "flipped_ciphertext_bit" => {
                let mut raw: Value = serde_json::from_slice(value)?;
                let b = raw["ciphertext"][10].as_u64().unwrap();
                raw["ciphertext"][10] = json!(b ^ 0x04);
                serde_json::to_vec(&raw)?
            }
            "random_bytes" => {
                let mut bytes = vec![0u8; 200];
                rand::thread_rng().fill_bytes(&mut bytes);
                bytes
            }
            "missing_field" => {
                let mut p = pickle.clone();
                p.as_object_mut().unwrap().remove("sender_key");
                seal(&p)?
            }
            "bad_pickle" => {
                let mut p = pickle.clone();
                p["pickle"]["initial_ratchet"]["inner"] = json!([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
                seal(&p)?
            }
            _ => unreachable!(),
        };
        tree.insert(key, new_value)?;
        out.push(json!({ "sled_key_hex": hex::encode(key), "damage": kind, "room_id": room_id, "session_id": session_id }));
    }
    db.flush()?;
    Ok(out)
}

/// A pre-0.6 store: DB version 3 and libolm pickles (base64 strings). No genuine crate writes this
/// any more; it exists to check that the reader refuses it clearly.
pub fn legacy_store(case: &str, dir: &Path) -> Result<()> {
    let sled_dir = dir.join("store").join("matrix-sdk-crypto");
    let db = sled::Config::new().path(&sled_dir).open()?;
    db.insert("store_version", &[3u8])?;
    db.open_tree("account")?.insert(b"account\xff", br#"{"user_id":"@bot:example.org","device_id":"BOTDEVICE","pickle":"bGlib2xtIGFjY291bnQ","shared":true,"uploaded_signed_key_count":50}"#.as_slice())?;
    let tree = db.open_tree("inbound_group_sessions")?;
    let mut damaged = Vec::new();
    for i in 0..3u8 {
        let key = format!("!legacy:example.org\u{ff}sender{i}\u{ff}session{i}\u{ff}").into_bytes();
        let value = json!({"pickle": "bGlib2xtIHBpY2tsZSBvZiBhIGdyb3VwIHNlc3Npb24", "sender_key": "c2VuZGVy", "signing_key": {"ed25519": "c2lnbmluZw"}, "room_id": "!legacy:example.org", "forwarding_chains": [], "imported": false});
        tree.insert(&key, serde_json::to_vec(&value)?)?;
        damaged.push(json!({"sled_key_hex": hex::encode(&key), "damage": "legacy_pickle", "room_id": "!legacy:example.org", "session_id": format!("session{i}")}));
    }
    db.flush()?;
    let expected = json!({
        "case": case, "passphrase": null, "store_version": 3, "has_cipher": false, "cipher_format": null,
        "user_id": crate::write::BOT_USER, "device_id": crate::write::BOT_DEVICE, "identity_keys": null,
        "keys": [], "damaged": damaged, "events": [], "olm": null,
    });
    std::fs::write(dir.join("expected.json"), serde_json::to_vec_pretty(&expected)?)?;
    Ok(())
}
