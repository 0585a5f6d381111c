use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use tree_copy::{
    copy_tree, format_checksums, parse_checksums, verify_tree, ChecksumLine, MismatchKind, Progress,
};

fn sample(root: &std::path::Path) {
    fs::create_dir_all(root.join("matrix-sdk-crypto/blobs")).unwrap();
    // larger than a chunk and not a multiple of it
    let big: Vec<u8> = (0..(9 << 20) + 12345)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    fs::write(root.join("matrix-sdk-crypto/db"), &big).unwrap();
    fs::write(
        root.join("matrix-sdk-crypto/conf"),
        b"segment_size: 524288\n",
    )
    .unwrap();
    fs::write(root.join("matrix-sdk-crypto/blobs/1"), b"").unwrap();
    fs::write(root.join("bot-sdk.json"), b"{\"deviceId\":\"ABC\"}").unwrap();
    fs::set_permissions(root.join("bot-sdk.json"), fs::Permissions::from_mode(0o640)).unwrap();
}

fn lines(report: &tree_copy::CopyReport, prefix: &str) -> Vec<ChecksumLine> {
    report
        .files
        .iter()
        .map(|f| ChecksumLine {
            sha256: f.sha256,
            path: format!("{prefix}/{}", f.relative),
        })
        .collect()
}

#[test]
fn the_copy_is_identical_and_sha256sum_agrees() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("store");
    sample(&src);
    let backup = tmp.path().join("backup");
    fs::create_dir(&backup).unwrap();
    let progress = Progress::default();
    let report = copy_tree(&src, &backup.join("crypto-store-sled"), &progress).unwrap();
    assert_eq!(report.files.len(), 4);
    assert_eq!(
        progress
            .bytes_done
            .load(std::sync::atomic::Ordering::Relaxed),
        report.bytes
    );
    for f in &report.files {
        assert_eq!(
            fs::read(src.join(&f.relative)).unwrap(),
            fs::read(backup.join("crypto-store-sled").join(&f.relative)).unwrap()
        );
    }
    let meta = fs::metadata(backup.join("crypto-store-sled/bot-sdk.json")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    assert_eq!(
        meta.modified().unwrap(),
        fs::metadata(src.join("bot-sdk.json"))
            .unwrap()
            .modified()
            .unwrap()
    );

    fs::write(
        backup.join("checksums.sha256"),
        format_checksums(&lines(&report, "crypto-store-sled")),
    )
    .unwrap();
    let check = Command::new("sha256sum")
        .arg("-c")
        .arg("--quiet")
        .arg("checksums.sha256")
        .current_dir(&backup)
        .status()
        .unwrap();
    assert!(check.success(), "sha256sum -c accepts our list");

    let parsed =
        parse_checksums(&fs::read_to_string(backup.join("checksums.sha256")).unwrap()).unwrap();
    let ignore = ["checksums.sha256"];
    assert_eq!(
        verify_tree(&backup, &parsed, &ignore, &Progress::default()).unwrap(),
        vec![]
    );

    // one flipped byte, one extra file, one missing file: each named
    let db = backup.join("crypto-store-sled/matrix-sdk-crypto/db");
    let mut bytes = fs::read(&db).unwrap();
    bytes[5_000_000] ^= 1;
    fs::write(&db, bytes).unwrap();
    fs::write(backup.join("crypto-store-sled/stray"), b"x").unwrap();
    fs::remove_file(backup.join("crypto-store-sled/matrix-sdk-crypto/conf")).unwrap();
    let mut found = verify_tree(&backup, &parsed, &ignore, &Progress::default()).unwrap();
    found.sort_by(|a, b| a.path.cmp(&b.path));
    let kinds: Vec<_> = found.iter().map(|m| (m.path.as_str(), m.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            (
                "crypto-store-sled/matrix-sdk-crypto/conf",
                MismatchKind::Missing
            ),
            (
                "crypto-store-sled/matrix-sdk-crypto/db",
                MismatchKind::Differs
            ),
            ("crypto-store-sled/stray", MismatchKind::Unexpected),
        ]
    );
}

#[test]
fn refuses_an_existing_destination_and_links() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("store");
    sample(&src);
    let dst = tmp.path().join("exists");
    fs::create_dir(&dst).unwrap();
    assert!(matches!(
        copy_tree(&src, &dst, &Progress::default()),
        Err(tree_copy::TreeError::Exists(_))
    ));
    std::os::unix::fs::symlink("/etc/passwd", src.join("link")).unwrap();
    assert!(matches!(
        copy_tree(&src, &tmp.path().join("new"), &Progress::default()),
        Err(tree_copy::TreeError::Unsupported(_))
    ));
}

#[test]
fn a_cancelled_copy_stops() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("store");
    sample(&src);
    let progress = Progress::default();
    progress.cancel();
    assert!(copy_tree(&src, &tmp.path().join("new"), &progress).is_err());
}
