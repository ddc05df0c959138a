//! The journal's records: the reports of one attempt, and what replaces a final one the server
//! rejected.

use paddock_api::{
    AttemptId, CompleteBody, FailBody, PostMessages, ProgressBody, RuntimeId, TaskId,
};
use serde::{Deserialize, Serialize};

/// The longest error a replacement `fail` carries, in bytes.
const FALLBACK_ERROR_BYTES: usize = 1000;

/// A journal record.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// The daemon holds this attempt (written as soon as the claim answered).
    Held {
        runtime: RuntimeId,
        task: TaskId,
        attempt: AttemptId,
        number: i32,
    },
    /// The attempt's agent runs as this process group (kept, like `Held`, until the attempt ends:
    /// a daemon that restarts kills what is left of it).
    Spawned {
        pid: u32,
    },
    Start {
        task: TaskId,
        attempt: AttemptId,
    },
    Progress {
        task: TaskId,
        body: ProgressBody,
    },
    Messages {
        task: TaskId,
        body: PostMessages,
    },
    Complete {
        task: TaskId,
        body: CompleteBody,
    },
    Fail {
        task: TaskId,
        body: FailBody,
    },
}

impl Record {
    /// The attempt's final report: once it has its answer, the attempt is no longer held.
    pub(super) fn is_final(&self) -> bool {
        matches!(self, Self::Complete { .. } | Self::Fail { .. })
    }

    /// What to send instead of this final report when the server rejected it (`why`): a `fail`
    /// the server can store — no usage, no session, a short error. `None` when this report is
    /// that already, or is not final.
    pub(super) fn fallback(&self, why: &str) -> Option<Record> {
        let (task, attempt_id, error, retryable) = match self {
            Self::Complete { task, body } => (
                *task,
                body.attempt_id,
                format!("the server refused the agent's result: {why}"),
                false,
            ),
            Self::Fail { task, body }
                if body.usage.is_some()
                    || body.session.is_some()
                    || body.error.len() > FALLBACK_ERROR_BYTES =>
            {
                (*task, body.attempt_id, body.error.clone(), body.retryable)
            }
            _ => return None,
        };
        let mut error = error;
        if error.len() > FALLBACK_ERROR_BYTES {
            let mut cut = FALLBACK_ERROR_BYTES;
            while !error.is_char_boundary(cut) {
                cut -= 1;
            }
            error.truncate(cut);
        }
        Some(Self::Fail {
            task,
            body: FailBody {
                attempt_id,
                error,
                retryable,
                usage: None,
                session: None,
            },
        })
    }

    pub(super) fn what(&self) -> &'static str {
        match self {
            Self::Held { .. } => "held",
            Self::Spawned { .. } => "spawned",
            Self::Start { .. } => "start",
            Self::Progress { .. } => "progress",
            Self::Messages { .. } => "messages",
            Self::Complete { .. } => "complete",
            Self::Fail { .. } => "fail",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paddock_api::{Session, Usage};

    fn ids() -> (TaskId, AttemptId) {
        (
            TaskId::from(uuid::Uuid::new_v4()),
            AttemptId::from(uuid::Uuid::new_v4()),
        )
    }

    #[test]
    fn a_rejected_completion_becomes_a_plain_failure_that_says_why() {
        let (task, attempt_id) = ids();
        let complete = Record::Complete {
            task,
            body: CompleteBody {
                attempt_id,
                result: Default::default(),
                usage: Some(Usage::default()),
                session: None,
            },
        };
        let Some(Record::Fail { task: t, body }) = complete.fallback("422 too large") else {
            panic!("no fallback");
        };
        assert_eq!(t, task);
        assert_eq!(body.attempt_id, attempt_id);
        assert_eq!(
            body.error,
            "the server refused the agent's result: 422 too large"
        );
        assert!(!body.retryable && body.usage.is_none() && body.session.is_none());
        // The replacement is final and minimal: rejecting it too ends the chain.
        assert!(Record::Fail { task, body }.fallback("again").is_none());
    }

    #[test]
    fn a_rejected_failure_is_sent_again_without_usage_session_or_a_long_error() {
        let (task, attempt_id) = ids();
        let fail = Record::Fail {
            task,
            body: FailBody {
                attempt_id,
                error: "é".repeat(FALLBACK_ERROR_BYTES),
                retryable: true,
                usage: None,
                session: Some(Session {
                    id: "s".into(),
                    work_dir: None,
                }),
            },
        };
        let Some(Record::Fail { body, .. }) = fail.fallback("422") else {
            panic!("no fallback");
        };
        assert_eq!(body.error.len(), FALLBACK_ERROR_BYTES);
        assert!(body.retryable && body.session.is_none());
        let start = Record::Start {
            task,
            attempt: attempt_id,
        };
        assert!(
            start.fallback("422").is_none(),
            "only final reports are replaced"
        );
    }
}
