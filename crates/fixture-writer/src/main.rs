//! Writes genuine matrix-bot-sdk 0.6 Sled crypto stores with the crates that bot-sdk shipped
//! (matrix-sdk-crypto 0.6.0, matrix-sdk-sled 0.2.0, matrix-sdk-store-encryption 0.2.0) and, beside
//! each store, what that code says it wrote: `InboundGroupSession::export()` of every session and
//! real Megolm events encrypted by the paired outbound sessions. The damaged cases are genuine
//! stores edited afterwards with the store's own cipher. `plain`, `empty-passphrase`, `passphrase`
//! and `many` also record a real Olm exchange of the bot's 0.6 `OlmMachine` over its Sled store
//! with two peer devices (`exchange.rs`): expected.json's `olm`.
//!
//! cargo run --release --manifest-path crates/fixture-writer/Cargo.toml -- OUT_DIR [--case NAME]... [--sessions N] [--rooms R]

mod cases;
mod damage;
mod exchange;
mod write;

use anyhow::{bail, Result};

pub const SMALL_CASES: &[&str] = &[
    "plain",
    "empty-passphrase",
    "passphrase",
    "mixed-upgrade",
    "damaged",
    "damaged-plain",
    "empty",
    "legacy-libolm",
    "msgpack-cipher",
    "half-upgraded",
];

pub struct Args {
    pub out: std::path::PathBuf,
    pub cases: Vec<String>,
    pub sessions: usize,
    pub rooms: usize,
    /// `bloated`: how many times every session is written again.
    pub rewrites: usize,
    /// `--no-copy-check`: skip the Olm exchange's proof on a copy of the store (a store of tens
    /// of GB has no room for a second one; expected.json's `olm.checked_on_a_copy` says so).
    pub copy_check: bool,
}

fn parse_args() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let mut out = None;
    let mut cases = Vec::new();
    let mut sessions = 3000;
    let mut rooms = 5;
    let mut rewrites = 20;
    let mut copy_check = true;
    while let Some(a) = it.next() {
        match a.as_str() {
            "--case" => cases.push(it.next().unwrap_or_default()),
            "--sessions" => sessions = it.next().unwrap_or_default().parse()?,
            "--rooms" => rooms = it.next().unwrap_or_default().parse()?,
            "--rewrites" => rewrites = it.next().unwrap_or_default().parse()?,
            "--no-copy-check" => copy_check = false,
            "-h" | "--help" => bail!("usage: fixture-writer OUT_DIR [--case NAME]... [--sessions N] [--rooms R] [--rewrites W] [--no-copy-check]\ncases: {} many long-lived bloated", SMALL_CASES.join(" ")),
            other if out.is_none() => out = Some(std::path::PathBuf::from(other)),
            other => bail!("unexpected argument {other}"),
        }
    }
    let Some(out) = out else { bail!("usage: fixture-writer OUT_DIR [--case NAME]... [--sessions N] [--rooms R]") };
    if cases.is_empty() {
        cases = SMALL_CASES.iter().map(|s| s.to_string()).collect();
    }
    Ok(Args { out, cases, sessions, rooms, rewrites, copy_check })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = parse_args()?;
    for case in &args.cases {
        let dir = args.out.join(case);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        cases::write_case(case, &dir, &args).await?;
        eprintln!("wrote {}", dir.display());
    }
    Ok(())
}
