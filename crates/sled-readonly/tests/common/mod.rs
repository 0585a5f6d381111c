//! What the differential tests share: reading a database both ways (genuine Sled 0.34.7 on a
//! private copy, since its open writes; sled-readonly on the original), comparing the two,
//! proving the original untouched, running genuine Sled in a child process where it may panic or
//! hang, and a census of what is on disk, so a test can assert that the feature it is meant to
//! exercise was really there.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;
/// Every tree by name, every entry in key order.
pub type Contents = BTreeMap<Vec<u8>, Entries>;

pub const DEFAULT_TREE: &[u8] = sled_readonly::DEFAULT_TREE;

// ---------------------------------------------------------------------------------------------
// Files

pub fn copy_dir(from: &Path, to: &Path) {
    copy_files(from, to, false);
}

/// A copy of the directory of a running database (after a flush): what a crash at this moment
/// would leave, except for blob files Sled deletes while the copy is made (gone from the copy,
/// as they would be after the crash).
pub fn copy_live_dir(from: &Path, to: &Path) {
    copy_files(from, to, true);
}

fn copy_files(from: &Path, to: &Path, files_may_vanish: bool) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_files(&entry.path(), &target, files_may_vanish);
        } else {
            match std::fs::copy(entry.path(), &target) {
                Ok(_) => {}
                Err(e) if files_may_vanish && e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("copying {}: {e}", entry.path().display()),
            }
        }
    }
}

/// The segment size a database was created with: genuine Sled refuses to open it with another.
pub fn stored_segment_size(dir: &Path) -> usize {
    let conf = std::fs::read(dir.join("conf")).unwrap();
    let text = String::from_utf8_lossy(&conf[..conf.len() - 4]).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("segment_size: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no segment_size in {}", dir.display()))
}

/// Genuine Sled's configuration for an existing directory.
pub fn sled_config(dir: &Path) -> sled::Config {
    sled::Config::new()
        .path(dir)
        .segment_size(stored_segment_size(dir))
}

/// Waits until nothing in `dir` changes any more: Sled's background work (writing its last
/// buffers, deleting blobs of replaced pages) can outlive the `Db` a test dropped.
pub fn settle(dir: &Path) {
    let mut last = DirState::capture(dir);
    for _ in 0..200 {
        std::thread::sleep(Duration::from_millis(25));
        let now = DirState::capture(dir);
        if now == last {
            return;
        }
        last = now;
    }
    panic!("{} keeps changing", dir.display());
}

/// Genuine Sled's open, waiting out the lock a just-dropped `Db`'s background threads may still
/// hold.
pub fn open_when_unlocked(config: &sled::Config) -> sled::Db {
    for _ in 0..200 {
        match config.open() {
            Ok(db) => return db,
            Err(e) if e.to_string().contains("could not acquire lock") => {
                std::thread::sleep(Duration::from_millis(25))
            }
            Err(e) => panic!("genuine Sled cannot open its own database: {e}"),
        }
    }
    panic!("the database stays locked");
}

/// Everything about a directory's files a writer could change: names (directories included),
/// sizes, contents and modification times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirState(BTreeMap<PathBuf, FileState>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    pub is_dir: bool,
    pub len: u64,
    pub modified: SystemTime,
    /// A 64-bit hash of the bytes (files only).
    pub hash: u64,
}

impl DirState {
    pub fn capture(dir: &Path) -> DirState {
        fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, FileState>) {
            let meta = std::fs::metadata(dir).unwrap();
            out.insert(
                dir.strip_prefix(root).unwrap().to_owned(),
                FileState {
                    is_dir: true,
                    len: 0,
                    modified: meta.modified().unwrap(),
                    hash: 0,
                },
            );
            for entry in std::fs::read_dir(dir).unwrap() {
                let entry = entry.unwrap();
                let path = entry.path();
                if entry.file_type().unwrap().is_dir() {
                    walk(root, &path, out);
                } else {
                    // A file Sled's background threads delete while this walks (see `settle`)
                    // is not there: the state without it.
                    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
                    let meta = match entry.metadata() {
                        Err(e) if gone(&e) => continue,
                        other => other.unwrap(),
                    };
                    let bytes = match std::fs::read(&path) {
                        Err(e) if gone(&e) => continue,
                        other => other.unwrap(),
                    };
                    out.insert(
                        path.strip_prefix(root).unwrap().to_owned(),
                        FileState {
                            is_dir: false,
                            len: meta.len(),
                            modified: meta.modified().unwrap(),
                            hash: hash(&bytes),
                        },
                    );
                }
            }
        }
        let mut files = BTreeMap::new();
        walk(dir, dir, &mut files);
        DirState(files)
    }

    /// What differs between two states, for assertion messages ("" when nothing does).
    pub fn diff(&self, after: &DirState) -> String {
        let mut out = String::new();
        for (path, before) in &self.0 {
            match after.0.get(path) {
                None => out += &format!("removed {}\n", path.display()),
                Some(now) if now != before => {
                    out += &format!("changed {}: {before:?} -> {now:?}\n", path.display())
                }
                _ => {}
            }
        }
        for path in after.0.keys().filter(|p| !self.0.contains_key(*p)) {
            out += &format!("added {}\n", path.display());
        }
        out
    }
}

