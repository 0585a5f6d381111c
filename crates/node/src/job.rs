//! Work that runs on its own thread (a folder copy, a conversion): the thread sends its result
//! once, JavaScript's `wait()` takes it once.

use std::sync::Mutex;

use napi::bindgen_prelude::*;
use tokio::sync::oneshot;

pub struct Outcome<T>(Mutex<Option<oneshot::Receiver<Result<T>>>>);

impl<T> Outcome<T> {
    pub fn new() -> (oneshot::Sender<Result<T>>, Self) {
        let (tx, rx) = oneshot::channel();
        (tx, Outcome(Mutex::new(Some(rx))))
    }

    /// `what` names the thread in the error if it ended without a result (it panicked).
    pub async fn wait(&self, what: &str) -> Result<T> {
        let rx = self
            .0
            .lock()
            .ok()
            .and_then(|mut d| d.take())
            .ok_or_else(|| Error::from_reason("wait() called twice"))?;
        rx.await
            .map_err(|_| Error::from_reason(format!("the {what} thread ended without a result")))?
    }
}
