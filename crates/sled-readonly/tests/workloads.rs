//! Workloads written by genuine Sled 0.34.7, then read both ways: genuine Sled (on a private
//! copy) and sled-readonly (on the original) must agree on every tree and entry, both must hold
//! what the workload wrote, and sled-readonly must leave the directory exactly as it found it.
//! A census of the log checks each workload really put its on-disk feature there.
//!
//! Snapshots: Sled 0.34.7 writes one only when it opens a database (`snapshot_after_ops` is a
//! no-op since 0.31), so every workload closes and reopens it, and each check after a reopen
//! reads a snapshot plus the log written after it.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The workload's own record of what it wrote, tree by tree.
#[derive(Default)]
struct Model {
    trees: BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl Model {
    fn insert(&mut self, db: &sled::Db, tree: &[u8], k: &[u8], v: &[u8]) {
        db.open_tree(tree).unwrap().insert(k, v).unwrap();
        self.trees
            .entry(tree.to_vec())
            .or_default()
            .insert(k.to_vec(), v.to_vec());
    }

    fn remove(&mut self, db: &sled::Db, tree: &[u8], k: &[u8]) {
        db.open_tree(tree).unwrap().remove(k).unwrap();
        self.trees.entry(tree.to_vec()).or_default().remove(k);
    }

    fn touch(&mut self, tree: &[u8]) {
        self.trees.entry(tree.to_vec()).or_default();
    }

    /// The genuine reading must hold exactly what the workload wrote.
    fn assert_is(&self, what: &str, contents: &Contents) {
        let names: Vec<&Vec<u8>> = contents.keys().collect();
        let want_names: Vec<&Vec<u8>> = self.trees.keys().collect();
        assert_eq!(
            names, want_names,
            "{what}: the trees are not the ones the workload made"
        );
        for (name, entries) in contents {
            let want: Entries = self
                .trees
                .get(name)
                .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default();
            assert_entries_equal(
                &format!("{what}: workload vs genuine Sled, tree {}", show(name)),
                &want,
                entries,
            );
        }
    }

    fn len(&self) -> usize {
        self.trees.values().map(BTreeMap::len).sum()
    }
}

fn open(dir: &Path, segment_size: usize) -> sled::Db {
    open_when_unlocked(
        &sled::Config::new()
            .path(dir)
            .segment_size(segment_size)
            .flush_every_ms(None),
    )
}

/// Keys of several shapes: a common matrix-store layout, random binary ones, and ones sharing a
/// prefix longer than the 255 bytes a Sled node can factor out.
fn key(rng: &mut StdRng, shape: u8, space: u32) -> Vec<u8> {
    let n = rng.gen_range(0..space);
    match shape {
        0 => format!("!room{}:example.org\u{ff}session{n:07}", n % 13).into_bytes(),
        1 => {
            let mut k = n.to_be_bytes().to_vec();
            k.extend((0..(n % 7)).map(|i| (n >> i) as u8));
            k
        }
        _ => {
            let mut k = vec![b'p'; 300];
            k.extend_from_slice(format!("{n:06}").as_bytes());
            k
        }
    }
}

fn value(rng: &mut StdRng, big_every: u32, big_len: usize) -> Vec<u8> {
    let len = if big_every > 0 && rng.gen_ratio(1, big_every) {
        big_len + rng.gen_range(0..big_len / 4)
    } else {
        rng.gen_range(0..300)
    };
    let fill: u8 = rng.gen();
    (0..len)
        .map(|i| fill.wrapping_add((i % 251) as u8))
        .collect()
}

/// Reads the directory both ways after each phase and checks everything; returns the census.
fn check(dir: &Path, what: &str, model: &Model, seed: u64) -> Census {
    settle(dir);
    let contents = assert_agree(dir, what, seed);
    model.assert_is(what, &contents);
    Census::take(dir)
}

/// The same for a running database, flushed: on a copy of its directory (Sled deletes replaced
/// blobs in the background, so the directory itself does not hold still).
fn check_live(db: &sled::Db, dir: &Path, what: &str, model: &Model, seed: u64) -> Census {
    db.flush().unwrap();
    let copy = tempfile::tempdir().unwrap();
    copy_live_dir(dir, copy.path());
    check(copy.path(), what, model, seed)
}

/// Random inserts, overwrites and removals over several trees (the default one included), in
/// cycles of open → work → check the flushed live directory → close → check; each cycle removes
/// more than the last until trees thin out and Sled merges nodes, then refills them.
fn churn(
    segment_size: usize,
    seed: u64,
    cycles: usize,
    ops: usize,
    big_every: u32,
) -> (Census, Model) {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = Model::default();
    let mut census = Census::default();
    let trees: [(&[u8], u8); 4] = [
        (DEFAULT_TREE, 1),
        (b"sessions", 0),
        (b"long-prefixes", 2),
        (b"mixed", 0),
    ];
    for cycle in 0..cycles {
        let db = open(dir.path(), segment_size);
        for (t, _) in &trees {
            model.touch(t);
        }
        // Cycles alternate between growing and thinning out.
        let remove_share = if cycle % 3 == 2 { 85 } else { 25 };
        for _ in 0..ops {
            let (tree, shape) = trees[rng.gen_range(0..trees.len())];
            let present: Option<Vec<u8>> = {
                let t = model.trees.get(tree).unwrap();
                if !t.is_empty() && rng.gen_range(0..100) < 60 {
                    let skip = rng.gen_range(0..t.len().min(4096));
                    let from = key(&mut rng, shape, 50_000);
                    t.range(from..)
                        .chain(t.iter())
                        .nth(skip % t.len())
                        .map(|(k, _)| k.clone())
                } else {
                    None
                }
            };
            match present {
                Some(k) if rng.gen_range(0..100) < remove_share => model.remove(&db, tree, &k),
                Some(k) => {
                    model.insert(&db, tree, &k, &value(&mut rng, big_every, segment_size / 2))
                }
                None => model.insert(
                    &db,
                    tree,
                    &key(&mut rng, shape, 50_000),
                    &value(&mut rng, big_every, segment_size / 2),
                ),
            }
        }
        if cycle == 1 {
            model.insert(&db, b"sessions", b"", b"the empty key");
            model.insert(&db, b"mixed", b"empty value", b"");
        }
        // The flushed directory of a running database is what a crash right now would leave.
        census.max(&check_live(
            &db,
            dir.path(),
            &format!("seed {seed} cycle {cycle} (live)"),
            &model,
            seed + cycle as u64,
        ));
        drop(db);
        census.max(&check(
            dir.path(),
            &format!("seed {seed} cycle {cycle} (closed)"),
            &model,
            seed + cycle as u64,
        ));
    }
    (census, model)
}

#[test]
fn churn_in_small_segments_merges_relocates_and_reuses() {
    // 4 KiB segments: anything over ~1 KiB goes to a blob, and the segment cleaner relocates
    // pages out of thinning segments so they can be reused.
    let (census, model) = churn(4096, 1, 6, 4000, 20);
    eprintln!(
        "4 KiB segments: {census:?}, {} entries at the end",
        model.len()
    );
    assert!(census.segments > 100, "{census:?}");
    assert!(
        census.lsn_span > census.segments + 12,
        "no segment was reused: {census:?}"
    );
    assert!(
        census.kind(KIND_BLOB_NODE) > 0 && census.kind(KIND_BLOB_LINK) > 0,
        "{census:?}"
    );
    assert!(census.kind(KIND_FREE) > 0, "no page was freed: {census:?}");
    assert!(
        census.link(LINK_MERGE_INTENTION) > 0,
        "no merge began: {census:?}"
    );
    assert!(
        census.link(LINK_MERGE_CAP) > 0 && census.link(LINK_MERGE_CONFIRM) > 0,
        "no merge finished: {census:?}"
    );
    assert!(census.snapshots > 0, "{census:?}");
}

#[test]
fn churn_in_8k_segments() {
    let (census, _) = churn(8192, 2, 6, 5000, 40);
    eprintln!("8 KiB segments: {census:?}");
    assert!(
        census.lsn_span > census.segments + 12 && census.link(LINK_MERGE_INTENTION) > 0,
        "{census:?}"
    );
}

#[test]
fn churn_in_default_segments() {
    // Sled's default 512 KiB segments: values over 128 KiB go to blobs.
    let (census, _) = churn(512 * 1024, 3, 4, 3000, 150);
    eprintln!("512 KiB segments: {census:?}");
    assert!(
        census.kind(KIND_BLOB_LINK) > 0 && census.link(LINK_MERGE_INTENTION) > 0,
        "{census:?}"
    );
}

#[test]
fn large_values_live_in_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(4);
    let mut model = Model::default();
    let mut census = Census::default();
    for cycle in 0..3u64 {
        let db = open(dir.path(), 512 * 1024);
        model.touch(DEFAULT_TREE);
        for i in 0..40u32 {
            let k = format!("big{:03}", rng.gen_range(0..30)).into_bytes();
            if i % 5 == 4 {
                model.remove(&db, b"blobs", &k);
            } else {
                let len = rng.gen_range(130 * 1024..600 * 1024);
                let v: Vec<u8> = (0..len).map(|j| (j as u8) ^ (i as u8)).collect();
                model.insert(&db, b"blobs", &k, &v);
            }
            model.insert(
                &db,
                DEFAULT_TREE,
                format!("small{i}").as_bytes(),
                &[cycle as u8; 10],
            );
        }
        drop(db);
        census.max(&check(
            dir.path(),
            &format!("blobs cycle {cycle}"),
            &model,
            cycle,
        ));
    }
    eprintln!("blobs: {census:?}");
    assert!(
        census.blob_files > 10
            && census.kind(KIND_BLOB_LINK) > 0
            && census.kind(KIND_BLOB_NODE) > 0,
        "{census:?}"
    );
}

