//! Input: CASE_DIR/pickles.jsonl written by the fixture writer (genuine matrix-sdk-crypto 0.6
//! `pickle()` output, one session per line, and the account pickle in account.json).
//! Output: CASE_DIR/store/matrix-sdk-crypto, a version-7 store as crypto-nodejs beta.6 laid it out:
//! the store cipher exported by genuine matrix-sdk-store-encryption 0.7 (MessagePack), values
//! sealed with its `encrypt_value`, keys hashed with its `hash_key` (room ‖ session).
//!
//! `--half-upgrade CASE_DIR`: what bot-sdk 0.6.6 leaves in an unencrypted 0.6.5 store whose
//! migration fails: its store cipher (exported by the genuine 0.7 code for the passphrase `""`, as
//! MessagePack) added to the default tree, and nothing else changed — the DB version and every
//! plaintext value stay as the 0.6 code wrote them.

use anyhow::{Context, Result};
use matrix_sdk_store_encryption::StoreCipher;

const TABLE: &str = "crypto-store-inbound-group-sessions";

fn main() -> Result<()> {
    let usage = "usage: fixture-writer-v7-cipher [--half-upgrade] CASE_DIR";
    let first = std::env::args().nth(1).context(usage)?;
    if first == "--half-upgrade" {
        let dir = std::path::PathBuf::from(std::env::args().nth(2).context(usage)?);
        return half_upgrade(&dir);
    }
    let dir = std::path::PathBuf::from(first);
    let passphrase = "";
    let db = sled::Config::new().path(dir.join("store").join("matrix-sdk-crypto")).open()?;
    let cipher = StoreCipher::new()?;
    db.insert(b"store_cipher\xff", cipher.export(passphrase)?)?;
    db.insert("store_version", &[7u8])?;
    let account: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("account.json"))?)?;
    db.open_tree("account")?.insert(b"account\xff", cipher.encrypt_value(&account)?)?;
    let tree = db.open_tree("inbound_group_sessions")?;
    for line in std::fs::read_to_string(dir.join("pickles.jsonl"))?.lines() {
        let pickle: serde_json::Value = serde_json::from_str(line)?;
        let room = pickle["room_id"].as_str().context("room_id")?;
        let signing: Vec<u8> = serde_json::from_value(pickle["pickle"]["signing_key"].clone())?;
        let session_id = base64_no_pad(&signing);
        let mut key = cipher.hash_key(TABLE, room.as_bytes()).to_vec();
        key.push(0xff);
        key.extend_from_slice(&cipher.hash_key(TABLE, session_id.as_bytes()));
        key.push(0xff);
        tree.insert(key, cipher.encrypt_value(&pickle)?)?;
    }
    for tree in ["room_settings", "direct_withheld_info", "no_olm_sent"] {
        db.open_tree(tree)?;
    }
    db.flush()?;
    std::fs::remove_file(dir.join("pickles.jsonl"))?;
    std::fs::remove_file(dir.join("account.json"))?;
    Ok(())
}

fn half_upgrade(dir: &std::path::Path) -> Result<()> {
    let db = sled::Config::new().path(dir.join("store").join("matrix-sdk-crypto")).open()?;
    anyhow::ensure!(db.get(b"store_cipher\xff")?.is_none(), "the store already has a store cipher");
    db.insert(b"store_cipher\xff", StoreCipher::new()?.export("")?)?;
    db.flush()?;
    Ok(())
}

fn base64_no_pad(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}
