//! Crash images: a child process (this test binary, run again as a writer) writes with genuine
//! Sled without pause; the test SIGKILLs it at a random moment and reads what the kill left,
//! which is exactly what the kernel had: genuine Sled on a copy, sled-readonly on the original.
//! Then the writer starts again on the same directory (its open recovers the crash, and may be
//! killed in the middle of that too), and so on.
//!
//! For every image: genuine Sled opens it and both agree on every tree and entry, or genuine
//! Sled refuses it and sled-readonly does not claim a clean read either; sled-readonly never
//! changes a byte or a timestamp of it, while genuine Sled's open of the copy does.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The writers a child can run, until killed.
fn writer(workload: &str, dir: &Path, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (segment_size, flush_every_ms) = match workload {
        "small-segments" => (4096, Some(2)),
        "batches" => (8192, None),
        "default-segments" => (512 * 1024, Some(10)),
        "drops" => (8192, Some(5)),
        other => panic!("no writer {other}"),
    };
    let db = match sled::Config::new()
        .path(dir)
        .segment_size(segment_size)
        .flush_every_ms(flush_every_ms)
        .open()
    {
        Ok(db) => db,
        // Sled cannot recover the last crash: the parent sees the early exit.
        Err(_) => std::process::exit(3),
    };
    let value = |rng: &mut StdRng, big_every: u32, big: usize| -> Vec<u8> {
        let len = if rng.gen_ratio(1, big_every) {
            big + rng.gen_range(0..big / 2)
        } else {
            rng.gen_range(0..200)
        };
        let fill: u8 = rng.gen();
        vec![fill; len]
    };
    let trees: Vec<sled::Tree> = ["sessions", "devices", "outbound"]
        .iter()
        .map(|n| db.open_tree(n).unwrap())
        .chain([(*db).clone()])
        .collect();
    match workload {
        "batches" => {
            // Two threads: transactions over two trees and batches on a third, explicit flushes.
            let db2 = db.clone();
            let mut rng2 = StdRng::seed_from_u64(seed ^ 0xabcd);
            std::thread::spawn(move || {
                use sled::Transactional;
                let a = db2.open_tree("accounts").unwrap();
                let b = db2.open_tree("ledger").unwrap();
                for i in 0u64.. {
                    let k = rng2.gen_range(0..400u32).to_be_bytes();
                    let v = value(&mut rng2, 15, 3000);
                    (&a, &b)
                        .transaction(|(a, b)| {
                            a.insert(&k, v.as_slice())?;
                            b.insert(&i.to_be_bytes(), &k)?;
                            if i % 3 == 0 {
                                b.remove(&(i / 2).to_be_bytes())?;
                            }
                            Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
                        })
                        .unwrap();
                    if rng2.gen_ratio(1, 10) {
                        db2.flush().unwrap();
                    }
                }
            });
            for n in 0u64.. {
                let mut batch = sled::Batch::default();
                for _ in 0..rng.gen_range(1..30) {
                    let k = rng.gen_range(0..3000u32).to_be_bytes();
                    if rng.gen_ratio(2, 5) {
                        batch.remove(&k);
                    } else {
                        batch.insert(&k, value(&mut rng, 20, 3000));
                    }
                }
                trees[(n % 4) as usize].apply_batch(batch).unwrap();
                if rng.gen_ratio(1, 8) {
                    db.flush().unwrap();
                }
            }
        }
        _ => {
            for n in 0u64.. {
                // Phases of growth and of thinning out (merges), starting at either.
                let remove_pct = if (n / 400 + seed) % 2 == 1 { 85 } else { 25 };
                let tree = &trees[rng.gen_range(0..trees.len())];
                let k = format!("key{:05}", rng.gen_range(0..1500)).into_bytes();
                if rng.gen_range(0..100) < remove_pct {
                    tree.remove(&k).unwrap();
                } else {
                    let (every, big) = if workload == "default-segments" {
                        (40, 150 * 1024)
                    } else {
                        (25, 2500)
                    };
                    tree.insert(&k, value(&mut rng, every, big)).unwrap();
                }
                if workload == "drops" && n % 700 == 699 {
                    match rng.gen_range(0..3) {
                        0 => trees[1].clear().unwrap(),
                        1 => {
                            db.drop_tree("scratch").unwrap();
                        }
                        _ => {
                            let t = db.open_tree("scratch").unwrap();
                            for i in 0..rng.gen_range(0..200u32) {
                                t.insert(i.to_be_bytes(), value(&mut rng, 30, 2500))
                                    .unwrap();
                            }
                        }
                    }
                }
            }
        }
    }
}