#[test]
fn deep_tree_then_mass_removal() {
    // Sled splits a leaf past 16 entries and an index node past 256 children: sequential keys
    // leave ~9 per leaf and ~129 children per index, so ~300k keys make 3 levels of index nodes.
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::default();
    let db = open(dir.path(), 512 * 1024);
    model.touch(DEFAULT_TREE);
    let tree = db.open_tree(b"deep").unwrap();
    let mut batch_model = BTreeMap::new();
    for i in 0..310_000u32 {
        let k = i.to_be_bytes();
        let v = (i % 97).to_le_bytes();
        tree.insert(k, &v).unwrap();
        batch_model.insert(k.to_vec(), v.to_vec());
    }
    let levels = genuine_levels(&tree);
    assert!(levels >= 4, "genuine Sled's tree has only {levels} levels");
    model.trees.insert(b"deep".to_vec(), batch_model);
    drop(tree);
    drop(db);
    check(dir.path(), "deep tree", &model, 5);

    // Removing nine keys in ten thins leaves and index nodes alike until they merge.
    let db = open(dir.path(), 512 * 1024);
    let tree = db.open_tree(b"deep").unwrap();
    let t = model.trees.get_mut(&b"deep"[..]).unwrap();
    for i in 0..310_000u32 {
        if i % 10 != 3 {
            tree.remove(i.to_be_bytes()).unwrap();
            t.remove(&i.to_be_bytes()[..]);
        }
    }
    drop(tree);
    drop(db);
    let census = check(dir.path(), "deep tree thinned", &model, 6);
    eprintln!("deep tree: {levels} levels; after removal {census:?}");
    assert!(census.link(LINK_MERGE_INTENTION) > 0, "{census:?}");
}

