//! The task state machine and the fencing decision, in one place.
//!
//! A daemon's report (`start`, `progress`, `complete`, `fail`) names the attempt it belongs to. Given
//! the task as it is now, `decide` says whether to apply it, answer 200 because it already took effect
//! (a retry after a lost response), or refuse it (superseded attempt, or wrong state). The SQL that
//! applies a decision re-checks the same predicate (`status` and `attempt_id`) in its WHERE clause.

use crate::ids::AttemptId;

pub use paddock_api::{FailureReason, ReportAction, TaskStatus};

/// What the database says about the task and the reported attempt.
#[derive(Clone, Copy, Debug)]
pub struct TaskView {
    pub status: TaskStatus,
    /// The latest attempt issued (None before the first claim).
    pub attempt_id: Option<AttemptId>,
    /// Whether the latest attempt reached `running`.
    pub started: bool,
    /// The latest attempt ended with a failure its daemon reported (`agent_error`), as opposed to one
    /// the server imposed (runtime offline, timeouts): only the former can be "already applied".
    pub failed_by_agent: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Write the transition.
    Apply,
    /// The same call already took effect for this attempt: answer 200 with the current state.
    AlreadyApplied,
    /// The attempt is not (or no longer) the task's current one: 409 `attempt_superseded`.
    Superseded,
    /// Current attempt, wrong state: 409 `invalid_transition`.
    Invalid,
}

/// Why a daemon report was refused (DESIGN §3); nothing was written for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("task not found")]
    NotFound,
    /// The attempt is not (or no longer) the task's current one.
    #[error("attempt {0} is no longer the current attempt of this task")]
    Superseded(AttemptId),
    /// The current attempt, but the task is in a state this report cannot follow.
    #[error("cannot {action} a {status} task")]
    InvalidTransition {
        action: ReportAction,
        status: TaskStatus,
    },
}

/// The fencing decision for one report.
pub fn decide(view: &TaskView, reported: AttemptId, action: ReportAction) -> Decision {
    use ReportAction as A;
    use TaskStatus as S;

    if view.attempt_id != Some(reported) {
        return Decision::Superseded;
    }
    match (view.status, action) {
        (S::Dispatched, A::Start) => Decision::Apply,
        (S::Dispatched, A::Fail) => Decision::Apply,
        (S::Running, A::Progress | A::Complete | A::Fail) => Decision::Apply,
        (S::Running, A::Start) => Decision::AlreadyApplied,
        (S::Completed, A::Complete) => Decision::AlreadyApplied,
        (S::Completed, A::Start) => Decision::AlreadyApplied,
        // The server ended this attempt (runtime offline, timeout): the daemon no longer owns it.
        (S::Failed, _) if !view.failed_by_agent => Decision::Superseded,
        (S::Failed, A::Fail) => Decision::AlreadyApplied,
        (S::Failed, A::Start) if view.started => Decision::AlreadyApplied,
        // Failed and put back in the queue: only a repeat of the daemon's own failure is "already
        // applied"; the attempt no longer owns the task.
        (S::Queued, A::Fail) if view.failed_by_agent => Decision::AlreadyApplied,
        (S::Queued, _) => Decision::Superseded,
        // A cancelled attempt was revoked: the daemon must drop the work.
        (S::Cancelled, _) => Decision::Superseded,
        _ => Decision::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(status: TaskStatus, attempt: AttemptId) -> TaskView {
        TaskView {
            status,
            attempt_id: Some(attempt),
            started: matches!(status, TaskStatus::Running | TaskStatus::Completed),
            failed_by_agent: status == TaskStatus::Failed,
        }
    }

    #[test]
    fn other_attempt_is_superseded_whatever_the_state() {
        let a = AttemptId::new();
        let b = AttemptId::new();
        for s in [
            TaskStatus::Dispatched,
            TaskStatus::Running,
            TaskStatus::Completed,
        ] {
            for act in [
                ReportAction::Start,
                ReportAction::Complete,
                ReportAction::Fail,
            ] {
                assert_eq!(decide(&view(s, a), b, act), Decision::Superseded);
            }
        }
    }

    /// Each `(status, action, decision)`: the report of the task's own attempt in that state.
    fn assert_decisions(cases: &[(TaskStatus, ReportAction, Decision)]) {
        let a = AttemptId::new();
        for &(status, action, want) in cases {
            let got = decide(&view(status, a), a, action);
            assert_eq!(got, want, "{action} of a {status} task");
        }
    }

    #[test]
    fn decide_follows_the_transition_table() {
        use ReportAction as A;
        use TaskStatus as S;
        assert_decisions(&[
            // The happy path applies.
            (S::Dispatched, A::Start, Decision::Apply),
            (S::Running, A::Progress, Decision::Apply),
            (S::Running, A::Complete, Decision::Apply),
            // A wrong state is invalid; a cancelled attempt is superseded.
            (S::Dispatched, A::Complete, Decision::Invalid),
            (S::Dispatched, A::Progress, Decision::Invalid),
            (S::Completed, A::Fail, Decision::Invalid),
            (S::Cancelled, A::Complete, Decision::Superseded),
        ]);
    }

    #[test]
    fn only_a_repeat_of_what_the_daemon_did_is_already_applied() {
        use ReportAction as A;
        use TaskStatus as S;
        assert_decisions(&[
            (S::Running, A::Start, Decision::AlreadyApplied),
            (S::Completed, A::Complete, Decision::AlreadyApplied),
        ]);
        let a = AttemptId::new();
        let ended = |status, failed_by_agent| TaskView {
            failed_by_agent,
            ..view(status, a)
        };
        // Requeued by its own daemon's failure: that failure repeats; nothing else of it applies.
        assert_eq!(
            decide(&ended(S::Queued, true), a, A::Fail),
            Decision::AlreadyApplied
        );
        assert_eq!(
            decide(&ended(S::Queued, true), a, A::Complete),
            Decision::Superseded
        );
        // Ended by the server (runtime offline, timeouts): superseded, even for a repeat.
        assert_eq!(
            decide(&ended(S::Queued, false), a, A::Fail),
            Decision::Superseded
        );
        for act in [A::Start, A::Fail, A::Complete] {
            assert_eq!(
                decide(&ended(S::Failed, false), a, act),
                Decision::Superseded
            );
        }
    }
}
