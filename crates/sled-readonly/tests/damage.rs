//! Damaged images, as power loss and bit rot leave them: the log truncated or with bytes flipped
//! or zeroed, the snapshot damaged, blob files gone or damaged, a stray `snap.*.generating`.
//! Genuine Sled reads each (in a child process, on a copy: it may panic, hang or write): every
//! tree iterated, then `get` for every key either reader returned. sled-readonly reads it in
//! this process, and must never panic. Then, by what genuine Sled did (`common::judge`):
//!
//! * it opened the image: sled-readonly must open it too; every tree genuine Sled iterated to
//!   the end, sled-readonly reads without a lost range and with the same entries, or, where a
//!   damaged log left the tree inconsistent and Sled's iterator returns entries its own `get`
//!   does not see, with exactly what genuine Sled's `get` returns; in a tree whose iteration
//!   failed, every key genuine Sled did answer for has the same value in sled-readonly,
//!   except inside the ranges sled-readonly reports lost;
//! * it refused, panicked or hung: sled-readonly must return an error or report lost ranges,
//!   never a clean read of data genuine Sled would not vouch for.
//!
//! sled-readonly must also leave every image as it found it. The counts of each class are
//! printed and the classes every run must produce are asserted non-empty. Genuine Sled is not
//! deterministic (its threads decide what goes to blobs and where pages are relocated), so the
//! same seed damages somewhat different images from run to run: the classes' counts vary.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn dispatch() {
    child_dispatch(&|_, _, _| unreachable!("no writers here"));
}

/// A base image to damage: genuine Sled writes it in this process.
fn build_base(kind: &str, dir: &Path) {
    let mut rng = StdRng::seed_from_u64(kind.len() as u64);
    let (segment_size, big) = match kind {
        "small" => (4096, 2500),
        "blobs" => (512 * 1024, 200 * 1024),
        _ => (8192, 4000),
    };
    let live = tempfile::tempdir().unwrap();
    let target = if kind == "live" { live.path() } else { dir };
    for cycle in 0..3 {
        let db = open_when_unlocked(
            &sled::Config::new()
                .path(target)
                .segment_size(segment_size)
                .flush_every_ms(None),
        );
        let trees: Vec<sled::Tree> = ["a", "b", "c"]
            .iter()
            .map(|n| db.open_tree(n).unwrap())
            .chain([(*db).clone()])
            .collect();
        for n in 0..2500u32 {
            let t = &trees[rng.gen_range(0..trees.len())];
            let k = format!("k{:05}", rng.gen_range(0..1200)).into_bytes();
            if rng.gen_range(0..100) < if cycle == 1 { 70 } else { 20 } {
                t.remove(&k).unwrap();
            } else {
                let len = if rng.gen_ratio(1, 30) {
                    big
                } else {
                    rng.gen_range(0..150)
                };
                t.insert(&k, vec![(n % 251) as u8; len]).unwrap();
            }
            if n % 500 == 0 {
                let mut batch = sled::Batch::default();
                for i in 0..20u32 {
                    batch.insert(&i.to_be_bytes(), vec![cycle as u8; 50]);
                }
                trees[1].apply_batch(batch).unwrap();
            }
        }
        if kind == "live" && cycle == 2 {
            // Not closed: the flushed files of a running database.
            db.flush().unwrap();
            copy_live_dir(target, dir);
        }
    }
}

