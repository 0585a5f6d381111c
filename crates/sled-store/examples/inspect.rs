//! Prints `inspect`'s summary of a crypto store folder as JSON: `cargo run --example inspect -- DIR [PASSPHRASE]`.
fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: inspect DIR [PASSPHRASE]");
    let passphrase = args.next().unwrap_or_default();
    let location = sled_store::StoreLocation::new(dir);
    match sled_store::inspect::inspect(&location, &passphrase) {
        Ok((summary, _)) => println!("{}", serde_json::to_string_pretty(&summary).unwrap()),
        Err(e) => eprintln!("{}: {e}", e.code()),
    }
}
