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

    #[test]
    fn happy_path_applies() {
        let a = AttemptId::new();
        assert_eq!(
            decide(&view(TaskStatus::Dispatched, a), a, ReportAction::Start),
            Decision::Apply
        );
        assert_eq!(
            decide(&view(TaskStatus::Running, a), a, ReportAction::Progress),
            Decision::Apply
        );
        assert_eq!(
            decide(&view(TaskStatus::Running, a), a, ReportAction::Complete),
            Decision::Apply
        );
    }

    #[test]
    fn repeats_are_already_applied() {
        let a = AttemptId::new();
        assert_eq!(
            decide(&view(TaskStatus::Running, a), a, ReportAction::Start),
            Decision::AlreadyApplied
        );
        assert_eq!(
            decide(&view(TaskStatus::Completed, a), a, ReportAction::Complete),
            Decision::AlreadyApplied
        );
        let mut requeued = view(TaskStatus::Queued, a);
        requeued.failed_by_agent = true;
        assert_eq!(
            decide(&requeued, a, ReportAction::Fail),
            Decision::AlreadyApplied
        );
        assert_eq!(
            decide(&requeued, a, ReportAction::Complete),
            Decision::Superseded
        );
    }

    #[test]
    fn attempts_the_server_ended_are_superseded_even_for_a_repeat() {
        let a = AttemptId::new();
        let mut requeued = view(TaskStatus::Queued, a);
        requeued.failed_by_agent = false;
        assert_eq!(
            decide(&requeued, a, ReportAction::Fail),
            Decision::Superseded
        );
        let mut timed_out = view(TaskStatus::Failed, a);
        timed_out.failed_by_agent = false;
        for act in [
            ReportAction::Start,
            ReportAction::Fail,
            ReportAction::Complete,
        ] {
            assert_eq!(decide(&timed_out, a, act), Decision::Superseded);
        }
    }

    #[test]
    fn wrong_state_is_invalid() {
        let a = AttemptId::new();
        assert_eq!(
            decide(&view(TaskStatus::Dispatched, a), a, ReportAction::Complete),
            Decision::Invalid
        );
        assert_eq!(
            decide(&view(TaskStatus::Dispatched, a), a, ReportAction::Progress),
            Decision::Invalid
        );
        assert_eq!(
            decide(&view(TaskStatus::Completed, a), a, ReportAction::Fail),
            Decision::Invalid
        );
    }

    #[test]
    fn cancelled_attempt_is_superseded() {
        let a = AttemptId::new();
        assert_eq!(
            decide(&view(TaskStatus::Cancelled, a), a, ReportAction::Complete),
            Decision::Superseded
        );
    }
}
