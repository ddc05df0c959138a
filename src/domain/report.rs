//! The batch report's planner: which of a batch's reports are written, in which round, and how each
//! is answered — decided before anything is written, from the locked rows alone.
//!
//! A task's k-th report of the batch goes in round k, so that each is judged (`task::decide`) against
//! what the reports before it did, while a round writes every task it names with one statement per
//! action: a batch of "start, complete" for 50 tasks is two rounds. The planner follows each task
//! through the rounds as the writes will leave it. An accepted start whose next report completes the
//! same attempt (and would be accepted once the start is written) is written together with that
//! completion: one row write instead of two, with the same answers and events as the two.

use std::collections::HashMap;

use super::retry::{AfterFailure, Backoff};
use super::task::{Decision, FailureReason, Refusal, ReportAction, TaskStatus, TaskView, decide};
use crate::ids::{AttemptId, TaskId};

/// One report of the batch, as the planner needs it.
#[derive(Clone, Copy, Debug)]
pub struct Item {
    pub task: TaskId,
    pub attempt: AttemptId,
    pub action: ReportAction,
    /// For `fail`: whether the daemon lets the task be retried.
    pub retryable: bool,
}

/// A locked task as the planner follows it.
#[derive(Clone, Copy, Debug)]
pub struct Tracked {
    pub view: TaskView,
    pub attempt: i32,
    pub max_attempts: i32,
}

/// What happens to one report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Written by its own action's statement in its round.
    Write,
    /// A start written by the complete statement together with the completion at this index (the
    /// same task's next report), in the start's round.
    StartWithComplete(usize),
    /// A completion already written with the start before it; answered in its own round.
    WrittenWithStart,
    /// The same call already took effect: answered with the task as it is at its round.
    AlreadyApplied,
    /// Changes nothing.
    Refuse(Refusal),
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Each report's round.
    pub rounds: Vec<usize>,
}

impl Plan {
    /// The number of rounds (0 for an empty batch).
    pub fn round_count(&self) -> usize {
        self.rounds.iter().max().map_or(0, |r| r + 1)
    }

    /// The indices of the reports of `round`, in batch order.
    pub fn round(&self, round: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.rounds.len()).filter(move |&i| self.rounds[i] == round)
    }
}

/// Plans a batch: `tasks` holds the locked tasks the batch names (absent: not found).
pub fn plan(items: &[Item], tasks: &HashMap<TaskId, Tracked>, backoff: Backoff) -> Plan {
    let rounds = rounds_of(items);
    let next = successors(items);
    let mut state = tasks.clone();
    let mut steps: Vec<Option<Step>> = vec![None; items.len()];
    let round_count = rounds.iter().max().map_or(0, |r| r + 1);
    for round in 0..round_count {
        for i in (0..items.len()).filter(|&i| rounds[i] == round) {
            if steps[i].is_some() {
                // A completion planned with its start in the round before.
                continue;
            }
            let item = &items[i];
            let Some(task) = state.get_mut(&item.task) else {
                steps[i] = Some(Step::Refuse(Refusal::NotFound));
                continue;
            };
            steps[i] = Some(match decide(&task.view, item.attempt, item.action) {
                Decision::Apply => match next[i].filter(|&j| completes_after_start(items, i, j)) {
                    Some(j) => {
                        steps[j] = Some(Step::WrittenWithStart);
                        apply(task, item, backoff);
                        apply(task, &items[j], backoff);
                        Step::StartWithComplete(j)
                    }
                    None => {
                        apply(task, item, backoff);
                        Step::Write
                    }
                },
                Decision::AlreadyApplied => Step::AlreadyApplied,
                Decision::Superseded => Step::Refuse(Refusal::Superseded(item.attempt)),
                Decision::Invalid => Step::Refuse(Refusal::InvalidTransition {
                    action: item.action,
                    status: task.view.status,
                }),
            });
        }
    }
    Plan {
        steps: steps
            .into_iter()
            .map(|s| s.expect("every report is planned in its round"))
            .collect(),
        rounds,
    }
}

/// A task's k-th report is in round k.
fn rounds_of(items: &[Item]) -> Vec<usize> {
    let mut seen: HashMap<TaskId, usize> = HashMap::new();
    items
        .iter()
        .map(|it| {
            let n = seen.entry(it.task).or_default();
            *n += 1;
            *n - 1
        })
        .collect()
}

/// Each report's successor: the same task's next report.
fn successors(items: &[Item]) -> Vec<Option<usize>> {
    let mut next = vec![None; items.len()];
    let mut last_of: HashMap<TaskId, usize> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        if let Some(prev) = last_of.insert(item.task, i) {
            next[prev] = Some(i);
        }
    }
    next
}