/// The damage done to one image, for the report.
fn damage(rng: &mut StdRng, dir: &Path, which: usize) -> String {
    let db = dir.join("db");
    let len = std::fs::metadata(&db).unwrap().len();
    let seg = stored_segment_size(dir) as u64;
    let snapshot = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("snap.")
        });
    let mut blobs: Vec<PathBuf> = std::fs::read_dir(dir.join("blobs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    blobs.sort();
    let flip = |path: &Path, at: u64, rng: &mut StdRng| {
        let mut bytes = std::fs::read(path).unwrap();
        let at = at as usize % bytes.len().max(1);
        if !bytes.is_empty() {
            bytes[at] ^= rng.gen_range(1..=255u8);
        }
        std::fs::write(path, bytes).unwrap();
    };
    let truncate = |path: &Path, to: u64| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(to)
            .unwrap()
    };
    match which % 13 {
        0 => {
            let to = rng.gen_range(0..len);
            truncate(&db, to);
            format!("db truncated to {to} of {len}")
        }
        1 => {
            // Near the end, where a power cut tears the last writes.
            let to = len - rng.gen_range(1..(len / 4).max(2));
            truncate(&db, to);
            format!("db truncated to {to} of {len}")
        }
        2 => {
            let n = rng.gen_range(1..=4);
            let mut at = Vec::new();
            for _ in 0..n {
                let a = rng.gen_range(0..len);
                flip(&db, a, rng);
                at.push(a);
            }
            format!("db bytes flipped at {at:?}")
        }
        3 => {
            let segment = rng.gen_range(0..len / seg.max(1)).max(0);
            let a = segment * seg + rng.gen_range(0..20);
            flip(&db, a, rng);
            format!("segment header byte flipped at {a}")
        }
        4 => {
            let start = rng.gen_range(0..len);
            let n = rng.gen_range(512..4096).min(len - start);
            let mut bytes = std::fs::read(&db).unwrap();
            bytes[start as usize..(start + n) as usize].fill(0);
            std::fs::write(&db, bytes).unwrap();
            format!("db zeroed at {start}..{}", start + n)
        }
        5 => match &snapshot {
            Some(s) => {
                let slen = std::fs::metadata(s).unwrap().len();
                let a = rng.gen_range(0..slen);
                flip(s, a, rng);
                format!("snapshot byte flipped at {a} of {slen}")
            }
            None => "nothing (no snapshot)".into(),
        },
        6 => match &snapshot {
            Some(s) => {
                let slen = std::fs::metadata(s).unwrap().len();
                let to = rng.gen_range(0..slen);
                truncate(s, to);
                format!("snapshot truncated to {to} of {slen}")
            }
            None => "nothing (no snapshot)".into(),
        },
        7 if !blobs.is_empty() => {
            let b = &blobs[rng.gen_range(0..blobs.len())];
            std::fs::remove_file(b).unwrap();
            format!("blob {} deleted", b.file_name().unwrap().to_string_lossy())
        }
        8 if !blobs.is_empty() => {
            let b = &blobs[rng.gen_range(0..blobs.len())];
            if rng.gen() {
                let a = rng.gen_range(0..std::fs::metadata(b).unwrap().len());
                flip(b, a, rng);
                format!(
                    "blob {} byte flipped at {a}",
                    b.file_name().unwrap().to_string_lossy()
                )
            } else {
                let to = rng.gen_range(0..std::fs::metadata(b).unwrap().len());
                truncate(b, to);
                format!(
                    "blob {} truncated to {to}",
                    b.file_name().unwrap().to_string_lossy()
                )
            }
        }
        9 | 10 => {
            // A snapshot Sled began to write and never renamed: complete, cut short, or garbage.
            let s = snapshot.as_ref().expect("every base has a snapshot");
            let bytes = std::fs::read(s).unwrap();
            let name = format!(
                "snap.{:016X}.generating",
                rng.gen_range(0x100_0000..0x1000_0000u64)
            );
            let (content, how) = match rng.gen_range(0..3) {
                0 => (bytes.clone(), "a complete copy"),
                1 => (bytes[..rng.gen_range(0..bytes.len())].to_vec(), "cut short"),
                _ => (
                    (0..rng.gen_range(0..200)).map(|_| rng.gen()).collect(),
                    "garbage",
                ),
            };
            std::fs::write(dir.join(&name), content).unwrap();
            format!("stray {name}, {how}")
        }
        12 => {
            // Every blob the snapshot may point to: pages genuine Sled opens without replaying
            // them, and cannot read.
            let s = snapshot.as_ref().expect("every base has a snapshot");
            let stable = i64::from_str_radix(
                &s.file_name().unwrap().to_string_lossy()["snap.".len()..],
                16,
            )
            .unwrap();
            let mut n = 0;
            for b in &blobs {
                if b.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .parse::<i64>()
                    .unwrap()
                    < stable
                {
                    std::fs::remove_file(b).unwrap();
                    n += 1;
                }
            }
            format!("the {n} blobs older than the snapshot deleted")
        }
        _ => {
            // Power loss: the tail cut, and a sector of what remains rotten.
            let to = len - rng.gen_range(1..(len / 3).max(2));
            truncate(&db, to);
            let a = rng.gen_range(0..to);
            flip(&db, a, rng);
            format!("db truncated to {to} of {len} and a byte flipped at {a}")
        }
    }
}

#[derive(Default, Debug)]
struct Tally {
    classes: BTreeMap<String, usize>,
}

impl Tally {
    fn count(&mut self, class: &str) {
        *self.classes.entry(class.to_owned()).or_default() += 1;
    }
    fn get(&self, class: &str) -> usize {
        self.classes.get(class).copied().unwrap_or(0)
    }
}

