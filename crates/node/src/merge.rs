//! `merge`: thin face over `sqlite_convert::merge`, run as a [`ConvertJob`] (progress polled, the
//! report awaited as JSON: counts, IDs, public identity keys and damage descriptions, never key
//! material).

use std::path::PathBuf;

use napi::bindgen_prelude::*;
use napi_derive::napi;
use sqlite_convert::{MergeOptions, MergeSource};

use crate::convert::ConvertJob;

#[napi(object)]
pub struct MergeRequest {
    pub crypto_store_path: String,
    /// The Sled store passphrase.
    pub passphrase: Option<String>,
    /// The SQLite store's passphrase (matrix-bot-sdk 0.8 passes "").
    pub sqlite_passphrase: String,
    /// Merge the keys of this file instead of the Sled store's.
    pub key_file: Option<String>,
    pub export_passphrase: Option<String>,
    pub dry_run: bool,
    pub skip_errors: bool,
    pub force: bool,
}

#[napi]
pub fn start_merge(request: MergeRequest) -> Result<ConvertJob> {
    let mut options = MergeOptions::new(&request.crypto_store_path);
    options.sled_passphrase = request.passphrase.unwrap_or_default();
    options.sqlite_passphrase = Some(request.sqlite_passphrase);
    if let Some(path) = request.key_file {
        options.source = MergeSource::KeyFile {
            path: PathBuf::from(path),
            export_passphrase: request.export_passphrase,
        };
    }
    options.dry_run = request.dry_run;
    options.skip_errors = request.skip_errors;
    options.force = request.force;

    ConvertJob::spawn("merge", move |progress| {
        sqlite_convert::merge(&options, progress)
    })
}