/// Whether report `j`, the report after `i` of the same task, completes the attempt `i` starts, and
/// `decide` would accept it once the start is written.
fn completes_after_start(items: &[Item], i: usize, j: usize) -> bool {
    let (start, then) = (&items[i], &items[j]);
    let running = TaskView {
        status: TaskStatus::Running,
        attempt_id: Some(start.attempt),
        started: true,
        failed_by_agent: false,
    };
    start.action == ReportAction::Start
        && then.action == ReportAction::Complete
        && decide(&running, then.attempt, ReportAction::Complete) == Decision::Apply
}

/// The task as an accepted report leaves it.
fn apply(task: &mut Tracked, item: &Item, backoff: Backoff) {
    let view = &mut task.view;
    match item.action {
        ReportAction::Start => {
            view.status = TaskStatus::Running;
            view.started = true;
        }
        ReportAction::Progress => {}
        ReportAction::Complete => view.status = TaskStatus::Completed,
        ReportAction::Fail => {
            let after = backoff.after_failure(
                FailureReason::AgentError,
                item.retryable,
                task.attempt,
                task.max_attempts,
            );
            view.status = match after {
                AfterFailure::Requeue { .. } => TaskStatus::Queued,
                AfterFailure::Fail => TaskStatus::Failed,
            };
            view.failed_by_agent = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const B: Backoff = Backoff {
        base: Duration::from_secs(1),
        max: Duration::from_secs(60),
    };

    fn tracked(status: TaskStatus, attempt: AttemptId, max_attempts: i32) -> Tracked {
        Tracked {
            view: TaskView {
                status,
                attempt_id: Some(attempt),
                started: status == TaskStatus::Running,
                failed_by_agent: false,
            },
            attempt: 1,
            max_attempts,
        }
    }

    fn item(task: TaskId, attempt: AttemptId, action: ReportAction) -> Item {
        Item {
            task,
            attempt,
            action,
            retryable: true,
        }
    }

    /// The plan of `reports` (attempt, action), all about one task in `status`.
    fn plan_one(
        status: TaskStatus,
        max_attempts: i32,
        reports: &[(AttemptId, ReportAction)],
    ) -> Plan {
        let (t, current) = (TaskId::new(), reports[0].0);
        let tasks = HashMap::from([(t, tracked(status, current, max_attempts))]);
        let items: Vec<Item> = reports.iter().map(|&(a, act)| item(t, a, act)).collect();
        plan(&items, &tasks, B)
    }

    #[test]
    fn start_then_complete_is_one_write_in_the_first_round() {
        let a = AttemptId::new();
        let plan = plan_one(
            TaskStatus::Dispatched,
            1,
            &[(a, ReportAction::Start), (a, ReportAction::Complete)],
        );
        assert_eq!(
            plan.steps,
            vec![Step::StartWithComplete(1), Step::WrittenWithStart]
        );
        assert_eq!(plan.rounds, vec![0, 1]);
        assert_eq!(plan.round_count(), 2);
    }

    #[test]
    fn each_report_is_judged_after_the_ones_before_it() {
        use ReportAction::{Complete, Fail, Start};
        let (a, b) = (AttemptId::new(), AttemptId::new());
        let invalid = Refusal::InvalidTransition {
            action: Complete,
            status: TaskStatus::Dispatched,
        };
        let cases = [
            // Complete before start: invalid; the start then applies; a second start is a repeat.
            (
                TaskStatus::Dispatched,
                1,
                vec![(a, Complete), (a, Start), (a, Start)],
                vec![Step::Refuse(invalid), Step::Write, Step::AlreadyApplied],
            ),
            // A failure with attempts left requeues; its repeat is already applied; the attempt
            // no longer owns the task.
            (
                TaskStatus::Running,
                3,
                vec![(a, Fail), (a, Fail), (a, Complete)],
                vec![
                    Step::Write,
                    Step::AlreadyApplied,
                    Step::Refuse(Refusal::Superseded(a)),
                ],
            ),
            // A start followed by another attempt's completion is not fused with it.
            (
                TaskStatus::Dispatched,
                1,
                vec![(a, Start), (b, Complete)],
                vec![Step::Write, Step::Refuse(Refusal::Superseded(b))],
            ),
        ];
        for (status, max_attempts, reports, want) in cases {
            assert_eq!(
                plan_one(status, max_attempts, &reports).steps,
                want,
                "{reports:?}"
            );
        }
    }

    #[test]
    fn unknown_tasks_and_other_attempts_are_refused_without_a_write() {
        let (t, a, other) = (TaskId::new(), AttemptId::new(), AttemptId::new());
        let tasks = HashMap::from([(t, tracked(TaskStatus::Running, a, 1))]);
        let missing = TaskId::new();
        let items = [
            item(missing, a, ReportAction::Start),
            item(t, other, ReportAction::Complete),
            item(t, a, ReportAction::Progress),
        ];
        let plan = plan(&items, &tasks, B);
        assert_eq!(
            plan.steps,
            vec![
                Step::Refuse(Refusal::NotFound),
                Step::Refuse(Refusal::Superseded(other)),
                Step::Write
            ]
        );
        assert_eq!(plan.rounds, vec![0, 0, 1]);
    }
}