fn damaged_images(test: &str, base_kind: &str, seed: u64, images: usize) -> Tally {
    let base = tempfile::tempdir().unwrap();
    build_base(base_kind, base.path());
    settle(base.path());
    assert_agree(base.path(), &format!("{base_kind} base"), seed);
    let base_read = open_and_read_ours(base.path()).expect("the base opens");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tally = Tally::default();
    let work = tempfile::tempdir().unwrap();
    for image in 0..images {
        let dir = work.path().join(format!("image{image}"));
        copy_dir(base.path(), &dir);
        let what = damage(&mut rng, &dir, image);
        let what = format!("{base_kind} image {image} ({what})");
        // To study a failure: KEEP_FAILED=folder keeps a copy of every image that fails.
        let pristine = std::env::var("KEEP_FAILED").ok().map(|keep| {
            let to = Path::new(&keep).join(format!("{base_kind}-{image}-{}", std::process::id()));
            copy_dir(&dir, &to);
            to
        });

        let before = DirState::capture(&dir);
        let (ours, get_mismatches) = std::panic::catch_unwind(|| {
            let read = open_and_read_ours(&dir);
            // Point reads too, of keys the scan returned: the same value, or an error.
            let mut mismatches = Vec::new();
            if let (Ok(db), Ok(read)) = (sled_readonly::Db::open(&dir), &read) {
                for (name, items) in &read.trees {
                    for item in items.iter().step_by(5) {
                        if let Item::Entry(k, v) = item {
                            if let Ok(got) = db.get(name, k) {
                                if got.as_deref().map(|v| &v[..]) != Some(&v[..]) {
                                    mismatches.push(show(k));
                                }
                            }
                        }
                    }
                }
            }
            (read, mismatches)
        })
        .unwrap_or_else(|_| panic!("{what}: sled-readonly panicked"));
        assert!(
            get_mismatches.is_empty(),
            "{what}: get disagrees with the scan for {get_mismatches:?}"
        );
        let after = DirState::capture(&dir);
        assert!(
            before == after,
            "{what}: sled-readonly changed the directory:\n{}",
            before.diff(&after)
        );

        let copy = work.path().join(format!("copy{image}"));
        let (genuine, _) =
            genuine_in_child(test, &dir, &copy, Duration::from_secs(60), &probe(&ours));
        let judged = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            judge(&what, &genuine, &ours)
        }));
        if let Some(kept) = &pristine {
            if judged.is_ok() {
                let _ = std::fs::remove_dir_all(kept);
            } else {
                eprintln!("failing image kept in {}", kept.display());
            }
        }
        let class = judged.unwrap_or_else(|p| std::panic::resume_unwind(p));
        // An unfinished snapshot that Sled would refuse is passed over for the one before it:
        // what is read then is the base itself (which genuine Sled reads as sled-readonly does).
        if what.contains("stray snap.") {
            if let Ok(read) = &ours {
                if !read.sled_would_refuse.is_empty() {
                    assert!(
                        read.trees == base_read.trees,
                        "{what}: read past the unfinished snapshot, the trees differ from the base"
                    );
                }
            }
        }
        eprintln!("{class:<40} {what}");
        tally.count(&class);
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&copy);
    }
    eprintln!("{base_kind}: {tally:?}");
    tally
}

/// Every run must have met the three outcomes: both readers agree; genuine Sled refuses or
/// panics; sled-readonly reports lost ranges (deleting the blobs older than the snapshot alone
/// makes sure of that).
fn assert_classes(t: &Tally) {
    let sum = |f: &dyn Fn(&str) -> bool| {
        t.classes
            .iter()
            .filter(|(c, _)| f(c))
            .map(|(_, n)| n)
            .sum::<usize>()
    };
    assert!(t.get("agree") >= 1, "{t:?}");
    assert!(
        sum(&|c| c.starts_with("genuine refused") || c.starts_with("genuine panicked")) >= 1,
        "{t:?}"
    );
    assert!(sum(&|c| c.ends_with("ours loses ranges")) >= 1, "{t:?}");
}

#[test]
fn damaged_small_segments() {
    dispatch();
    assert_classes(&damaged_images("damaged_small_segments", "small", 21, 39));
}

#[test]
fn damaged_blobs() {
    dispatch();
    assert_classes(&damaged_images("damaged_blobs", "blobs", 22, 26));
}

#[test]
fn damaged_live_image() {
    dispatch();
    assert_classes(&damaged_images("damaged_live_image", "live", 23, 39));
}
