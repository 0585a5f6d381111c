//! What matrix-bot-sdk 0.8.0 does with a crypto folder at start, as a command for the CLI tests:
//! the genuine matrix-sdk-sqlite 0.9 `SqliteCryptoStore::open(DIR, Some(PASSPHRASE))`, then an
//! `OlmMachine` for the store's user and the device `bot-sdk.json` names. Prints one JSON line
//! (user, device, public identity keys, room key count) and exits 0, or prints the error the bot
//! would die with and exits 1. Read-only on an existing account (the machine adopts it as is).
//!
//!     cargo run --release -p sqlite-convert --example open_as_bot -- DIR PASSPHRASE
//!
//! `--no-passphrase` instead of PASSPHRASE passes `None`, as a custom bot passing `null` does.

use std::sync::Arc;

use matrix_sdk_common::ruma::OwnedDeviceId;
use matrix_sdk_crypto::store::CryptoStore;
use matrix_sdk_crypto::OlmMachine;
use matrix_sdk_sqlite::SqliteCryptoStore;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(passphrase)) = (args.next(), args.next()) else {
        eprintln!("usage: open_as_bot DIR PASSPHRASE");
        std::process::exit(2);
    };
    let passphrase = (passphrase != "--no-passphrase").then_some(passphrase);
    match open(&dir, passphrase.as_deref()).await {
        Ok(line) => println!("{line}"),
        Err(e) => {
            println!("{}", serde_json::json!({ "error": e }));
            std::process::exit(1);
        }
    }
}

async fn open(dir: &str, passphrase: Option<&str>) -> Result<serde_json::Value, String> {
    let bot_sdk: serde_json::Value = serde_json::from_slice(
        &std::fs::read(std::path::Path::new(dir).join("bot-sdk.json")).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let device: OwnedDeviceId = bot_sdk["deviceId"]
        .as_str()
        .ok_or("bot-sdk.json names no deviceId")?
        .into();
    let store = Arc::new(
        SqliteCryptoStore::open(dir, passphrase)
            .await
            .map_err(|e| e.to_string())?,
    );
    let account = store
        .load_account()
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the store holds no account")?;
    let user = account.user_id().to_owned();
    drop(account);
    let room_keys = store
        .inbound_group_session_counts(None)
        .await
        .map_err(|e| e.to_string())?
        .total;
    let machine = OlmMachine::with_store(&user, &device, store, None)
        .await
        .map_err(|e| e.to_string())?;
    let keys = machine.identity_keys();
    Ok(serde_json::json!({
        "user_id": machine.user_id(),
        "device_id": machine.device_id(),
        "curve25519": keys.curve25519.to_base64(),
        "ed25519": keys.ed25519.to_base64(),
        "room_keys": room_keys,
    }))
}
