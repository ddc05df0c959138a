//! What a call can fail with. A refusal by the server carries its problem body, whose `code` is
//! stable (`attempt_superseded`, `runtime_offline`, …): match on [`Error::code`].

use paddock_api::{ErrorCode, Problem};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server refused the call with a problem+json body.
    #[error("{problem}")]
    Api {
        status: u16,
        problem: Problem,
        /// `Retry-After`, when the server sent one (429).
        retry_after: Option<std::time::Duration>,
    },
    /// The server answered with a status and a body that is not a problem.
    #[error("unexpected answer {status}: {body}")]
    Status { status: u16, body: String },
    /// The request did not get an answer (connection refused or reset, timed out).
    #[error("transport: {0}")]
    Transport(#[from] reqwest::Error),
    /// The answer's body is not what the API promises.
    #[error("cannot read the answer of {what}: {source}")]
    Decode {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// The WebSocket could not be opened or broke.
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    /// A URL could not be built from the server address.
    #[error("invalid server address: {0}")]
    Url(#[from] url::ParseError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The problem's stable code, when the server refused the call.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Api { problem, .. } => Some(problem.code),
            _ => None,
        }
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } | Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether repeating the same call may succeed: no answer, or an answer that says "later"
    /// (429, 502, 503, 504). A final refusal (4xx) is not.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport(e) => !e.is_builder() && !e.is_decode(),
            Self::Api { status, .. } | Self::Status { status, .. } => {
                matches!(status, 429 | 502 | 503 | 504)
            }
            Self::WebSocket(_) => true,
            Self::Decode { .. } | Self::Url(_) => false,
        }
    }
}
