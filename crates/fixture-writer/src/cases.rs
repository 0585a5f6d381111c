//! The fixture cases. Each writes `store/` (a bot's crypto store folder) and `expected.json`.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Result};
use serde_json::{json, Value};

use matrix_sdk_crypto::store::CryptoStore;

use crate::damage;
use crate::exchange;
use crate::write::*;
use crate::Args;

struct Plan {
    passphrase: Option<&'static str>,
    sessions: usize,
    rooms: usize,
    /// Events recorded per session, for the first `event_sessions` sessions.
    events_per_session: usize,
    event_sessions: usize,
    /// Run the Olm exchange (`exchange.rs`) over the bot's store and record it in `olm`.
    olm: bool,
    /// Also store a backup version with its recovery key and a private cross-signing identity, as
    /// a bot that enabled both holds them; recorded in `backup_and_cross_signing`.
    secrets: bool,
    /// What years of running add around the sessions (`long-lived`): see [`LongLived`].
    long_lived: bool,
    /// Prove the Olm exchange on a copy of the store (`--no-copy-check` skips it).
    copy_check: bool,
}

/// What a long-running bot's store holds besides its sessions, written through the genuine store
/// as the bot writes it:
/// - one Olm message hash per session: every room key reaches the bot in an Olm-encrypted
///   `m.room_key`, and the 0.6 machine keeps the hash of every Olm message it decrypted (to refuse
///   replays) for ever, in the `olm_hashes` tree;
/// - every `RESAVE_EVERY`th session saved once more, a chunk later (a bot saves a session again when
///   it learns more about it), so Sled's log holds dead versions between live ones.
struct LongLived;

impl LongLived {
    const RESAVE_EVERY: usize = 5;

    /// A hash as the 0.6 machine records it: the sender's Curve25519 key and the SHA-256 of the
    /// message, both unpadded base64 (32 random bytes are as good as a digest here).
    fn message_hash(peer: &matrix_sdk_crypto::olm::ReadOnlyAccount) -> matrix_sdk_crypto::olm::OlmMessageHash {
        use base64::Engine;
        let digest: [u8; 32] = rand::random();
        matrix_sdk_crypto::olm::OlmMessageHash {
            sender_key: peer.identity_keys().curve25519.to_base64(),
            hash: base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest),
        }
    }
}

fn origin_for(i: usize) -> Origin {
    match (i % 7, i % 11) {
        (3, _) => Origin::ImportedAt(2),
        (_, 5) => Origin::ImportedAt(0),
        _ => Origin::Direct,
    }
}

fn header(case: &str, passphrase: Option<&str>, store_version: u8) -> Value {
    json!({
        "case": case,
        "passphrase": passphrase,
        "store_version": store_version,
        "has_cipher": passphrase.is_some(),
        "cipher_format": passphrase.map(|_| "json"),
        "user_id": BOT_USER,
        "device_id": BOT_DEVICE,
        "identity_keys": null,
        "damaged": [],
        "events": [],
        "olm": null,
    })
}

pub async fn write_case(case: &str, dir: &Path, args: &Args) -> Result<()> {
    let store_dir = dir.join("store");
    std::fs::create_dir_all(&store_dir)?;
    write_bot_sdk_json(&store_dir)?;
    let small = |passphrase, sessions, olm| Plan { passphrase, sessions, rooms: 3, events_per_session: 2, event_sessions: usize::MAX, olm, secrets: false, long_lived: false, copy_check: true };
    match case {
        "plain" => standard(case, dir, small(None, 20, true)).await,
        "empty-passphrase" => standard(case, dir, small(Some(""), 20, true)).await,
        "passphrase" => standard(case, dir, Plan { secrets: true, ..small(Some("correct horse battery staple"), 10, true) }).await,
        "empty" => standard(case, dir, small(Some(""), 0, false)).await,
        "many" => {
            let plan = Plan { passphrase: Some(""), sessions: args.sessions, rooms: args.rooms, events_per_session: 1, event_sessions: 50, olm: true, secrets: false, long_lived: false, copy_check: args.copy_check };
            standard(case, dir, plan).await
        }
        "long-lived" => {
            let plan = Plan { passphrase: Some(""), sessions: args.sessions, rooms: args.rooms, events_per_session: 1, event_sessions: 50, olm: true, secrets: false, long_lived: true, copy_check: args.copy_check };
            standard(case, dir, plan).await
        }
        "bloated" => bloated(case, dir, args).await,
        "mixed-upgrade" => mixed_upgrade(case, dir).await,
        "damaged" => damaged(case, dir, Some("")).await,
        "damaged-plain" => damaged(case, dir, None).await,
        "legacy-libolm" => damage::legacy_store(case, dir),
        "msgpack-cipher" => msgpack_cipher(case, dir).await,
        "half-upgraded" => half_upgraded(case, dir).await,
        other => bail!("unknown case {other}"),
    }
}