pub fn hash(bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write(bytes);
    h.finish()
}

// ---------------------------------------------------------------------------------------------
// Reading with sled-readonly

/// One item of a sled-readonly scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Entry(Vec<u8>, Vec<u8>),
    Lost(sled_readonly::LostRange),
}

/// What sled-readonly read: every tree, its entries and lost ranges in scan order.
#[derive(Debug, Clone, Default)]
pub struct OurRead {
    pub trees: BTreeMap<Vec<u8>, Vec<Item>>,
    /// Why sled-readonly says Sled's own open would refuse the database it read anyway.
    pub sled_would_refuse: Vec<String>,
}

impl OurRead {
    pub fn entries(&self, tree: &[u8]) -> Entries {
        self.trees
            .get(tree)
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| match i {
                        Item::Entry(k, v) => Some((k.clone(), v.clone())),
                        Item::Lost(_) => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn lost(&self) -> Vec<(Vec<u8>, sled_readonly::LostRange)> {
        let mut out = Vec::new();
        for (name, items) in &self.trees {
            for item in items {
                if let Item::Lost(l) = item {
                    out.push((name.clone(), l.clone()));
                }
            }
        }
        out
    }
}

/// The keys sled-readonly returned, by tree: what genuine Sled's `get` is asked about.
pub fn probe(ours: &Result<OurRead, sled_readonly::Error>) -> BTreeMap<Vec<u8>, Vec<Vec<u8>>> {
    let Ok(read) = ours else {
        return BTreeMap::new();
    };
    read.trees
        .keys()
        .map(|name| {
            (
                name.clone(),
                read.entries(name).into_iter().map(|(k, _)| k).collect(),
            )
        })
        .collect()
}

/// Every tree read in full; a scan that does not move forward after a lost range is cut short
/// (and would fail the comparison), so a reader bug cannot hang the test.
pub fn read_ours(db: &Arc<sled_readonly::Db>) -> OurRead {
    let mut read = OurRead {
        sled_would_refuse: db.recovery().sled_would_refuse.clone(),
        ..OurRead::default()
    };
    for name in db.tree_names() {
        let mut items = Vec::new();
        let mut losses = 0;
        for item in sled_readonly::Scan::new(db.clone(), name, Bound::Unbounded).entries() {
            match item {
                Ok((k, v)) => items.push(Item::Entry(k, v.to_vec())),
                Err(lost) => {
                    losses += 1;
                    items.push(Item::Lost(lost));
                    assert!(
                        losses < 100_000,
                        "sled-readonly reports lost ranges without end"
                    );
                }
            }
        }
        read.trees.insert(name.to_vec(), items);
    }
    read
}

pub fn open_and_read_ours(dir: &Path) -> Result<OurRead, sled_readonly::Error> {
    let db = sled_readonly::Db::open(dir)?;
    Ok(read_ours(&db))
}

// ---------------------------------------------------------------------------------------------
// Reading with genuine Sled, in this process

pub fn read_genuine_db(db: &sled::Db) -> Contents {
    let mut contents = Contents::new();
    for name in db.tree_names() {
        let tree = db.open_tree(&name).unwrap();
        let entries = tree
            .iter()
            .map(|r| r.unwrap())
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        contents.insert(name.to_vec(), entries);
    }
    contents
}

/// Opens `dir` with sled-readonly and genuine Sled (on a private copy) and asserts that they
/// agree on the tree names and on every entry of every tree, that sled-readonly lost nothing,
/// that point reads and scans from inside the trees agree too, and that sled-readonly changed
/// nothing in `dir`. Returns the contents, for the caller's own checks.
pub fn assert_agree(dir: &Path, what: &str, seed: u64) -> Contents {
    let before = DirState::capture(dir);
    let ours = sled_readonly::Db::open(dir)
        .unwrap_or_else(|e| panic!("{what}: sled-readonly cannot open it: {e}"));
    let our_read = read_ours(&ours);

    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir, copy.path());
    let genuine = sled_config(copy.path())
        .open()
        .unwrap_or_else(|e| panic!("{what}: genuine Sled cannot open it: {e}"));
    let theirs = read_genuine_db(&genuine);

    assert_contents_equal(what, &theirs, &our_read);
    assert_point_reads_agree(what, &genuine, &ours, &theirs, seed);

    drop(genuine);
    drop(ours);
    let after = DirState::capture(dir);
    assert!(
        before == after,
        "{what}: sled-readonly changed the directory:\n{}",
        before.diff(&after)
    );
    theirs
}

/// The two reads hold the same trees and entries, and sled-readonly lost nothing. Sled's open
/// creates the default tree when the files hold none (a crash before its first page reached the
/// disk): sled-readonly has no such tree to show, which is only right when Sled's is empty.
pub fn assert_contents_equal(what: &str, theirs: &Contents, ours: &OurRead) {
    let lost = ours.lost();
    assert!(
        lost.is_empty(),
        "{what}: sled-readonly lost ranges genuine Sled reads: {lost:?}"
    );
    let mut their_names: Vec<&Vec<u8>> = theirs.keys().collect();
    if !ours.trees.contains_key(DEFAULT_TREE)
        && theirs.get(DEFAULT_TREE).is_some_and(|e| e.is_empty())
    {
        their_names.retain(|n| n.as_slice() != DEFAULT_TREE);
    }
    let our_names: Vec<&Vec<u8>> = ours.trees.keys().collect();
    assert_eq!(our_names, their_names, "{what}: tree names differ");
    for (name, their_entries) in theirs {
        if !ours.trees.contains_key(name) {
            continue;
        }
        let our_entries = ours.entries(name);
        assert_entries_equal(
            &format!("{what}, tree {}", String::from_utf8_lossy(name)),
            their_entries,
            &our_entries,
        );
    }
}

pub fn assert_entries_equal(what: &str, theirs: &Entries, ours: &Entries) {
    for (i, (t, o)) in theirs.iter().zip(ours).enumerate() {
        assert!(
            t.0 == o.0,
            "{what}: entry {i}: genuine key {:?}, sled-readonly key {:?}",
            show(&t.0),
            show(&o.0)
        );
        assert!(
            t.1 == o.1,
            "{what}: entry {i} (key {:?}): values differ ({} bytes genuine, {} sled-readonly)",
            show(&t.0),
            t.1.len(),
            o.1.len()
        );
    }
    assert_eq!(
        theirs.len(),
        ours.len(),
        "{what}: genuine Sled has {} entries, sled-readonly {} (first extra: {:?})",
        theirs.len(),
        ours.len(),
        theirs
            .get(ours.len())
            .or(ours.get(theirs.len()))
            .map(|e| show(&e.0))
    );
}

pub fn show(key: &[u8]) -> String {
    String::from_utf8_lossy(&key[..key.len().min(64)]).into_owned()
}

/// `Db::get` and scans starting inside the trees (bounds included and excluded, keys present
/// and absent) against genuine Sled's `get` and `range`.
fn assert_point_reads_agree(
    what: &str,
    genuine: &sled::Db,
    ours: &Arc<sled_readonly::Db>,
    theirs: &Contents,
    seed: u64,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x9e37_79b9);
    for (name, entries) in theirs {
        if !ours.has_tree(name) {
            continue;
        }
        let tree = genuine.open_tree(name).unwrap();
        let stride = (entries.len() / 2000).max(1);
        let mut probes: Vec<Vec<u8>> = entries
            .iter()
            .step_by(stride)
            .map(|(k, _)| k.clone())
            .collect();
        for _ in 0..50 {
            probes.push(match rng.gen_range(0..4) {
                // Absent keys next to present ones, and arbitrary ones.
                0 if !entries.is_empty() => {
                    [&entries[rng.gen_range(0..entries.len())].0[..], &[0]].concat()
                }
                1 if !entries.is_empty() => {
                    let k = &entries[rng.gen_range(0..entries.len())].0;
                    k[..rng.gen_range(0..=k.len())].to_vec()
                }
                _ => (0..rng.gen_range(0..12)).map(|_| rng.gen()).collect(),
            });
        }
        probes.push(Vec::new());
        probes.push(vec![0xff; 40]);
        for key in &probes {
            let want = tree.get(key).unwrap().map(|v| v.to_vec());
            let got = ours
                .get(name, key)
                .unwrap_or_else(|e| panic!("{what}: get {:?}: {e}", show(key)))
                .map(|v| v.to_vec());
            assert!(
                want == got,
                "{what}: tree {}: get {:?} differs",
                show(name),
                show(key)
            );
        }
        for key in probes.iter().take(200) {
            for excluded in [false, true] {
                let bound = if excluded {
                    Bound::Excluded(&key[..])
                } else {
                    Bound::Included(&key[..])
                };
                let want: Entries = tree
                    .range::<&[u8], _>((bound, Bound::Unbounded))
                    .take(40)
                    .map(|r| r.unwrap())
                    .map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .collect();
                let got: Entries = sled_readonly::Scan::new(ours.clone(), name, bound)
                    .entries()
                    .take(40)
                    .map(|r| r.unwrap_or_else(|l| panic!("{what}: lost {l:?}")))
                    .map(|(k, v)| (k, v.to_vec()))
                    .collect();
                assert_entries_equal(
                    &format!(
                        "{what}: tree {} from {:?} (excluded: {excluded})",
                        show(name),
                        show(key)
                    ),
                    &want,
                    &got,
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes: this very test binary, run again with CHILD_ENV saying what to do

pub const CHILD_ENV: &str = "SLED_READONLY_TEST_CHILD";

/// Every test that spawns children calls this first: in a child it does the child's work and
/// exits, so the test body never runs there.
pub fn child_dispatch(writers: &dyn Fn(&str, &Path, u64)) {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.splitn(4, '\u{1}').collect();
    match parts[0] {
        "genuine" => {
            genuine_child(
                Path::new(parts[1]),
                Path::new(parts[2]),
                Path::new(parts[3]),
            );
            std::process::exit(0);
        }
        "writer" => {
            writers(parts[1], Path::new(parts[2]), parts[3].parse().unwrap());
            std::process::exit(0);
        }
        other => panic!("unknown child mode {other}"),
    }
}

/// Runs this test binary again, only `test`, as a child doing `spec`.
pub fn spawn_child(test: &str, spec: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, spec)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// What genuine Sled made of a directory.
#[derive(Debug, Clone)]
pub enum Genuine {
    /// It opened; each tree read to its end, or to the error or panic that stopped it.
    Opened(BTreeMap<Vec<u8>, GenuineTree>),
    Refused(String),
    Panicked(String),
    /// Still running after the timeout (killed).
    Hung,
}

#[derive(Debug, Clone, Default)]
pub struct GenuineTree {
    /// What its iterator returned, in order.
    pub entries: Entries,
    /// Why the iteration stopped before the end (an error, or a panic).
    pub error: Option<String>,
    /// Point reads (`Tree::get`, after every tree was iterated) that disagree with the iteration:
    /// of every key the iteration or the caller's probe named, those whose `get` returned
    /// another value, or `None` for a key iterated, or a value for a key not iterated.
    pub get_disagrees: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Keys whose `get` failed.
    pub get_failed: std::collections::BTreeSet<Vec<u8>>,
}

impl GenuineTree {
    /// Genuine Sled's answer for each key by point read: the iteration, corrected by `get`.
    pub fn by_get(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let mut view: BTreeMap<Vec<u8>, Vec<u8>> = self.entries.iter().cloned().collect();
        for (k, v) in &self.get_disagrees {
            match v {
                Some(v) => view.insert(k.clone(), v.clone()),
                None => view.remove(k),
            };
        }
        view
    }
}

impl Genuine {
    /// The outcome without the entries, for messages.
    pub fn summary(&self) -> String {
        match self {
            Genuine::Opened(trees) => trees
                .iter()
                .map(|(n, t)| {
                    format!(
                        "{}: {} entries, {}, {} gets disagree, {} fail",
                        show(n),
                        t.entries.len(),
                        t.error.as_deref().unwrap_or("complete"),
                        t.get_disagrees.len(),
                        t.get_failed.len()
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
            other => format!("{other:?}"),
        }
    }

    pub fn class(&self) -> &'static str {
        match self {
            Genuine::Opened(trees) if trees.values().all(|t| t.error.is_none()) => "opened",
            Genuine::Opened(_) => "opened, a tree unreadable",
            Genuine::Refused(_) => "refused",
            Genuine::Panicked(_) => "panicked",
            Genuine::Hung => "hung",
        }
    }
}

/// Genuine Sled's reading of `dir`, in a child process (it may panic or loop, and it writes):
/// on a private copy, at `copy`. `probe`: more keys, by tree, to ask `get` for after the
/// iteration. Also returns what genuine Sled changed in the copy.
pub fn genuine_in_child(
    test: &str,
    dir: &Path,
    copy: &Path,
    timeout: Duration,
    probe: &BTreeMap<Vec<u8>, Vec<Vec<u8>>>,
) -> (Genuine, String) {
    copy_dir(dir, copy);
    // Distinct modification times for whatever Sled writes.
    std::thread::sleep(Duration::from_millis(10));
    let copied = DirState::capture(copy);
    let genuine = genuine_in_child_inner(test, copy, timeout, probe);
    (genuine, copied.diff(&DirState::capture(copy)))
}

fn genuine_in_child_inner(
    test: &str,
    copy: &Path,
    timeout: Duration,
    probe: &BTreeMap<Vec<u8>, Vec<Vec<u8>>>,
) -> Genuine {
    let out = copy.with_extension("genuine-out");
    let probe_path = copy.with_extension("genuine-probe");
    let _ = std::fs::remove_file(&out);
    let mut buf = Vec::new();
    put_u64(&mut buf, probe.len() as u64);
    for (tree, keys) in probe {
        put_bytes(&mut buf, tree);
        put_u64(&mut buf, keys.len() as u64);
        for k in keys {
            put_bytes(&mut buf, k);
        }
    }
    std::fs::write(&probe_path, &buf).unwrap();
    let mut child = spawn_child(
        test,
        &format!(
            "genuine\u{1}{}\u{1}{}\u{1}{}",
            copy.display(),
            out.display(),
            probe_path.display()
        ),
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > timeout {
            child.kill().unwrap();
            child.wait().unwrap();
            return Genuine::Hung;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let _ = std::fs::remove_file(&probe_path);
    match std::fs::read(&out) {
        Ok(bytes) => {
            let _ = std::fs::remove_file(&out);
            decode_genuine(&bytes)
        }
        // Sled aborted the process (a panic while panicking, or in a thread it cannot unwind).
        Err(_) => Genuine::Panicked(format!("the process died without an answer ({status})")),
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into())
}

/// The child: genuine Sled opens `copy`, iterates every tree, then reads every key it iterated
/// or was asked about with `get`; the outcome goes to `out`.
fn genuine_child(copy: &Path, out: &Path, probe_path: &Path) {
    std::panic::set_hook(Box::new(|_| {}));
    let mut probe: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
    {
        let bytes = std::fs::read(probe_path).unwrap();
        let mut r = &bytes[..];
        for _ in 0..get_u64(&mut r) {
            let tree = get_bytes(&mut r);
            let keys = (0..get_u64(&mut r)).map(|_| get_bytes(&mut r)).collect();
            probe.insert(tree, keys);
        }
    }
    let mut buf = Vec::new();
    let opened = std::panic::catch_unwind(|| sled_config(copy).open());
    let db = match opened {
        Err(p) => {
            put_tag_msg(&mut buf, b'P', &panic_message(p));
            std::fs::write(out, &buf).unwrap();
            return;
        }
        Ok(Err(e)) => {
            put_tag_msg(&mut buf, b'R', &e.to_string());
            std::fs::write(out, &buf).unwrap();
            return;
        }
        Ok(Ok(db)) => db,
    };
    let mut trees: BTreeMap<Vec<u8>, GenuineTree> = BTreeMap::new();
    for name in db.tree_names() {
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut tree = GenuineTree::default();
            let handle = match db.open_tree(&name) {
                Ok(t) => t,
                Err(e) => {
                    tree.error = Some(format!("open_tree: {e}"));
                    return tree;
                }
            };
            for r in handle.iter() {
                match r {
                    Ok((k, v)) => tree.entries.push((k.to_vec(), v.to_vec())),
                    Err(e) => {
                        tree.error = Some(e.to_string());
                        break;
                    }
                }
            }
            tree
        }));
        let tree = read.unwrap_or_else(|p| GenuineTree {
            error: Some(format!("panic: {}", panic_message(p))),
            ..Default::default()
        });
        trees.insert(name.to_vec(), tree);
    }
    for (name, tree) in trees.iter_mut() {
        let iterated: BTreeMap<Vec<u8>, Vec<u8>> = tree.entries.iter().cloned().collect();
        let mut keys: std::collections::BTreeSet<Vec<u8>> = iterated.keys().cloned().collect();
        keys.extend(probe.get(name).into_iter().flatten().cloned());
        for key in keys {
            let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                db.open_tree(name).and_then(|t| t.get(&key))
            }));
            match got {
                Ok(Ok(v)) => {
                    let v = v.map(|v| v.to_vec());
                    if v.as_ref() != iterated.get(&key) {
                        tree.get_disagrees.insert(key, v);
                    }
                }
                _ => {
                    tree.get_failed.insert(key);
                }
            }
        }
    }
    buf.push(b'O');
    put_u64(&mut buf, trees.len() as u64);
    for (name, tree) in &trees {
        put_bytes(&mut buf, name);
        put_u64(&mut buf, tree.entries.len() as u64);
        for (k, v) in &tree.entries {
            put_bytes(&mut buf, k);
            put_bytes(&mut buf, v);
        }
        put_bytes(
            &mut buf,
            tree.error.as_deref().unwrap_or("\u{0}").as_bytes(),
        );
        put_u64(&mut buf, tree.get_disagrees.len() as u64);
        for (k, v) in &tree.get_disagrees {
            put_bytes(&mut buf, k);
            match v {
                Some(v) => {
                    buf.push(1);
                    put_bytes(&mut buf, v);
                }
                None => buf.push(0),
            }
        }
        put_u64(&mut buf, tree.get_failed.len() as u64);
        for k in &tree.get_failed {
            put_bytes(&mut buf, k);
        }
    }
    let mut f = std::fs::File::create(out).unwrap();
    f.write_all(&buf).unwrap();
    f.sync_all().unwrap();
    // Sled's drop flushes and may panic on a damaged store: the answer is already written.
    std::process::exit(0);
}

fn put_u64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_le_bytes());
}
fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    put_u64(buf, b.len() as u64);
    buf.extend_from_slice(b);
}
fn put_tag_msg(buf: &mut Vec<u8>, tag: u8, msg: &str) {
    buf.push(tag);
    put_bytes(buf, msg.as_bytes());
}
fn get_u64(r: &mut &[u8]) -> u64 {
    let mut b = [0u8; 8];
    r.read_exact(&mut b).unwrap();
    u64::from_le_bytes(b)
}
fn get_bytes(r: &mut &[u8]) -> Vec<u8> {
    let n = get_u64(r) as usize;
    let (head, tail) = r.split_at(n);
    *r = tail;
    head.to_vec()
}