#[test]
fn clear_drop_and_recreate_trees() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let mut model = Model::default();
    for cycle in 0..5u64 {
        let db = open(dir.path(), 8192);
        model.touch(DEFAULT_TREE);
        for t in 0..4u8 {
            let name = format!("tree{t}").into_bytes();
            for _ in 0..300 {
                let k = key(&mut rng, 0, 2000);
                model.insert(&db, &name, &k, &value(&mut rng, 30, 3000));
            }
        }
        for _ in 0..100 {
            let k = key(&mut rng, 1, 1000);
            model.insert(&db, DEFAULT_TREE, &k, &value(&mut rng, 0, 0));
        }
        match cycle % 3 {
            0 => {
                db.open_tree(b"tree1").unwrap().clear().unwrap();
                model.trees.get_mut(&b"tree1"[..]).unwrap().clear();
                db.clear().unwrap();
                model.trees.get_mut(DEFAULT_TREE).unwrap().clear();
            }
            1 => {
                assert!(db.drop_tree(b"tree2").unwrap());
                model.trees.remove(&b"tree2"[..]);
            }
            _ => {
                assert!(db.drop_tree(b"tree3").unwrap());
                model.trees.remove(&b"tree3"[..]);
                // The same name again: a new root, the old pages freed.
                model.insert(&db, b"tree3", b"reborn", b"yes");
            }
        }
        if cycle == 2 {
            check_live(
                &db,
                dir.path(),
                &format!("clear/drop cycle {cycle} (live)"),
                &model,
                cycle,
            );
        }
        drop(db);
        // Trees dropped at the end are gone; the model recreates dropped ones next cycle.
        check(
            dir.path(),
            &format!("clear/drop cycle {cycle}"),
            &model,
            cycle,
        );
    }
}

