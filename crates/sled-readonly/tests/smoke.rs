use std::ops::Bound;

#[test]
fn reads_what_sled_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = std::collections::BTreeMap::new();
    {
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let t = db.open_tree("inbound_group_sessions").unwrap();
        for i in 0..5000u32 {
            let k = format!("room{}\u{ff}session{:06}", i % 7, i).into_bytes();
            let v = vec![(i % 251) as u8; 3000 + (i as usize % 1500)];
            t.insert(&k, v.clone()).unwrap();
            expected.insert(k, v);
        }
        for i in (0..5000u32).step_by(3) {
            let k = format!("room{}\u{ff}session{:06}", i % 7, i).into_bytes();
            t.remove(&k).unwrap();
            expected.remove(&k);
        }
        db.insert("store_version", &[7u8]).unwrap();
        db.flush().unwrap();
    }
    let db = sled_readonly::Db::open(dir.path()).unwrap();
    let names: Vec<_> = db
        .tree_names()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    assert!(
        names.contains(&"inbound_group_sessions".to_string()),
        "{names:?}"
    );
    assert_eq!(
        db.get(sled_readonly::DEFAULT_TREE, b"store_version")
            .unwrap()
            .as_deref()
            .map(|v| v.to_vec()),
        Some(vec![7u8])
    );
    let got: Vec<_> =
        sled_readonly::Scan::new(db.clone(), b"inbound_group_sessions", Bound::Unbounded)
            .entries()
            .map(|e| e.unwrap())
            .map(|(k, v)| (k, v.to_vec()))
            .collect();
    let want: Vec<_> = expected.into_iter().collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want);
}
