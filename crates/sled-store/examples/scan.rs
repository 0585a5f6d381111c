//! Reader alone, for benchmarks: `cargo run --release --example scan -- CRYPTO_STORE_PATH [PASSPHRASE]`.
//! Prints entries, damaged entries, seconds (open and total), entries/s of the scan and the
//! store's bytes. `SCAN_LIMIT=N` stops after N entries.

use sled_store::{OpenOptions, ScanItem, SledStore, StoreLocation};

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: scan CRYPTO_STORE_PATH [PASSPHRASE]");
    let options = OpenOptions { passphrase: args.next().unwrap_or_default() };
    let t0 = std::time::Instant::now();
    let store = SledStore::open(&StoreLocation::new(&path), options).expect("open");
    let opened = t0.elapsed().as_secs_f64();
    let (mut keys, mut damaged) = (0u64, 0u64);
    let limit: usize = std::env::var("SCAN_LIMIT").ok().and_then(|v| v.parse().ok()).unwrap_or(usize::MAX);
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
