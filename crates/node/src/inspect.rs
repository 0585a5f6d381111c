//! `inspect`: thin face over `sqlite_convert::inspect`. The full read runs on its own thread; the
//! report comes back as JSON (counts, versions, IDs, public keys: never key material).

use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::errors::open_error;
use crate::job::Outcome;

#[napi(object)]
pub struct InspectRequest {
    pub crypto_store_path: String,
    /// The Sled store passphrase (default "").
    pub passphrase: Option<String>,
    /// The SQLite store's passphrase (default: the Sled one, as matrix-bot-sdk passes "" to both).
    pub sqlite_passphrase: Option<String>,
}

/// The report as JSON (`Inspection` in src/pipeline/inspect.ts).
#[napi]
pub async fn inspect_store(request: InspectRequest) -> Result<String> {
    let passphrase = request.passphrase.unwrap_or_default();
    let sqlite_passphrase = request.sqlite_passphrase.unwrap_or_else(|| passphrase.clone());
    let dir = std::path::PathBuf::from(request.crypto_store_path);
    let done = Outcome::spawn("inspect", move || {
        let report = sqlite_convert::inspect::inspect(&dir, &passphrase, Some(&sqlite_passphrase)).map_err(open_error)?;
        serde_json::to_string(&report).map_err(|e| Error::from_reason(e.to_string()))
    })?;
    done.wait().await
}
