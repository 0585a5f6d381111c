//! Reads the Sled crypto store of matrix-bot-sdk 0.6–0.7 bots and streams their Megolm room keys.
//!
//! The flow: [`StoreLocation`] finds and checks the folder → [`SledStore::open`] locks the source,
//! recovers the Sled database read-only (`sled-readonly`; Sled's own open would write to it) and
//! unlocks the store cipher →
//! [`SledStore::sessions`] yields every entry as a [`RoomKey`] or a classified [`DamagedEntry`];
//! [`SledStore::entries`] walks any other tree the same way (what `convert` reads).

pub mod cipher;
pub mod error;
mod fast_json;
pub mod inspect;
pub mod locate;
pub mod lock;
mod memory;
pub mod room_key;
pub mod scan;
pub mod store;

pub use cipher::{CipherFormat, StoreCipher};
pub use error::{Damage, DamageKind, OpenError};
pub use locate::StoreLocation;
pub use room_key::{decode_pickle, decode_value, open_value, Plaintext, RoomKey, SessionKey};
pub use memory::release_freed_memory;
pub use scan::{DamagedEntry, Decoder, LeafItem, LeafScanner, ScanItem, ScannedKey, SessionScanner, TreeScanner};
pub use sled_readonly::Leaf;
pub use store::{OpenOptions, SledStore, StoreInfo};