/// Sessions from three peers over `rooms` rooms, saved in chunks; keys streamed to expected.json.
/// With `plan.olm`, then the Olm exchange over the same store (its keys and events added).
async fn standard(case: &str, dir: &Path, plan: Plan) -> Result<()> {
    let store_dir = dir.join("store");
    let store = Arc::new(open_store(&store_dir, plan.passphrase)?);
    let bot = bot_account();
    let identity = bot.identity_keys();
    save(&store, Some(bot), vec![]).await?;
    let secrets = if plan.secrets { save_backup_and_cross_signing(&store).await? } else { Value::Null };

    let keys_path = dir.join(".keys.jsonl");
    let mut keys_out = std::io::BufWriter::new(std::fs::File::create(&keys_path)?);
    let mut events = Vec::new();
    let peers = peers();
    let rooms = room_ids(plan.rooms.max(1));
    let mut done = 0;
    // long_lived: the previous chunk's sessions to save again, and this chunk's message hashes.
    let mut resave = Vec::new();
    while done < plan.sessions {
        let n = (plan.sessions - done).min(5000);
        let mut chunk = Vec::with_capacity(n);
        let mut hashes = Vec::new();
        for i in done..done + n {
            let n_events = if i < plan.event_sessions { plan.events_per_session } else { 0 };
            let peer = &peers[i % peers.len()];
            let made = make_session(peer, &rooms[i % rooms.len()], origin_for(i), n_events, i).await?;
            serde_json::to_writer(&mut keys_out, &expected_key(&made.inbound).await)?;
            keys_out.write_all(b"\n")?;
            events.extend(made.events);
            if plan.long_lived {
                hashes.push(LongLived::message_hash(peer));
            }
            chunk.push(made.inbound);
        }
        let again: Vec<_> = if plan.long_lived { chunk.iter().step_by(LongLived::RESAVE_EVERY).cloned().collect() } else { vec![] };
        save(&store, None, chunk).await?;
        if plan.long_lived {
            let inbound_group_sessions = std::mem::replace(&mut resave, again);
            store.save_changes(matrix_sdk_crypto::store::Changes { message_hashes: hashes, inbound_group_sessions, ..Default::default() }).await?;
        }
        done += n;
    }
    if !resave.is_empty() {
        save(&store, None, resave).await?;
    }
    let olm = if plan.olm {
        let recorded = exchange::run(store, &store_dir, plan.passphrase, &identity, plan.copy_check).await?;
        for key in &recorded.keys {
            serde_json::to_writer(&mut keys_out, key)?;
            keys_out.write_all(b"\n")?;
        }
        events.extend(recorded.events);
        recorded.olm
    } else {
        drop(store);
        Value::Null
    };
    keys_out.flush()?;
    drop(keys_out);

    let mut h = header(case, plan.passphrase, 5);
    h["identity_keys"] = json!({"curve25519": identity.curve25519.to_base64(), "ed25519": identity.ed25519.to_base64()});
    h["events"] = Value::Array(events);
    h["olm"] = olm;
    h["backup_and_cross_signing"] = secrets;
    write_expected(dir, h, &keys_path)
}

/// A backup version with its recovery key, and a private cross-signing identity made as a bot makes
/// it (its `OlmMachine`'s `bootstrap_cross_signing`, which also stores the public own identity),
/// all saved through the genuine store.
async fn save_backup_and_cross_signing(store: &Arc<matrix_sdk_sled::SledCryptoStore>) -> Result<Value> {
    use matrix_sdk_crypto::store::{Changes, CryptoStore, RecoveryKey};
    let user: ruma::OwnedUserId = BOT_USER.try_into()?;
    let device: ruma::OwnedDeviceId = BOT_DEVICE.into();
    let machine = matrix_sdk_crypto::OlmMachine::with_store(&user, &device, store.clone() as Arc<dyn CryptoStore>).await?;
    machine.bootstrap_cross_signing(true).await?;
    let status = machine.cross_signing_status().await;
    anyhow::ensure!(status.has_master && status.has_self_signing && status.has_user_signing, "bootstrap made no complete identity");
    drop(machine);
    let key = RecoveryKey::new()?;
    let recovery_key = key.to_base64();
    let backup_version = "7".to_owned();
    store
        .save_changes(Changes { backup_version: Some(backup_version.clone()), recovery_key: Some(key), ..Default::default() })
        .await?;
    Ok(json!({ "backup_version": backup_version, "recovery_key": recovery_key, "cross_signing": true }))
}

