//! Minimal reproductions of the discrepancies the differential suites found, each built on
//! purpose with genuine Sled, damaged in one precise way, and read both ways. Each failed
//! before the fix it is named after (see the comments) and passes with it.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::*;

fn dispatch() {
    child_dispatch(&|_, _, _| unreachable!("no writers here"));
}

/// The stable LSN of the one snapshot: Sled names the file after it.
fn snapshot_stable_lsn(dir: &Path) -> i64 {
    let snapshot = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("snap."))
        .unwrap();
    i64::from_str_radix(&snapshot["snap.".len()..], 16).unwrap()
}

fn open(dir: &Path) -> sled::Db {
    open_when_unlocked(
        &sled::Config::new()
            .path(dir)
            .segment_size(4096)
            .flush_every_ms(None),
    )
}

/// Both readings of `dir`, judged (see `common::judge`); returns the class and sled-readonly's.
fn read_both(test: &str, dir: &Path) -> (String, Genuine, Result<OurRead, sled_readonly::Error>) {
    let before = DirState::capture(dir);
    let ours = open_and_read_ours(dir);
    assert!(
        before == DirState::capture(dir),
        "sled-readonly changed the directory"
    );
    let copies = tempfile::tempdir().unwrap();
    let (genuine, _) = genuine_in_child(
        test,
        dir,
        &copies.path().join("copy"),
        Duration::from_secs(30),
        &probe(&ours),
    );
    let class = judge(test, &genuine, &ours);
    (class, genuine, ours)
}

/// A leaf page whose newest version was a blob that is gone goes back to the version before:
/// here, the one from before the leaf split, whose range reaches over its new right sibling.
/// Genuine Sled splits the oversized stale leaf again on its way (at the same point) and reads
/// the rest of the range from the sibling, where the current entries are; sled-readonly used
/// to read the stale leaf to its (stale) high bound, the end of the tree: old values, a removed
/// key, and no trace of the entries past it. Fixed in `Scan::next_leaf`: a leaf's range ends
/// where the index above it says the next child begins.
#[test]
fn stale_leaf_after_its_blob_is_lost() {
    dispatch();
    let dir = tempfile::tempdir().unwrap();
    let mut model = BTreeMap::new();
    {
        let db = open(dir.path());
        let t = db.open_tree("t").unwrap();
        // 4 KiB segments: a leaf of more than ~1 KiB is written as a blob. The 18th key splits
        // the leaf (at key09); then keys right of the split change.
        for i in 0..18u32 {
            t.insert(format!("key{i:02}"), vec![i as u8; 120]).unwrap();
            model.insert(format!("key{i:02}").into_bytes(), vec![i as u8; 120]);
        }
        for i in 10..17u32 {
            t.insert(format!("key{i:02}"), vec![0xee; 60]).unwrap();
            model.insert(format!("key{i:02}").into_bytes(), vec![0xee; 60]);
        }
        t.remove("key12").unwrap();
        model.remove(&b"key12"[..]);
    }
    settle(dir.path());
    let messages = log_messages(dir.path());
    // The leaf: the page the first key was linked to; its newest base, a blob, goes.
    let leaf = messages.iter().find(|m| m.kind == 10).unwrap().pid;
    let bases: Vec<&Message> = messages
        .iter()
        .filter(|m| m.pid == leaf && m.kind == KIND_BLOB_NODE)
        .collect();
    assert!(
        bases.len() >= 2,
        "the leaf was not written as a blob twice: {bases:?}"
    );
    let blob = i64::from_le_bytes(bases.last().unwrap().body[..8].try_into().unwrap());
    std::fs::remove_file(dir.path().join("blobs").join(blob.to_string())).unwrap();

    let (class, _, ours) = read_both("stale_leaf_after_its_blob_is_lost", dir.path());
    assert_eq!(class, "agree");
    let want: Entries = model.into_iter().collect();
    assert_entries_equal(
        "sled-readonly against what was written",
        &want,
        &ours.unwrap().entries(b"t"),
    );
}

