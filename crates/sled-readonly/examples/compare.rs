//! Reads a Sled database both ways and says whether they agree: genuine Sled 0.34 on a private
//! copy (its open writes), and this crate on the original. Every tree, every entry.
//!
//!     cargo run --release -p sled-readonly --example compare -- SLED_DIR

use std::ops::Bound;
use std::time::Instant;

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("usage: compare SLED_DIR"));
    let started = Instant::now();
    let ours = sled_readonly::Db::open(&dir).expect("sled-readonly opens it");
    eprintln!(
        "sled-readonly: open {:.2} s, {:?}",
        started.elapsed().as_secs_f64(),
        ours.recovery()
    );

    let scratch = tempfile::tempdir().unwrap();
    let copy = scratch.path().join("db");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&dir)
        .arg(&copy)
        .status();
    assert!(
        copied.is_ok_and(|s| s.success()),
        "cp -a {} failed",
        dir.display()
    );
    let started = Instant::now();
    // Sled refuses to open a database with another segment size than the one it was made with.
    let segment_size = ours.parameters().segment_size as usize;
    let genuine = sled::Config::new()
        .path(&copy)
        .segment_size(segment_size)
        .open()
        .expect("sled opens the copy");
    eprintln!("sled: open {:.2} s", started.elapsed().as_secs_f64());

    let mut genuine_names: Vec<Vec<u8>> = genuine.tree_names().iter().map(|n| n.to_vec()).collect();
    genuine_names.sort(); // Sled lists them from a hash map
    let our_names: Vec<Vec<u8>> = ours.tree_names().map(<[u8]>::to_vec).collect();
    assert_eq!(our_names, genuine_names, "tree names differ");
    let mut total = 0u64;
    for name in &genuine_names {
        let tree = genuine.open_tree(name).unwrap();
        let mut theirs = tree.iter();
        let mut mine = sled_readonly::Scan::new(ours.clone(), name, Bound::Unbounded).entries();
        let mut n = 0u64;
        loop {
            match (theirs.next(), mine.next()) {
                (None, None) => break,
                (Some(Ok((k1, v1))), Some(Ok((k2, v2)))) => {
                    assert_eq!(
                        &k1[..],
                        &k2[..],
                        "tree {} entry {n}: keys differ",
                        String::from_utf8_lossy(name)
                    );
                    assert!(
                        v1[..] == v2[..],
                        "tree {} entry {n}: values differ",
                        String::from_utf8_lossy(name)
                    );
                }
                (a, b) => panic!(
                    "tree {} entry {n}: sled {:?}, sled-readonly {:?}",
                    String::from_utf8_lossy(name),
                    a.map(|r| r.map(|(k, _)| k)),
                    b.map(|r| r.map(|(k, _)| k))
                ),
            }
            n += 1;
        }
        println!("{:>10}  {}", n, String::from_utf8_lossy(name));
        total += n;
    }
    println!("agree: {} trees, {total} entries", genuine_names.len());
}