/// A store that years of running made big: every session written `rewrites` more times through
/// the genuine store (as a bot re-saves sessions), so Sled's log holds many dead versions of each
/// value and the store is far bigger on disk than its live data.
async fn bloated(case: &str, dir: &Path, args: &Args) -> Result<()> {
    standard(case, dir, Plan { passphrase: Some(""), sessions: args.sessions, rooms: args.rooms, events_per_session: 1, event_sessions: 10, olm: false, secrets: false, long_lived: false, copy_check: true }).await?;
    let store_dir = dir.join("store");
    let store = open_store(&store_dir, Some(""))?;
    let sessions = store.get_inbound_group_sessions().await?;
    for _ in 0..args.rewrites {
        save(&store, None, sessions.clone()).await?;
    }
    Ok(())
}

/// bot-sdk 0.6.5 → 0.6.6: sessions written without a passphrase, then the store reopened with `""`
/// (which creates the store cipher) and more sessions added: plaintext and encrypted values mixed.
async fn mixed_upgrade(case: &str, dir: &Path) -> Result<()> {
    let store_dir = dir.join("store");
    let peers = peers();
    let rooms = room_ids(2);
    let keys_path = dir.join(".keys.jsonl");
    let mut keys_out = std::io::BufWriter::new(std::fs::File::create(&keys_path)?);
    let mut events = Vec::new();
    let bot = bot_account();
    let identity = bot.identity_keys();
    let mut bot = Some(bot);
    for (phase, passphrase, range) in [(0, None, 0..8), (1, Some(""), 8..12)] {
        let store = open_store(&store_dir, passphrase)?;
        let mut chunk = Vec::new();
        for i in range {
            let made = make_session(&peers[i % 3], &rooms[i % 2], origin_for(i), 1, i).await?;
            serde_json::to_writer(&mut keys_out, &expected_key(&made.inbound).await)?;
            keys_out.write_all(b"\n")?;
            events.extend(made.events);
            chunk.push(made.inbound);
        }
        save(&store, if phase == 0 { bot.take() } else { None }, chunk).await?;
    }
    keys_out.flush()?;
    drop(keys_out);
    let mut h = header(case, Some(""), 5);
    h["identity_keys"] = json!({"curve25519": identity.curve25519.to_base64(), "ed25519": identity.ed25519.to_base64()});
    h["events"] = Value::Array(events);
    write_expected(dir, h, &keys_path)
}

async fn damaged(case: &str, dir: &Path, passphrase: Option<&'static str>) -> Result<()> {
    standard(case, dir, Plan { passphrase, sessions: 30, rooms: 3, events_per_session: 1, event_sessions: usize::MAX, olm: false, secrets: false, long_lived: false, copy_check: true }).await?;
    let damaged = damage::damage_entries(&dir.join("store").join("matrix-sdk-crypto"), passphrase)?;
    let expected_path = dir.join("expected.json");
    let mut expected: Value = serde_json::from_slice(&std::fs::read(&expected_path)?)?;
    let gone: std::collections::HashSet<String> = damaged.iter().map(|d| d["session_id"].as_str().unwrap().to_owned()).collect();
    let keys = expected["keys"].as_array_mut().unwrap();
    keys.retain(|k| !gone.contains(k["session_id"].as_str().unwrap()));
    let events = expected["events"].as_array_mut().unwrap();
    events.retain(|e| !gone.contains(e["session_id"].as_str().unwrap()));
    expected["damaged"] = Value::Array(damaged);
    std::fs::write(&expected_path, serde_json::to_vec_pretty(&expected)?)?;
    Ok(())
}

