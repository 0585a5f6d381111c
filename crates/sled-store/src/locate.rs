//! Where a matrix-bot-sdk crypto store lives: `RustSdkCryptoStorageProvider(dir)` keeps
//! `dir/bot-sdk.json` (the device ID) and the Sled DB in `dir/matrix-sdk-crypto/`.

use std::path::{Path, PathBuf};

use crate::error::OpenError;

pub const SLED_DIR_NAME: &str = "matrix-sdk-crypto";
pub const BOT_SDK_JSON: &str = "bot-sdk.json";
pub const SQLITE_STORE_NAME: &str = "matrix-sdk-crypto.sqlite3";

#[derive(Debug, Clone)]
pub struct StoreLocation {
    /// What the bot calls its crypto store path (`CRYPTO_STORE_PATH`).
    pub crypto_store_dir: PathBuf,
}

impl StoreLocation {
    pub fn new(crypto_store_dir: impl Into<PathBuf>) -> Self {
        StoreLocation {
            crypto_store_dir: crypto_store_dir.into(),
        }
    }

    pub fn sled_dir(&self) -> PathBuf {
        self.crypto_store_dir.join(SLED_DIR_NAME)
    }

    pub fn sled_db_file(&self) -> PathBuf {
        self.sled_dir().join("db")
    }

    pub fn bot_sdk_json(&self) -> PathBuf {
        self.crypto_store_dir.join(BOT_SDK_JSON)
    }

    pub fn sqlite_store(&self) -> PathBuf {
        self.crypto_store_dir.join(SQLITE_STORE_NAME)
    }

    /// Checks that the folder holds a Sled 0.34 database before anything opens it.
    pub fn check(&self) -> Result<(), OpenError> {
        if !self.crypto_store_dir.is_dir() {
            return Err(OpenError::NotFound(self.crypto_store_dir.clone()));
        }
        let sled_dir = self.sled_dir();
        let conf = sled_dir.join("conf");
        if !sled_dir.is_dir() || !conf.is_file() || !self.sled_db_file().is_file() {
            return Err(OpenError::NotASledStore(self.crypto_store_dir.clone()));
        }
        let conf_bytes = std::fs::read(&conf)
            .map_err(|e| OpenError::io(format!("cannot read {}", conf.display()), e))?;
        let text = String::from_utf8_lossy(&conf_bytes);
        match text.lines().find_map(|l| l.strip_prefix("version:")) {
            Some(v) if v.trim() == "0.34" => Ok(()),
            Some(v) => Err(OpenError::UnsupportedSledVersion {
                path: sled_dir,
                found: v.trim().to_owned(),
            }),
            None => Err(OpenError::NotASledStore(self.crypto_store_dir.clone())),
        }
    }

    /// The device ID that bot-sdk recorded, if the file is there.
    pub fn device_id(&self) -> Result<Option<String>, OpenError> {
        read_device_id(&self.bot_sdk_json())
    }
}

fn read_device_id(path: &Path) -> Result<Option<String>, OpenError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(OpenError::io(format!("cannot read {}", path.display()), e)),
    };
    let invalid = |detail: String| OpenError::InvalidBotSdkJson {
        path: path.to_owned(),
        detail,
    };
    let json: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    match json.get("deviceId") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(invalid("deviceId is not a non-empty string".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_folders() {
        let dir = tempfile::tempdir().unwrap();
        let loc = StoreLocation::new(dir.path().join("missing"));
        assert!(matches!(loc.check(), Err(OpenError::NotFound(_))));
        let loc = StoreLocation::new(dir.path());
        assert!(matches!(loc.check(), Err(OpenError::NotASledStore(_))));
        std::fs::create_dir(loc.sled_dir()).unwrap();
        std::fs::write(loc.sled_dir().join("db"), b"").unwrap();
        std::fs::write(
            loc.sled_dir().join("conf"),
            b"segment_size: 524288\nversion: 0.31\n",
        )
        .unwrap();
        assert!(matches!(
            loc.check(),
            Err(OpenError::UnsupportedSledVersion { .. })
        ));
        std::fs::write(
            loc.sled_dir().join("conf"),
            b"segment_size: 524288\nversion: 0.34\n",
        )
        .unwrap();
        loc.check().unwrap();
    }

    #[test]
    fn reads_the_device_id() {
        let dir = tempfile::tempdir().unwrap();
        let loc = StoreLocation::new(dir.path());
        assert_eq!(loc.device_id().unwrap(), None);
        std::fs::write(loc.bot_sdk_json(), br#"{"deviceId":"ABCDEF","rooms":{}}"#).unwrap();
        assert_eq!(loc.device_id().unwrap().as_deref(), Some("ABCDEF"));
        std::fs::write(loc.bot_sdk_json(), b"{not json").unwrap();
        assert!(matches!(
            loc.device_id(),
            Err(OpenError::InvalidBotSdkJson { .. })
        ));
    }
}