/// Every page below the end of the page table must have a state: Sled allocates pages in log
/// order, and its open panics on a gap ("tried to serialize Uninitialized", or "tried to load"
/// it). Here the one base message of a page is damaged (the replay then skips the rest of its
/// segment) while pages after it survive. sled-readonly used to read such a table without a
/// word; it now reads it and says Sled would not (`PageTable::first_hole`).
#[test]
fn page_table_with_a_gap() {
    dispatch();
    // Sled's background cleaning sometimes rewrites every page into a later segment (about one
    // run in a hundred or more, on a busy machine): then the workload runs again.
    let (dir, mut log, base) = (0..5)
        .find_map(|_| {
            let dir = tempfile::tempdir().unwrap();
            let (log, base) = log_with_a_page_in_one_segment(dir.path())?;
            Some((dir, log, base))
        })
        .expect("a page written in one segment, in one of five runs");
    let page = base.pid;
    log[base.offset as usize + base.len - 1] ^= 0xff;
    std::fs::write(dir.path().join("db"), log).unwrap();

    let (class, genuine, ours) = read_both("page_table_with_a_gap", dir.path());
    assert!(
        matches!(genuine, Genuine::Panicked(_)),
        "{}",
        genuine.summary()
    );
    assert!(class.starts_with("genuine panicked, ours"), "{class}");
    let ours = ours.expect("sled-readonly reads what is left");
    assert!(
        ours.sled_would_refuse
            .iter()
            .any(|r| r.starts_with("page ") && r.contains("no version left")),
        "{:?} (damaged page {page})",
        ours.sled_would_refuse
    );
}

/// One session's log (no snapshot) and the first base message of a page whose base messages all
/// lie in one segment before the log's unstable tail; `None` when cleaning moved every page.
fn log_with_a_page_in_one_segment(dir: &Path) -> Option<(Vec<u8>, Message)> {
    {
        // One session: no snapshot, recovery replays the whole log.
        let db = open(dir);
        let t = db.open_tree("t").unwrap();
        for i in 0..300u32 {
            t.insert(i.to_be_bytes(), vec![1u8; 100]).unwrap();
            if i % 20 == 19 {
                // Each segment header records the stable LSN when it began: flushes move it on.
                db.flush().unwrap();
            }
        }
    }
    settle(dir);
    assert!(!std::fs::read_dir(dir).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("snap.")));
    let messages = log_messages(dir);
    let max_pid = messages
        .iter()
        .filter(|m| (4..=11).contains(&m.kind))
        .map(|m| m.pid)
        .max()
        .unwrap();
    // Damage ends the log where it is in its unstable tail (the segments from the highest
    // stable LSN a segment header records on); before that, it ends only its segment.
    let log = std::fs::read(dir.join("db")).unwrap();
    let stable = log
        .chunks(4096)
        .map(|h| i64::from_le_bytes(h[12..20].try_into().unwrap()) ^ i64::MAX)
        .max()
        .unwrap();
    // A page whose base messages (node, meta, counter; no free) all lie in one segment before
    // the tail: damaging the first of them loses them all.
    let replaces = |pid: u64| {
        messages
            .iter()
            .filter(move |m| m.pid == pid && matches!(m.kind, 4..=9))
            .collect::<Vec<_>>()
    };
    let base = (2..max_pid)
        .map(replaces)
        .filter(|r| {
            !r.is_empty()
                && r.iter()
                    .all(|m| m.kind != 4 && m.lsn / 4096 == r[0].lsn / 4096)
        })
        .map(|r| r[0].clone())
        .filter(|m| m.lsn < stable / 4096 * 4096)
        .min_by_key(|m| m.lsn)?;
    Some((log, base))
}