/// expected.json: the header, then the keys array streamed from the JSON-lines file.
fn write_expected(dir: &Path, header: Value, keys_jsonl: &Path) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join("expected.json"))?);
    let head = serde_json::to_string_pretty(&header)?;
    out.write_all(head[..head.len() - 2].as_bytes())?; // drop the closing "\n}"
    out.write_all(b",\n  \"keys\": [\n")?;
    // Streamed: a store of millions of sessions has gigabytes of keys.
    let lines = std::io::BufRead::lines(std::io::BufReader::new(std::fs::File::open(keys_jsonl)?));
    for (i, line) in lines.enumerate() {
        let line = line?;
        if i > 0 {
            out.write_all(b",\n")?;
        }
        out.write_all(b"    ")?;
        out.write_all(line.as_bytes())?;
    }
    out.write_all(b"\n  ]\n}\n")?;
    out.flush()?;
    std::fs::remove_file(keys_jsonl)?;
    Ok(())
}

/// bot-sdk 0.6.5 → 0.6.6 gone wrong: an unencrypted store (DB version 5, values in the clear,
/// written by the genuine 0.6 crates) to which 0.6.6 added its MessagePack store cipher before its
/// migration failed on the first plaintext value (`Json("missing field version")`). The v7-cipher
/// program adds that cipher with the genuine matrix-sdk-store-encryption 0.7; nothing else changes.
async fn half_upgraded(case: &str, dir: &Path) -> Result<()> {
    standard(case, dir, Plan { passphrase: None, sessions: 6, rooms: 2, events_per_session: 1, event_sessions: 0, olm: false, secrets: false, long_lived: false, copy_check: true }).await?;
    run_v7_cipher(&["--half-upgrade"], dir)?;
    let expected_path = dir.join("expected.json");
    let mut expected: Value = serde_json::from_slice(&std::fs::read(&expected_path)?)?;
    expected["passphrase"] = json!("");
    expected["has_cipher"] = json!(true);
    expected["cipher_format"] = json!("msgpack");
    std::fs::write(&expected_path, serde_json::to_vec_pretty(&expected)?)?;
    Ok(())
}

/// Runs the v7-cipher program (its own workspace: the 0.7 store encryption) on a case folder.
fn run_v7_cipher(args: &[&str], dir: &Path) -> Result<()> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("v7-cipher").join("Cargo.toml");
    let status = std::process::Command::new("cargo")
        .args(["run", "--release", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .arg("--")
        .args(args)
        .arg(dir)
        .status()?;
    if !status.success() {
        bail!("the v7-cipher writer failed");
    }
    Ok(())
}

/// bot-sdk 0.6.6–0.7.1 (crypto-nodejs beta.6, DB version 7, MessagePack store cipher). The sessions
/// and their pickles come from the genuine 0.6 crates here; the store itself is laid out by the
/// v7-cipher program on the genuine matrix-sdk-store-encryption 0.7 (which exports MessagePack).
async fn msgpack_cipher(case: &str, dir: &Path) -> Result<()> {
    let peers = peers();
    let rooms = room_ids(2);
    let bot = bot_account();
    let identity = bot.identity_keys();
    std::fs::write(dir.join("account.json"), serde_json::to_vec(&bot.pickle().await)?)?;
    let keys_path = dir.join(".keys.jsonl");
    let mut keys_out = std::io::BufWriter::new(std::fs::File::create(&keys_path)?);
    let mut pickles = std::io::BufWriter::new(std::fs::File::create(dir.join("pickles.jsonl"))?);
    let mut events = Vec::new();
    for i in 0..10 {
        let made = make_session(&peers[i % 3], &rooms[i % 2], origin_for(i), 1, i).await?;
        serde_json::to_writer(&mut keys_out, &expected_key(&made.inbound).await)?;
        keys_out.write_all(b"\n")?;
        serde_json::to_writer(&mut pickles, &made.inbound.pickle().await)?;
        pickles.write_all(b"\n")?;
        events.extend(made.events);
    }
    keys_out.flush()?;
    pickles.flush()?;
    drop((keys_out, pickles));
    run_v7_cipher(&[], dir)?;
    let mut h = header(case, Some(""), 7);
    h["cipher_format"] = json!("msgpack");
    h["identity_keys"] = json!({"curve25519": identity.curve25519.to_base64(), "ed25519": identity.ed25519.to_base64()});
    h["events"] = Value::Array(events);
    write_expected(dir, h, &keys_path)
}