fn dispatch() {
    child_dispatch(&|workload, dir, seed| writer(workload, dir, seed));
}

#[derive(Default, Debug)]
struct Tally {
    /// Genuine Sled opened the image and read every tree; sled-readonly agreed exactly.
    agree: usize,
    /// Genuine Sled refused or panicked; sled-readonly returned an error or reported lost ranges.
    both_refuse: usize,
    /// The writer was killed before Sled had written a database there.
    no_database_yet: usize,
    /// The writer found an image genuine Sled would not open.
    writer_could_not_reopen: usize,
    /// Images whose copy genuine Sled's open changed.
    genuine_changed_copy: usize,
    entries_compared: usize,
}

fn crash_cycles(test: &str, workload: &str, seed: u64, images: usize) -> Tally {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tally = Tally::default();
    let mut census = Census::default();
    for image in 0..images {
        let what = format!("{workload} image {image}");
        let mut child = spawn_child(
            test,
            &format!(
                "writer\u{1}{workload}\u{1}{}\u{1}{}",
                dir.path().display(),
                seed * 1000 + image as u64
            ),
        );
        std::thread::sleep(Duration::from_millis(rng.gen_range(5..250)));
        if let Some(status) = child.try_wait().unwrap() {
            // Genuine Sled could not reopen the last crash image (say, a kill while it wrote a
            // snapshot left a `.generating` file it then takes for the newest one): this image
            // is judged like the others, and must come out as one both refuse.
            eprintln!("{what}: the writer stopped by itself ({status})");
            tally.writer_could_not_reopen += 1;
        } else {
            child.kill().unwrap();
            child.wait().unwrap();
        }

        if !dir.path().join("conf").exists() || !dir.path().join("db").exists() {
            tally.no_database_yet += 1;
            continue;
        }
        census.max(&Census::take(dir.path()));
        let before = DirState::capture(dir.path());
        let ours = std::panic::catch_unwind(|| open_and_read_ours(dir.path()))
            .unwrap_or_else(|_| panic!("{what}: sled-readonly panicked"));
        let after = DirState::capture(dir.path());
        assert!(
            before == after,
            "{what}: sled-readonly changed the directory:\n{}",
            before.diff(&after)
        );

        let copies = tempfile::tempdir().unwrap();
        let copy = copies.path().join("copy");
        let (genuine, changed) = genuine_in_child(
            test,
            dir.path(),
            &copy,
            Duration::from_secs(90),
            &probe(&ours),
        );
        if !changed.is_empty() {
            tally.genuine_changed_copy += 1;
        }
        let class = judge(&what, &genuine, &ours);
        match class.as_str() {
            "agree" => {
                // And genuine Sled's own point reads agree with its iteration.
                if let Genuine::Opened(trees) = &genuine {
                    for (name, tree) in trees {
                        assert!(
                            tree.get_disagrees.is_empty() && tree.get_failed.is_empty(),
                            "{what}: tree {}: genuine Sled's get disagrees with its iteration: {}",
                            show(name),
                            genuine.summary()
                        );
                    }
                }
                let read = ours.as_ref().unwrap();
                let theirs: Contents = read
                    .trees
                    .keys()
                    .map(|n| (n.clone(), read.entries(n)))
                    .collect();
                assert_gets_agree(&what, dir.path(), &theirs);
                tally.entries_compared += theirs.values().map(Vec::len).sum::<usize>();
                tally.agree += 1;
            }
            "genuine refused, ours refuses"
            | "genuine panicked, ours refuses"
            | "genuine refused, ours loses ranges"
            | "genuine panicked, ours loses ranges" => {
                eprintln!(
                    "{what}: {class}: {}; sled-readonly: {:?}",
                    genuine.summary(),
                    ours.as_ref().map(|r| r.lost())
                );
                tally.both_refuse += 1;
                // Start over: the next writer could not open this directory either.
                std::fs::remove_dir_all(dir.path()).unwrap();
                std::fs::create_dir(dir.path()).unwrap();
            }
            // A crash image is not damaged: genuine Sled reads every tree of it in full and
            // consistently.
            other => panic!("{what}: {other}: {}", genuine.summary()),
        }
    }
    eprintln!("{workload}: {tally:?}\n  on disk at some point: {census:?}");
    // What each workload is there for was on disk in at least one image.
    match workload {
        "small-segments" => assert!(
            census.kind(KIND_BLOB_NODE) > 0 && census.lsn_span > census.segments,
            "{census:?}"
        ),
        "batches" => assert!(census.kind(KIND_BATCH_MANIFEST) > 0, "{census:?}"),
        "default-segments" => assert!(
            census.kind(KIND_BLOB_NODE) + census.kind(KIND_BLOB_LINK) > 0,
            "{census:?}"
        ),
        _ => assert!(
            census.kind(KIND_FREE) > 0 && census.link(LINK_MERGE_INTENTION) > 0,
            "{census:?}"
        ),
    }
    assert_eq!(
        tally.genuine_changed_copy,
        tally.agree + tally.both_refuse,
        "genuine Sled left a copy unchanged: {tally:?}"
    );
    tally
}

