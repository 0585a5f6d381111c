//! Work that runs on its own thread (a folder copy, a conversion): the thread sends its result
//! once, JavaScript's `wait()` takes it once.

use std::sync::Mutex;

use napi::bindgen_prelude::*;
use tokio::sync::oneshot;

pub struct Outcome<T> {
    thread: &'static str,
    result: Mutex<Option<oneshot::Receiver<Result<T>>>>,
}

impl<T: Send + 'static> Outcome<T> {
    /// Runs `work` on a new thread named `thread`; its result waits here.
    pub fn spawn(
        thread: &'static str,
        work: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<Self> {
        let (tx, rx) = oneshot::channel();
        std::thread::Builder::new()
            .name(thread.into())
            .spawn(move || {
                let _ = tx.send(work());
            })
            .map_err(|e| Error::from_reason(e.to_string()))?;
        Ok(Outcome {
            thread,
            result: Mutex::new(Some(rx)),
        })
    }

    pub async fn wait(&self) -> Result<T> {
        let rx = self
            .result
            .lock()
            .ok()
            .and_then(|mut d| d.take())
            .ok_or_else(|| Error::from_reason("wait() called twice"))?;
        rx.await.map_err(|_| {
            Error::from_reason(format!("the {} thread ended without a result", self.thread))
        })?
    }
}
