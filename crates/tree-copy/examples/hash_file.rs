//! `cargo run --release -p tree-copy --example hash_file -- FILE`: SHA-256 of one file through the
//! same read-and-hash pipeline as `backup`, with its rate (to compare with `sha256sum FILE`).

fn main() {
    let path = std::env::args().nth(1).expect("usage: hash_file FILE");
    let t0 = std::time::Instant::now();
    let progress = tree_copy::Progress::default();
    let dir = std::path::Path::new(&path);
    let digests = tree_copy::hash_tree(dir.parent().expect("a file in a folder"), &progress).expect("hash");
    let name = dir.file_name().unwrap().to_str().unwrap();
    let d = digests.iter().find(|d| d.relative == name).expect("the file");
    let secs = t0.elapsed().as_secs_f64();
    let bytes = progress.bytes_done.load(std::sync::atomic::Ordering::Relaxed);
    println!("{}  {}  ({:.2} GB/s over the folder's {} bytes)", hex(&d.sha256), path, bytes as f64 / 1e9 / secs, bytes);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