#[test]
fn transactions_and_batches() {
    use sled::Transactional;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(8);
    let mut model = Model::default();
    for cycle in 0..4u64 {
        let db = open(dir.path(), 8192);
        model.touch(DEFAULT_TREE);
        let a = db.open_tree(b"accounts").unwrap();
        let b = db.open_tree(b"ledger").unwrap();
        for i in 0..150u32 {
            let ka = key(&mut rng, 0, 500);
            let kb = format!("entry{cycle}-{i}").into_bytes();
            let va = value(&mut rng, 10, 2500);
            (&a, &b)
                .transaction(|(a, b)| {
                    a.insert(ka.as_slice(), va.as_slice())?;
                    b.insert(kb.as_slice(), &ka[..])?;
                    Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
                })
                .unwrap();
            model
                .trees
                .entry(b"accounts".to_vec())
                .or_default()
                .insert(ka.clone(), va.clone());
            model
                .trees
                .entry(b"ledger".to_vec())
                .or_default()
                .insert(kb, ka);

            let mut batch = sled::Batch::default();
            for _ in 0..rng.gen_range(1..20) {
                let k = key(&mut rng, 1, 3000);
                if rng.gen_ratio(1, 3) {
                    batch.remove(k.clone());
                    model
                        .trees
                        .entry(DEFAULT_TREE.to_vec())
                        .or_default()
                        .remove(&k);
                } else {
                    let v = value(&mut rng, 25, 2500);
                    batch.insert(k.clone(), v.clone());
                    model
                        .trees
                        .entry(DEFAULT_TREE.to_vec())
                        .or_default()
                        .insert(k, v);
                }
            }
            db.apply_batch(batch).unwrap();
        }
        drop((a, b));
        let census = check_live(
            &db,
            dir.path(),
            &format!("transactions cycle {cycle} (live)"),
            &model,
            cycle,
        );
        assert!(census.kind(KIND_BATCH_MANIFEST) > 0, "{census:?}");
        drop(db);
        check(
            dir.path(),
            &format!("transactions cycle {cycle}"),
            &model,
            cycle,
        );
    }
}

#[test]
fn fresh_and_nearly_empty_databases() {
    // Opened and closed without a write: Sled wrote its meta page, counter and default tree.
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), 512 * 1024));
    let contents = assert_agree(dir.path(), "fresh database", 0);
    assert_eq!(
        contents.keys().collect::<Vec<_>>(),
        vec![&DEFAULT_TREE.to_vec()]
    );
    // And reopened a few times: each open writes a snapshot over the same few pages.
    for _ in 0..3 {
        drop(open(dir.path(), 512 * 1024));
        assert_agree(dir.path(), "fresh database reopened", 0);
    }
    // A directory Sled never wrote is not a database.
    let empty = tempfile::tempdir().unwrap();
    assert!(sled_readonly::Db::open(empty.path()).is_err());
}

/// The point of a read-only reader: genuine Sled's open of a cleanly closed database changes its
/// files (a new snapshot at least), sled-readonly's leaves every byte and timestamp alone.
#[test]
fn genuine_open_writes_where_sled_readonly_does_not() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open(dir.path(), 8192);
        for i in 0..2000u32 {
            db.insert(i.to_be_bytes(), vec![7u8; (i % 500) as usize])
                .unwrap();
        }
    }
    settle(dir.path());
    let before = DirState::capture(dir.path());
    let ours = sled_readonly::Db::open(dir.path()).unwrap();
    let read = read_ours(&ours);
    assert_eq!(read.entries(DEFAULT_TREE).len(), 2000);
    drop(ours);
    let after = DirState::capture(dir.path());
    assert!(
        before == after,
        "sled-readonly changed the directory:\n{}",
        before.diff(&after)
    );

    std::thread::sleep(std::time::Duration::from_millis(20)); // distinct modification times
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), copy.path());
    let copy_before = DirState::capture(copy.path());
    let genuine = sled_config(copy.path()).open().unwrap();
    assert_eq!(genuine.len(), 2000);
    drop(genuine);
    let copy_after = DirState::capture(copy.path());
    let diff = copy_before.diff(&copy_after);
    assert!(
        !diff.is_empty(),
        "genuine Sled's open left the copy unchanged"
    );
    eprintln!("genuine Sled's open changed:\n{diff}");
}
