//! Reader alone, for benchmarks: `cargo run --release --example scan -- CRYPTO_STORE_PATH [PASSPHRASE] [REOPEN_AFTER_BYTES]`.
//! Prints entries, damaged entries, seconds, entries/s and the store's bytes.

use sled_store::{OpenOptions, ScanItem, SledStore, StoreLocation};

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: scan CRYPTO_STORE_PATH [PASSPHRASE] [REOPEN_AFTER_BYTES]");
    let mut options = OpenOptions::new(std::env::temp_dir());
    options.passphrase = args.next().unwrap_or_default();
    if let Some(n) = args.next() {
        options.reopen_after_bytes = Some(n.parse().expect("REOPEN_AFTER_BYTES is a number"));
    }
    if let Ok(c) = std::env::var("SLED_CACHE_BYTES") {
        options.cache_capacity = c.parse().expect("SLED_CACHE_BYTES is a number");
    }
    let t0 = std::time::Instant::now();
    let store = SledStore::open(&StoreLocation::new(&path), options, &mut |_| {}).expect("open");
    let opened = t0.elapsed().as_secs_f64();
    let (mut keys, mut damaged) = (0u64, 0u64);
    let limit: usize = std::env::var("SCAN_LIMIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX);
    for item in store.sessions(None).take(limit) {
        match item {
            ScanItem::Key(_) => keys += 1,
            ScanItem::Damaged(_) => damaged += 1,
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "{{\"keys\":{keys},\"damaged\":{damaged},\"open_s\":{opened:.3},\"total_s\":{secs:.3},\"keys_per_s\":{:.0},\"store_bytes\":{}}}",
        keys as f64 / (secs - opened).max(1e-9),
        store.info().store_bytes
    );
}
