//! `inspect` on every committed fixture against what the genuine code says it wrote (expected.json),
//! and its promises: it never writes, never holds the bot's lock, and still says what a store is
//! when the passphrase does not open it.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sled_store::inspect::{inspect, Generation, ValueKind};
use sled_store::StoreLocation;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test/fixtures")
}

fn expected(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join(name).join("expected.json")).unwrap()).unwrap()
}

/// Every file under `dir` with its bytes: "nothing written, nothing created".
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.insert(e.path(), std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

#[test]
fn every_fixture_is_summarized_as_the_genuine_code_wrote_it() {
    let mut seen = 0;
    for entry in std::fs::read_dir(fixtures()).unwrap().flatten() {
        let name = entry.file_name().into_string().unwrap();
        if name == "legacy-libolm" || !entry.path().join("expected.json").exists() {
            continue;
        }
        let want = expected(&name);
        let store = entry.path().join("store");
        let before = files(&store);
        let (summary, _) = inspect(&StoreLocation::new(&store), want["passphrase"].as_str().unwrap_or("")).unwrap();
        assert_eq!(files(&store), before, "{name}: inspect wrote nothing");

        assert_eq!(summary.store_version.map(u64::from), want["store_version"].as_u64(), "{name}");
        assert_eq!(summary.cipher_format.map(|c| c.as_str()), want["cipher_format"].as_str(), "{name}");
        assert_eq!(summary.passphrase_opens, want["has_cipher"].as_bool().unwrap().then_some(true), "{name}");
        let keys = want["keys"].as_array().unwrap().len() as u64;
        let damaged = want["damaged"].as_array().unwrap().len() as u64;
        let room_keys = summary.tree("inbound_group_sessions").unwrap();
        assert_eq!((room_keys.entries - room_keys.damaged, room_keys.damaged), (keys, damaged), "{name}");
        assert_eq!(summary.damaged, damaged, "{name}: no damage found where the genuine code wrote none");
        assert_eq!(summary.damaged_entries.len() as u64, damaged.min(20), "{name}");
        assert_eq!(summary.account_device_id.as_deref(), want["device_id"].as_str(), "{name}");
        assert_eq!(summary.account_user_id.as_deref(), want["user_id"].as_str(), "{name}");
        assert_eq!(summary.bot_sdk_device_id.as_deref(), want["device_id"].as_str(), "{name}");
        if let Some(olm) = want["olm"].as_object() {
            assert_eq!(summary.entries("session"), olm["olm_sessions"].as_u64().unwrap(), "{name}");
            assert_eq!(summary.entries("tracked_users"), olm["tracked_users"].as_array().unwrap().len() as u64, "{name}");
            // Its own device sits beside the peers'.
            assert_eq!(summary.entries("devices"), olm["devices"].as_u64().unwrap() + 1, "{name}");
        }
        let (values, generation) = match name.as_str() {
            "plain" | "damaged-plain" => (ValueKind::Plaintext, Generation::BotSdk060To062),
            "mixed-upgrade" => (ValueKind::Mixed, Generation::Sled02CipherAdded),
            "msgpack-cipher" => (ValueKind::Encrypted, Generation::BotSdk066To071),
            "half-upgraded" => (ValueKind::Plaintext, Generation::HalfUpgraded),
            _ => (ValueKind::Encrypted, Generation::Sled02WithPassphrase),
        };
        assert_eq!((summary.value_kind, summary.generation), (values, generation), "{name}");
        assert_eq!(summary.sled_format_version, "0.34");
        assert!(summary.live_bytes > 0 && summary.live_bytes < summary.disk_bytes, "{name}: {} of {}", summary.live_bytes, summary.disk_bytes);
        assert!(!summary.bot_holds_lock);
        seen += 1;
    }
    assert!(seen >= 9, "only {seen} fixtures");
}

#[test]
fn a_wrong_passphrase_still_tells_the_layout_and_a_running_bot_is_not_kept_out() {
    let store = fixtures().join("msgpack-cipher").join("store");
    let (summary, opened) = inspect(&StoreLocation::new(&store), "not the passphrase").unwrap();
    assert!(opened.is_none());
    assert_eq!(summary.passphrase_opens, Some(false));
    assert_eq!(summary.store_version, Some(7));
    assert_eq!(summary.cipher_format.map(|c| c.as_str()), Some("msgpack"));
    assert_eq!(summary.value_kind, ValueKind::Unknown);
    assert!(summary.trees.is_empty());

    // The bot holds Sled's exclusive lock: inspect says so and reads anyway, taking no lock.
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("store");
    assert!(std::process::Command::new("cp").arg("-a").arg(fixtures().join("plain").join("store")).arg(&copy).status().unwrap().success());
    let bot = std::fs::OpenOptions::new().read(true).write(true).open(copy.join("matrix-sdk-crypto").join("db")).unwrap();
    assert_eq!(unsafe { libc::flock(bot.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0);
    let (summary, _) = inspect(&StoreLocation::new(&copy), "").unwrap();
    assert!(summary.bot_holds_lock);
    assert_eq!(summary.entries("inbound_group_sessions"), 22);
    drop(bot);

    // And while inspect has the store open, the bot can take its lock.
    let (_, opened) = inspect(&StoreLocation::new(&copy), "").unwrap();
    let reopened = std::fs::OpenOptions::new().read(true).write(true).open(copy.join("matrix-sdk-crypto").join("db")).unwrap();
    assert_eq!(unsafe { libc::flock(reopened.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0, "inspect holds no lock");
    drop(opened);
}

#[test]
fn a_pre_0_6_store_is_refused_with_its_code() {
    match inspect(&StoreLocation::new(fixtures().join("legacy-libolm").join("store")), "") {
        Err(e) => assert_eq!(e.code(), "LEGACY_STORE"),
        Ok(_) => panic!("a pre-0.6 store was summarized"),
    }
}
