//! For the CLI tests (test/merge.test.ts): writes the store an upgraded bot leaves, as
//! tests/merge.rs does. `upgraded-bot-store DIR USER DEVICE [--hold]`: with --hold the store stays
//! open with a write in its log (a running bot) until the process is killed.

#[path = "../tests/common/upgraded.rs"]
mod upgraded;

use std::sync::Arc;

use matrix_sdk_crypto::store::CryptoStore;
use matrix_sdk_sqlite::SqliteCryptoStore;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, user, device, rest @ ..] = &args[..] else {
        eprintln!("usage: upgraded-bot-store DIR USER DEVICE [--hold]");
        std::process::exit(2);
    };
    let dir = std::path::Path::new(dir);
    if rest.iter().any(|a| a == "--hold") {
        let store = Arc::new(SqliteCryptoStore::open(dir, Some("")).await.unwrap());
        store.set_custom_value("running", vec![1]).await.unwrap();
        println!("ready");
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        }
    }
    let (ed25519, _) = upgraded::upgraded_bot_store(dir, user, device, None, None).await;
    println!("{ed25519}");
}
