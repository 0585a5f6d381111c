//! `convert`: thin face over `sqlite-convert`. The conversion runs on its own thread; JavaScript
//! polls `progress()` for its progress line and awaits `wait()` for the report (as JSON: counts,
//! IDs, public identity keys and damage descriptions, never key material).

use std::sync::{Arc, Mutex};

use napi::bindgen_prelude::*;
use napi_derive::napi;
use sqlite_convert::{ConvertError, ConvertOptions, Progress, TokenOwner};

use crate::errors::coded;
use crate::job::Outcome;

#[napi(object)]
pub struct ConvertRequest {
    pub crypto_store_path: String,
    /// The Sled store passphrase.
    pub passphrase: Option<String>,
    /// The SQLite store's passphrase; absent: "", what matrix-bot-sdk 0.8 passes (never the Sled
    /// one: a bot that had a Sled passphrase could not open its converted store).
    pub sqlite_passphrase: Option<String>,
    /// The user and device of the bot's access token (whoami), when the caller asked the homeserver.
    pub token_user_id: Option<String>,
    pub token_device_id: Option<String>,
    pub dry_run: bool,
    pub skip_errors: bool,
    pub force: bool,
}

#[napi(object)]
#[derive(Clone, Default)]
pub struct ConvertProgress {
    /// The Sled tree being converted.
    pub stage: String,
    /// Entries of that tree converted so far.
    pub done: i64,
}

/// A conversion or a merge running on its own thread.
#[napi]
pub struct ConvertJob {
    progress: Arc<Mutex<ConvertProgress>>,
    done: Outcome<String>,
}

impl ConvertJob {
    /// Runs `work` on its own thread; its progress is polled, its report (as JSON) awaited.
    pub(crate) fn spawn<R: serde::Serialize>(
        name: &'static str,
        work: impl FnOnce(&mut dyn FnMut(Progress)) -> std::result::Result<R, ConvertError>
            + Send
            + 'static,
    ) -> Result<Self> {
        let progress = Arc::new(Mutex::new(ConvertProgress::default()));
        let shared = progress.clone();
        let done = Outcome::spawn(name, move || {
            let mut report_progress = |p: Progress| {
                if let Ok(mut slot) = shared.lock() {
                    *slot = ConvertProgress {
                        stage: p.tree.into(),
                        done: p.entries as i64,
                    };
                }
            };
            work(&mut report_progress)
                .map_err(convert_error)
                .and_then(|report| {
                    serde_json::to_string(&report).map_err(|e| Error::from_reason(e.to_string()))
                })
        })?;
        Ok(ConvertJob { progress, done })
    }
}

fn convert_error(e: ConvertError) -> Error {
    coded(e.code(), &e, e.hint())
}

#[napi]
pub fn start_convert(request: ConvertRequest) -> Result<ConvertJob> {
    let mut options = ConvertOptions::new(&request.crypto_store_path);
    options.sqlite_passphrase = Some(request.sqlite_passphrase.unwrap_or_default());
    options.sled_passphrase = request.passphrase.unwrap_or_default();
    options.token_owner = request.token_user_id.map(|user_id| TokenOwner {
        user_id,
        device_id: request.token_device_id,
    });
    options.dry_run = request.dry_run;
    options.skip_errors = request.skip_errors;
    options.force = request.force;

    ConvertJob::spawn("convert", move |progress| {
        sqlite_convert::convert(&options, progress)
    })
}

#[napi]
impl ConvertJob {
    #[napi]
    pub fn progress(&self) -> ConvertProgress {
        self.progress.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// The report as JSON (`ConvertReport` in src/pipeline/convert.ts, `MergeReport` in
    /// src/pipeline/merge.ts).
    #[napi]
    pub async fn wait(&self) -> Result<String> {
        self.done.wait().await
    }
}
