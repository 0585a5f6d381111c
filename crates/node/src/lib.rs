//! The napi binding. It holds no logic a Rust test cannot reach: it opens stores, moves batches
//! across threads and converts types. The store logic is in `sled-store`, the cryptography in
//! `megolm-backup`, the SQLite conversion in `sqlite-convert`.

mod backup;
mod convert;
mod errors;
mod inspect;
mod job;
mod lock;
mod merge;
mod pool;
mod stream;
mod tree;
mod verify;

pub use backup::*;
pub use convert::*;
pub use inspect::*;
pub use lock::*;
pub use merge::*;
pub use stream::*;
pub use tree::*;
pub use verify::*;
