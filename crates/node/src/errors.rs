//! Errors cross into JavaScript as JSON in the message (`{"code","message","hint"}`), parsed back into
//! a typed `StoreError` by `src/store/native.ts`: one code per failure, mapped to exit codes there.

use sled_store::OpenError;

pub fn coded(code: &str, message: impl std::fmt::Display, hint: &str) -> napi::Error {
    let body = serde_json::json!({ "code": code, "message": message.to_string(), "hint": hint });
    napi::Error::from_reason(body.to_string())
}

pub fn open_error(e: OpenError) -> napi::Error {
    coded(e.code(), &e, e.hint())
}

pub fn invalid_argument(message: impl std::fmt::Display) -> napi::Error {
    coded("INVALID_ARGUMENT", message, "check the command's arguments")
}