/// Sled's open refuses a log that ends before the stable LSN of the snapshot it starts from:
/// the snapshot's pages may point to what is gone. Here the last message before the snapshot's
/// stable LSN, a tree page's, is torn. sled-readonly used to open it without a word; it now says
/// Sled would not.
#[test]
fn log_ends_before_the_snapshot() {
    dispatch();
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open(dir.path());
        for i in 0..400u32 {
            db.insert(i.to_be_bytes(), vec![2u8; 80]).unwrap();
        }
        // Values of the same size again: leaf updates without splits, so that the log ends with
        // tree pages, not with Sled's own (the table of trees, the ID counter), without which
        // there would be nothing to read.
        for i in (0..400u32).step_by(8) {
            db.insert(i.to_be_bytes(), vec![4u8; 80]).unwrap();
        }
    }
    drop(open(dir.path())); // this open writes a snapshot of everything so far
    settle(dir.path());
    let stable = snapshot_stable_lsn(dir.path());
    // The last message before the stable LSN, torn in place (its last byte flipped, as a crash
    // mid-write leaves it): Sled's segments are reused, so the log's end is not the file's.
    let last = log_messages(dir.path())
        .into_iter()
        .filter(|m| m.lsn < stable)
        .max_by_key(|m| m.lsn)
        .unwrap();
    assert!(
        last.pid > 1,
        "the log ends with a tree page (page {})",
        last.pid
    );
    let mut db = std::fs::read(dir.path().join("db")).unwrap();
    db[(last.offset as usize) + last.len - 1] ^= 0xff;
    std::fs::write(dir.path().join("db"), db).unwrap();

    let (class, genuine, ours) = read_both("log_ends_before_the_snapshot", dir.path());
    assert!(
        matches!(genuine, Genuine::Refused(_)),
        "{}",
        genuine.summary()
    );
    assert!(class.starts_with("genuine refused, ours"), "{class}");
    let ours = ours.expect("sled-readonly reads what is left");
    assert!(
        ours.sled_would_refuse
            .iter()
            .any(|r| r.contains("which the snapshot says is stable")),
        "{:?}",
        ours.sled_would_refuse
    );
}

/// Sled's open reads the ID counter (page 1) and fails when it cannot. Here the counter's
/// message, in a segment the snapshot covers (so recovery does not replay it), is damaged: no
/// tree needs it, and sled-readonly, which never read it, used to read every tree without a
/// word; it now reads them and says Sled would not open the database.
#[test]
fn damaged_id_counter() {
    dispatch();
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open(dir.path());
        for i in 0..400u32 {
            db.insert(i.to_be_bytes(), vec![3u8; 80]).unwrap();
        }
    }
    drop(open(dir.path()));
    settle(dir.path());
    let counter = log_messages(dir.path())
        .into_iter()
        .filter(|m| m.kind == 5)
        .last()
        .expect("a counter message");
    assert!(
        counter.lsn / 4096 < snapshot_stable_lsn(dir.path()) / 4096,
        "the counter is where recovery replays: {counter:?}"
    );
    let mut log = std::fs::read(dir.path().join("db")).unwrap();
    log[counter.offset as usize + counter.len - 1] ^= 0xff;
    std::fs::write(dir.path().join("db"), log).unwrap();

    let (class, genuine, ours) = read_both("damaged_id_counter", dir.path());
    assert!(
        matches!(genuine, Genuine::Refused(_) | Genuine::Panicked(_)),
        "{}",
        genuine.summary()
    );
    assert!(class.ends_with("ours reads it, flagged"), "{class}");
    let ours = ours.expect("sled-readonly reads every tree");
    assert!(
        ours.sled_would_refuse
            .iter()
            .any(|r| r.starts_with("the ID counter")),
        "{:?}",
        ours.sled_would_refuse
    );
    assert!(
        ours.lost().is_empty(),
        "no tree needs the counter: {:?}",
        ours.lost()
    );
}
