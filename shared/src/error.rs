//! The error body of every Synaxis API, in the OpenAI shape so that OpenAI SDKs parse it.

use serde::{Deserialize, Serialize};

/// `{"error": {...}}`, the body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The fields of an error: a human-readable message, a broad type, a stable machine code and,
/// for invalid input, the offending parameter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub code: Option<String>,
    pub param: Option<String>,
}