fn decode_genuine(bytes: &[u8]) -> Genuine {
    let mut r = &bytes[1..];
    match bytes[0] {
        b'P' => Genuine::Panicked(String::from_utf8_lossy(&get_bytes(&mut r)).into_owned()),
        b'R' => Genuine::Refused(String::from_utf8_lossy(&get_bytes(&mut r)).into_owned()),
        b'O' => {
            let mut trees = BTreeMap::new();
            for _ in 0..get_u64(&mut r) {
                let name = get_bytes(&mut r);
                let mut tree = GenuineTree::default();
                for _ in 0..get_u64(&mut r) {
                    let k = get_bytes(&mut r);
                    let v = get_bytes(&mut r);
                    tree.entries.push((k, v));
                }
                let error = get_bytes(&mut r);
                tree.error = (error != b"\0").then(|| String::from_utf8_lossy(&error).into_owned());
                for _ in 0..get_u64(&mut r) {
                    let k = get_bytes(&mut r);
                    let (tag, rest) = r.split_first().unwrap();
                    r = rest;
                    let v = (*tag == 1).then(|| get_bytes(&mut r));
                    tree.get_disagrees.insert(k, v);
                }
                for _ in 0..get_u64(&mut r) {
                    tree.get_failed.insert(get_bytes(&mut r));
                }
                trees.insert(name, tree);
            }
            Genuine::Opened(trees)
        }
        _ => unreachable!(),
    }
}

