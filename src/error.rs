//! Expected rejections: domain values that map one-to-one onto docs/API.md's error table.
//!
//! Operational failures (I/O, corruption) are per-layer enums elsewhere; programmer errors are
//! assertions. An [`ApiError`] is what a client is told, so its message never holds a secret.

use std::fmt;

/// The CODE column of docs/API.md's error table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    BadRequest,
    /// No token, or one that is not a credential we accept now (docs/API.md "Tokens").
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    Expired,
    QuorumNotMet,
    TooLarge,
    HeadersTooLarge,
    Busy,
    Unavailable,
    StorageFull,
}

impl Code {
    pub fn status(self) -> u16 {
        match self {
            Code::BadRequest => 400,
            Code::Unauthorized => 401,
            Code::Forbidden => 403,
            Code::NotFound => 404,
            Code::MethodNotAllowed => 405,
            Code::Conflict => 409,
            Code::Expired => 410,
            Code::QuorumNotMet => 412,
            Code::TooLarge => 413,
            Code::HeadersTooLarge => 431,
            Code::Busy => 429,
            Code::Unavailable => 503,
            Code::StorageFull => 507,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Code::BadRequest => "bad_request",
            Code::Unauthorized => "unauthorized",
            Code::Forbidden => "forbidden",
            Code::NotFound => "not_found",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::Conflict => "conflict",
            Code::Expired => "expired",
            Code::QuorumNotMet => "quorum_not_met",
            Code::TooLarge => "too_large",
            Code::HeadersTooLarge => "headers_too_large",
            Code::Busy => "busy",
            Code::Unavailable => "unavailable",
            Code::StorageFull => "storage_full",
        }
    }
}

/// A rejection with the message the client sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    /// Seconds after which a retry may succeed (a load-shedding refusal), told to HTTP clients
    /// as `Retry-After`.
    pub retry_after_secs: Option<u32>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }
    /// The same refusal, telling the client when a retry may succeed.
    pub fn retry_after(mut self, secs: u32) -> ApiError {
        self.retry_after_secs = Some(secs);
        self
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::BadRequest, message)
    }
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::Forbidden, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::Conflict, message)
    }
    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::TooLarge, message)
    }
    pub fn busy(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::Busy, message)
    }
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::Unavailable, message)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for ApiError {}