/// Point reads of sled-readonly against genuine Sled's iteration: every 7th key, and absent ones.
fn assert_gets_agree(what: &str, dir: &Path, theirs: &Contents) {
    let db = sled_readonly::Db::open(dir).unwrap();
    for (name, entries) in theirs {
        if !db.has_tree(name) {
            continue;
        }
        let map: BTreeMap<&[u8], &[u8]> = entries.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        for (k, v) in entries.iter().step_by(7) {
            assert_eq!(
                db.get(name, k).unwrap().as_deref().map(|v| &v[..]),
                Some(&v[..]),
                "{what}: get {}",
                show(k)
            );
            let absent = [&k[..], b"\0"].concat();
            assert_eq!(
                db.get(name, &absent).unwrap().map(|v| v.to_vec()),
                map.get(&absent[..]).map(|v| v.to_vec())
            );
        }
    }
}

#[test]
fn crash_small_segments_with_flusher() {
    dispatch();
    let t = crash_cycles(
        "crash_small_segments_with_flusher",
        "small-segments",
        11,
        12,
    );
    assert!(t.agree >= 10, "{t:?}");
}

#[test]
fn crash_batches_and_transactions_without_flusher() {
    dispatch();
    let t = crash_cycles(
        "crash_batches_and_transactions_without_flusher",
        "batches",
        12,
        12,
    );
    assert!(t.agree >= 10, "{t:?}");
}

#[test]
fn crash_default_segments_with_blobs() {
    dispatch();
    let t = crash_cycles(
        "crash_default_segments_with_blobs",
        "default-segments",
        13,
        8,
    );
    assert!(t.agree >= 6, "{t:?}");
}

#[test]
fn crash_clear_and_drop_tree() {
    dispatch();
    let t = crash_cycles("crash_clear_and_drop_tree", "drops", 14, 10);
    assert!(t.agree >= 8, "{t:?}");
}
