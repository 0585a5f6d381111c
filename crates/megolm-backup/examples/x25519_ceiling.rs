//! The physical limit of backup encryption on this machine: per session, one fresh ephemeral
//! X25519 key (a base-point multiplication) and one key agreement with the backup key, on every
//! core, nothing else. `cargo run --release --example x25519_ceiling -- [SECONDS]` prints JSON.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand_core::OsRng;
use x25519_dalek::{PublicKey, StaticSecret};

fn main() {
    let seconds: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let backup_key = PublicKey::from(&StaticSecret::random_from_rng(OsRng));
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
                    let shared = ephemeral.diffie_hellman(&backup_key);
                    sink ^= public.as_bytes()[0] ^ shared.as_bytes()[0];
                    n += 1;
                }
                std::hint::black_box(sink);
                done.fetch_add(n, Ordering::Relaxed);
            });
        }
        std::thread::sleep(Duration::from_secs_f64(seconds));
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = start.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    println!("{{\"threads\":{threads},\"sessions\":{n},\"seconds\":{elapsed:.3},\"sessions_per_s\":{:.0}}}", n as f64 / elapsed);
}
