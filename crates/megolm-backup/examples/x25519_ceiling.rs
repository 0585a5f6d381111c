//! The limit of backup encryption on this machine: per session, one fresh ephemeral X25519 key (a
//! base-point multiplication) and one key agreement with the backup key, on every core, nothing
//! else. Measured twice: with x25519-dalek's generic agreement (`sessions_per_s`), and with the
//! agreement the tool uses, a table of the backup key's multiples (`table_sessions_per_s`, see
//! megolm-backup's agreement.rs): the same shared secrets, less work.
//! `cargo run --release --example x25519_ceiling -- [SECONDS]` prints JSON.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use megolm_backup::agreement::Agreement;
use rand_core::OsRng;
use x25519_dalek::{PublicKey, StaticSecret};

fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let backup_key = PublicKey::from(&StaticSecret::random_from_rng(OsRng));
    let generic = Agreement::generic(backup_key);
    let table = Agreement::precomputed(backup_key);
    let rate = |agreement: &Agreement| sessions_per_s(agreement, threads, seconds);
    let (generic_rate, table_rate) = (rate(&generic), rate(&table));
    println!("{{\"threads\":{threads},\"seconds\":{seconds},\"sessions_per_s\":{generic_rate:.0},\"table_sessions_per_s\":{table_rate:.0}}}");
}

fn sessions_per_s(agreement: &Agreement, threads: usize, seconds: f64) -> f64 {
    let stop = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut n = 0u64;
                let mut sink = 0u8;
                while !stop.load(Ordering::Relaxed) {
                    let ephemeral = StaticSecret::random_from_rng(OsRng);
                    let public = PublicKey::from(&ephemeral);
                    let shared = agreement.shared_secret(&ephemeral);
                    sink ^= public.as_bytes()[0] ^ shared[0];
                    n += 1;
                }
                std::hint::black_box(sink);
                done.fetch_add(n, Ordering::Relaxed);
            });
        }
        std::thread::sleep(Duration::from_secs_f64(seconds));
        stop.store(true, Ordering::Relaxed);
    });
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}