/// Judges sled-readonly's reading of an image against genuine Sled's; panics on a discrepancy,
/// returns the image's class otherwise:
///
/// * genuine Sled opened it: sled-readonly must open it too. For every tree, sled-readonly's
///   entries equal genuine Sled's iteration exactly, or, where they do not, they equal what
///   genuine Sled's `get` returns for every key either reader named (sled-readonly follows the
///   index, as `get` does; on a tree a damaged log left inconsistent, Sled's iterator can
///   return entries its own `get` does not see). A tree genuine Sled read to the end, sled-
///   readonly must read without a lost range; where genuine Sled failed, the keys it did answer
///   must agree, except inside ranges sled-readonly reports lost.
/// * genuine Sled refused, panicked or hung: sled-readonly must not claim a clean read (an
///   error, lost ranges, or a read it flags as one Sled would refuse). Where genuine Sled
///   opened the image, sled-readonly must not flag it.
pub fn judge(
    what: &str,
    genuine: &Genuine,
    ours: &Result<OurRead, sled_readonly::Error>,
) -> String {
    let trees = match genuine {
        Genuine::Opened(trees) => trees,
        other => {
            return match ours {
                Err(_) => format!("genuine {}, ours refuses", other.class()),
                Ok(read) if !read.lost().is_empty() => {
                    format!("genuine {}, ours loses ranges", other.class())
                }
                Ok(read) if !read.sled_would_refuse.is_empty() => {
                    format!("genuine {}, ours reads it, flagged", other.class())
                }
                Ok(_) => panic!(
                    "{what}: genuine Sled {}: {other:?}; sled-readonly reads it all without a loss",
                    other.class()
                ),
            }
        }
    };
    let ours = match ours {
        Ok(read) => read,
        Err(e) => panic!(
            "{what}: genuine Sled opens it ({}), sled-readonly refuses: {e}",
            genuine.class()
        ),
    };
    assert!(
        ours.sled_would_refuse.is_empty(),
        "{what}: genuine Sled opens it, sled-readonly says it would not: {:?}",
        ours.sled_would_refuse
    );
    let our_names: Vec<&Vec<u8>> = ours.trees.keys().collect();
    let their_names: Vec<&Vec<u8>> = trees
        .keys()
        .filter(|n| {
            ours.trees.contains_key(*n)
                || n.as_slice() != DEFAULT_TREE
                || !trees[*n].entries.is_empty()
        })
        .collect();
    assert_eq!(our_names, their_names, "{what}: tree names differ");
    let mut exact = true;
    let mut contradicted = false;
    let mut failed = false;
    for (name, tree) in trees {
        let items = ours.trees.get(name).cloned().unwrap_or_default();
        let lost: Vec<&sled_readonly::LostRange> = items
            .iter()
            .filter_map(|i| match i {
                Item::Lost(l) => Some(l),
                Item::Entry(..) => None,
            })
            .collect();
        let entries = ours.entries(name);
        let tree_what = format!("{what}, tree {}", show(name));
        if tree.error.is_none() {
            assert!(
                lost.is_empty(),
                "{tree_what}: genuine Sled reads it all, sled-readonly lost {lost:?}"
            );
            if entries == tree.entries {
                continue;
            }
            exact = false;
            assert!(
                !tree.get_disagrees.is_empty(),
                "{tree_what}: sled-readonly's entries differ from genuine Sled's, whose iteration and get agree"
            );
            contradicted = true;
        } else {
            exact = false;
            failed = true;
        }
        // Key by key: sled-readonly against genuine Sled's point reads.
        let view = tree.by_get();
        let mine: BTreeMap<&[u8], &[u8]> = entries.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        let in_lost = |k: &[u8]| {
            lost.iter()
                .any(|l| k >= l.from.as_slice() && l.to.as_deref().map_or(true, |to| k < to))
        };
        let keys: std::collections::BTreeSet<&[u8]> = view
            .keys()
            .map(|k| &k[..])
            .chain(mine.keys().copied())
            .collect();
        for k in keys {
            if tree.get_failed.contains(k) || in_lost(k) {
                continue;
            }
            let theirs = view.get(k).map(|v| &v[..]);
            let ours = mine.get(k).copied();
            assert!(
                theirs == ours,
                "{tree_what}: key {:?}: genuine Sled's get {:?} bytes, sled-readonly {:?} bytes (genuine iteration: {})",
                show(k),
                theirs.map(<[u8]>::len),
                ours.map(<[u8]>::len),
                tree.error.as_deref().unwrap_or("complete")
            );
        }
    }
    match (exact, contradicted, failed, ours.lost().is_empty()) {
        (true, ..) => "agree".into(),
        (_, _, true, true) => "genuine fails in a tree, ours reads all".into(),
        (_, _, true, false) => "genuine fails in a tree, ours loses ranges".into(),
        _ => "genuine's iteration contradicts its get, ours = its get".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Census: what the log and blobs hold, decoded independently of both readers (only to show that
// a workload produced the on-disk feature it is meant to test)

#[derive(Debug, Default, Clone)]
pub struct Census {
    pub segments: usize,
    /// How many segments' worth of LSNs the log has used: the highest segment LSN over the
    /// segment size, plus one. Past the segments in the file (and the few an open skips), the
    /// log has reused segments it freed.
    pub lsn_span: usize,
    pub blob_files: usize,
    pub snapshots: usize,
    /// Intact messages by kind byte (Sled's `MessageKind`).
    pub kinds: BTreeMap<u8, usize>,
    /// Intact link messages (inline and blob) by link tag: 0 Set, 1 Del, 2 ParentMergeIntention,
    /// 3 ParentMergeConfirm, 4 ChildMergeCap.
    pub links: BTreeMap<u8, usize>,
}

pub const KIND_BATCH_MANIFEST: u8 = 3;
pub const KIND_FREE: u8 = 4;
pub const KIND_BLOB_NODE: u8 = 9;
pub const KIND_BLOB_LINK: u8 = 11;
pub const LINK_MERGE_INTENTION: u8 = 2;
pub const LINK_MERGE_CONFIRM: u8 = 3;
pub const LINK_MERGE_CAP: u8 = 4;

/// One intact message of the log, as the census decodes it.
#[derive(Debug, Clone)]
pub struct Message {
    /// Where it starts in `db`, and its LSN.
    pub offset: u64,
    pub lsn: i64,
    pub kind: u8,
    pub pid: u64,
    /// Header and inline body, in bytes.
    pub len: usize,
    /// The inline body (a blob message's is the blob's LSN).
    pub body: Vec<u8>,
}

/// The intact messages of every segment with an intact header, segments in LSN order, each
/// read from its start to its first damaged message or cap.
pub fn log_messages(dir: &Path) -> Vec<Message> {
    let seg = stored_segment_size(dir);
    let log = std::fs::read(dir.join("db")).unwrap();
    let mut segments = Vec::new();
    for (i, segment) in log.chunks(seg).enumerate() {
        if segment.len() < 20 {
            continue;
        }
        let crc = u32::from_le_bytes(segment[0..4].try_into().unwrap()) ^ 0xFFFF_FFFF;
        if crc32fast::hash(&segment[4..20]) != crc {
            continue;
        }
        let lsn = i64::from_le_bytes(segment[4..12].try_into().unwrap()) ^ i64::MAX;
        segments.push((lsn, i * seg, segment));
    }
    segments.sort_by_key(|s| s.0);
    let mut out = Vec::new();
    for (lsn, base, segment) in segments {
        let mut at = 20;
        while at + 32 <= seg && at < segment.len() {
            let mut probe = [0u8; 128];
            let n = (segment.len() - at).min(128);
            probe[..n].copy_from_slice(&segment[at..at + n]);
            let mut p = &probe[5..];
            let len = varint(&mut p) as usize;
            let _segment_number = varint(&mut p);
            let pid = varint(&mut p);
            let header_len = 128 - p.len();
            let kind = probe[4];
            if kind == 0 || kind > 11 || at + header_len + len > segment.len() {
                break;
            }
            let body = &segment[at + header_len..at + header_len + len];
            let mut h = crc32fast::Hasher::new();
            h.update(body);
            h.update(&probe[4..header_len]);
            if h.finalize() ^ 0xFFFF_FFFF != u32::from_le_bytes(probe[0..4].try_into().unwrap()) {
                break;
            }
            out.push(Message {
                offset: (base + at) as u64,
                lsn: lsn + at as i64,
                kind,
                pid,
                len: header_len + len,
                body: body.to_vec(),
            });
            if kind == 2 {
                break; // a cap: the rest of the segment is unused
            }
            at += header_len + len;
        }
    }
    out
}

impl Census {
    pub fn take(dir: &Path) -> Census {
        let seg = stored_segment_size(dir);
        let log = std::fs::read(dir.join("db")).unwrap();
        let mut c = Census {
            blob_files: std::fs::read_dir(dir.join("blobs"))
                .map(|d| d.count())
                .unwrap_or(0),
            snapshots: std::fs::read_dir(dir)
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with("snap.")
                })
                .count(),
            ..Census::default()
        };
        for segment in log.chunks(seg) {
            if segment.len() >= 20
                && crc32fast::hash(&segment[4..20])
                    == u32::from_le_bytes(segment[0..4].try_into().unwrap()) ^ 0xFFFF_FFFF
            {
                let lsn = i64::from_le_bytes(segment[4..12].try_into().unwrap()) ^ i64::MAX;
                c.segments += 1;
                c.lsn_span = c.lsn_span.max(lsn as usize / seg + 1);
            }
        }
        for m in log_messages(dir) {
            *c.kinds.entry(m.kind).or_default() += 1;
            if m.kind == 10 && !m.body.is_empty() {
                *c.links.entry(m.body[0]).or_default() += 1;
            }
            if m.kind == KIND_BLOB_LINK && m.body.len() == 8 {
                let blob = i64::from_le_bytes(m.body[..].try_into().unwrap());
                if let Ok(b) = std::fs::read(dir.join("blobs").join(blob.to_string())) {
                    if b.len() > 5 {
                        *c.links.entry(b[5]).or_default() += 1;
                    }
                }
            }
        }
        c
    }

    pub fn kind(&self, k: u8) -> usize {
        self.kinds.get(&k).copied().unwrap_or(0)
    }

    pub fn link(&self, l: u8) -> usize {
        self.links.get(&l).copied().unwrap_or(0)
    }

    /// The largest count of each thing seen in either census.
    pub fn max(&mut self, other: &Census) {
        self.segments = self.segments.max(other.segments);
        self.lsn_span = self.lsn_span.max(other.lsn_span);
        self.blob_files = self.blob_files.max(other.blob_files);
        self.snapshots = self.snapshots.max(other.snapshots);
        for (k, v) in &other.kinds {
            let e = self.kinds.entry(*k).or_default();
            *e = (*e).max(*v);
        }
        for (k, v) in &other.links {
            let e = self.links.entry(*k).or_default();
            *e = (*e).max(*v);
        }
    }
}

/// Sled's varint (see codec.rs), for the census.
fn varint(p: &mut &[u8]) -> u64 {
    let first = p[0];
    let (v, n) = match first {
        0..=240 => (u64::from(first), 1),
        241..=248 => (240 + 256 * (u64::from(first) - 241) + u64::from(p[1]), 2),
        249 => (2288 + 256 * u64::from(p[1]) + u64::from(p[2]), 3),
        m => {
            let n = usize::from(m) - 247;
            let mut le = [0u8; 8];
            le[..n].copy_from_slice(&p[1..1 + n]);
            (u64::from_le_bytes(le), 1 + n)
        }
    };
    *p = &p[n..];
    v
}

/// The number of levels of a genuine Sled tree (root index down to the leaves), from Sled's own
/// `Debug` output, which walks the tree level by level.
pub fn genuine_levels(tree: &sled::Tree) -> usize {
    format!("{tree:?}").matches("\tlevel ").count()
}
