//! A daemon's reports about its attempts, single (`/tasks/{id}/start|…`) or batched
//! (`/daemon/report`): one transaction, in three steps.
//!
//! 1. **Plan** (`domain::report::plan`, pure): lock the batch's tasks with one statement, and decide
//!    for every report whether it is written, in which round, or how it is answered.
//! 2. **Write**: round by round, one statement per action over the round's accepted reports
//!    (`start_many`, `progress_many`, `complete_many`; failures one by one, as they may requeue).
//! 3. **Emit**: the events of the written reports, in round order (a task's own events keep their
//!    order), and the agents whose status to recompute; then commit.

use std::collections::HashMap;

use paddock_api::{EventType, ReportAction, Session, TaskStatus, Usage};
use sqlx::PgConnection;

use super::tasks::{Failure, write_failure};
use super::{Changes, Refusal, Result, commit, error::lost_race};
use crate::db;
use crate::db::tasks::{Fenced, StoredSession, Task};
use crate::domain::report::{self, Plan, Step, Tracked};
use crate::domain::retry::Backoff;
use crate::domain::task::{FailureReason, TaskView};
use crate::domain::values::JsonObject;
use crate::events;
use crate::ids::{AttemptId, TaskId, WorkspaceId};
use crate::state::App;

/// What a daemon reports about one attempt.
#[derive(Debug, Clone)]
pub enum Report {
    Start,
    Progress(JsonObject),
    Complete(JsonObject),
    Fail { error: String, retryable: bool },
}

impl Report {
    pub fn action(&self) -> ReportAction {
        match self {
            Self::Start => ReportAction::Start,
            Self::Progress(_) => ReportAction::Progress,
            Self::Complete(_) => ReportAction::Complete,
            Self::Fail { .. } => ReportAction::Fail,
        }
    }

    /// The JSON a set-based write stores (progress or result).
    fn data(&self) -> Option<&JsonObject> {
        match self {
            Self::Progress(d) | Self::Complete(d) => Some(d),
            Self::Start | Self::Fail { .. } => None,
        }
    }
}

/// One report: the task, the attempt the daemon says it is running, and what happened — with the
/// attempt's cumulative usage and the agent's session when the report carries them (`progress`,
/// `complete`, `fail`).
#[derive(Debug, Clone)]
pub struct ReportItem {
    pub task: TaskId,
    pub attempt: AttemptId,
    pub report: Report,
    pub usage: Option<Usage>,
    pub session: Option<Session>,
}

impl ReportItem {
    /// The session as the task row keeps it: reported by this attempt, on the task's runtime.
    fn stored_session(&self, task: &Task) -> Option<StoredSession> {
        let runtime_id = task.runtime_id?;
        self.session.as_ref().map(|s| StoredSession {
            id: s.id.clone(),
            work_dir: s.work_dir.clone(),
            runtime_id,
            attempt: task.attempt,
        })
    }
}

/// Each report's answer: the task as it is after it, or why it changed nothing.
pub type Answers = Vec<std::result::Result<Task, Refusal>>;

/// Applies a daemon's reports in order, in one transaction, and commits. A refused report changes
/// nothing and does not abort the others; any other error aborts them all.
pub async fn report(app: &App, ws: WorkspaceId, items: &[ReportItem]) -> Result<Answers> {
    let tx = db::begin_hot(&app.pool).await?;
    report_in(app, tx, ws, items).await
}

/// [`report`], giving up (`Error::is_lock_timeout`, nothing written) if a lock it needs is held
/// longer than `lock_wait`: how the report writers apply reports (`service::report_groups`).
pub async fn report_bounded(
    app: &App,
    ws: WorkspaceId,
    items: &[ReportItem],
    lock_wait: std::time::Duration,
) -> Result<Answers> {
    let tx = db::begin_hot_bounded(&app.pool, lock_wait).await?;
    report_in(app, tx, ws, items).await
}

async fn report_in(
    app: &App,
    mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
    ws: WorkspaceId,
    items: &[ReportItem],
) -> Result<Answers> {
    let backoff = app.backoff();
    let mut tasks: HashMap<TaskId, Task> = db::tasks::lock_many(&mut tx, &task_ids(items), ws)
        .await?
        .into_iter()
        .map(|t| (t.id, t))
        .collect();
    let tracked = track(&mut tx, &tasks, items).await?;
    let plan = report::plan(&plan_items(items), &tracked, backoff);
    let mut w = Writer {
        backoff,
        tasks: &mut tasks,
        written: vec![None; items.len()],
        rows: HashMap::new(),
    };
    for round in 0..plan.round_count() {
        let round = Round {
            plan: &plan,
            round,
            items,
        };
        w.write_round(&mut tx, &round).await?;
    }
    let (answers, ch) = emit(items, &plan, w.written)?;
    commit(app, tx, ch).await?;
    Ok(answers)
}

fn task_ids(items: &[ReportItem]) -> Vec<TaskId> {
    let mut ids: Vec<TaskId> = items.iter().map(|i| i.task).collect();
    ids.sort();
    ids.dedup();
    ids
}

fn plan_items(items: &[ReportItem]) -> Vec<report::Item> {
    items
        .iter()
        .map(|it| report::Item {
            task: it.task,
            attempt: it.attempt,
            action: it.report.action(),
            retryable: matches!(
                it.report,
                Report::Fail {
                    retryable: true,
                    ..
                }
            ),
        })
        .collect()
}

/// The planner's view of each locked task. A queued task whose reported attempt is its last one
/// may have been sent back by its own daemon's failure (then a repeated `fail` is "already
/// applied"): that is read from the attempt's record.
async fn track(
    conn: &mut PgConnection,
    tasks: &HashMap<TaskId, Task>,
    items: &[ReportItem],
) -> Result<HashMap<TaskId, Tracked>> {
    let mut out = HashMap::with_capacity(tasks.len());
    for task in tasks.values() {
        let failed_by_agent = match task.status {
            TaskStatus::Failed => task.failure_reason == Some(FailureReason::AgentError),
            TaskStatus::Queued
                if items
                    .iter()
                    .any(|i| i.task == task.id && Some(i.attempt) == task.attempt_id) =>
            {
                let attempt = task.attempt_id.ok_or_else(lost_race)?;
                db::attempts::failure_reason(conn, attempt).await?
                    == Some(FailureReason::AgentError)
            }
            _ => false,
        };
        let view = TaskView {
            status: task.status,
            attempt_id: task.attempt_id,
            started: task.started_at.is_some(),
            failed_by_agent,
        };
        out.insert(
            task.id,
            Tracked {
                view,
                attempt: task.attempt,
                max_attempts: task.max_attempts,
            },
        );
    }
    Ok(out)
}

/// One round of a plan.
struct Round<'a> {
    plan: &'a Plan,
    round: usize,
    items: &'a [ReportItem],
}

impl Round<'_> {
    /// The fenced writes of `action` this round: reports written by their own statement, and
    /// starts written by the complete statement with their completion.
    fn fenced<'a>(
        &'a self,
        action: ReportAction,
        tasks: &HashMap<TaskId, Task>,
    ) -> Vec<Fenced<'a>> {
        self.plan
            .round(self.round)
            .filter_map(|i| {
                let it = &self.items[i];
                let (data_of, start) = match &self.plan.steps[i] {
                    Step::Write if it.report.action() == action => (it, false),
                    Step::StartWithComplete(j) if action == ReportAction::Complete => {
                        (&self.items[*j], true)
                    }
                    _ => return None,
                };
                Some(Fenced {
                    id: it.task,
                    attempt: it.attempt,
                    data: data_of.report.data(),
                    start,
                    usage: data_of.usage.as_ref(),
                    session: tasks.get(&it.task).and_then(|t| data_of.stored_session(t)),
                })
            })
            .collect()
    }
}

/// A report's answer from the write step: a row it wrote (which has its event), or the row as it
/// was (a repeat, which has none).
#[derive(Clone)]
enum Written {
    Row(Task),
    Answer(Task),
}

/// The write step's state across rounds.
struct Writer<'a> {
    backoff: Backoff,
    /// The batch's tasks as the rounds so far left them.
    tasks: &'a mut HashMap<TaskId, Task>,
    /// Each report's answer, once written.
    written: Vec<Option<Written>>,
    /// The rows the current round's statements returned.
    rows: HashMap<TaskId, Task>,
}

impl Writer<'_> {
    /// Writes one round and records each report's answer.
    async fn write_round(&mut self, conn: &mut PgConnection, round: &Round<'_>) -> Result<()> {
        self.rows.clear();
        for action in [
            ReportAction::Start,
            ReportAction::Progress,
            ReportAction::Complete,
        ] {
            let fenced = round.fenced(action, self.tasks);
            if fenced.is_empty() {
                continue;
            }
            let out = match action {
                ReportAction::Start => db::tasks::start_many(conn, &fenced).await?,
                ReportAction::Progress => db::tasks::progress_many(conn, &fenced).await?,
                _ => db::tasks::complete_many(conn, &fenced).await?,
            };
            self.rows.extend(out.into_iter().map(|t| (t.id, t)));
        }
        for i in round.plan.round(round.round) {
            if let Some(answer) = self.answer(conn, round, i).await? {
                self.written[i] = Some(answer);
            }
        }
        Ok(())
    }

    /// Report `i`'s answer after its round's statements ran: the row written for it, or the task
    /// as it is (a repeat); a failure is written here, one by one, as it may requeue the task.
    async fn answer(
        &mut self,
        conn: &mut PgConnection,
        round: &Round<'_>,
        i: usize,
    ) -> Result<Option<Written>> {
        let item = &round.items[i];
        let row = match &round.plan.steps[i] {
            Step::Refuse(_) => return Ok(None),
            Step::AlreadyApplied => {
                let task = self.tasks.get(&item.task).ok_or_else(lost_race)?;
                return Ok(Some(Written::Answer(task.clone())));
            }
            Step::WrittenWithStart => {
                // Written with its start in the round before: now it is the task's row.
                if let Some(Written::Row(done)) = &self.written[i] {
                    self.tasks.insert(item.task, done.clone());
                }
                return Ok(None);
            }
            Step::StartWithComplete(j) => {
                let done = self.rows.remove(&item.task).ok_or_else(lost_race)?;
                // The start's answer: the written row as the start alone leaves it.
                let started = Task {
                    status: TaskStatus::Running,
                    result: None,
                    finished_at: None,
                    ..done.clone()
                };
                self.written[*j] = Some(Written::Row(done));
                started
            }
            Step::Write => match &item.report {
                Report::Fail { error, retryable } => {
                    let before = self.tasks.get(&item.task).ok_or_else(lost_race)?;
                    let session = item.stored_session(before);
                    let failure = Failure {
                        reason: FailureReason::AgentError,
                        error: Some(error),
                        retryable: *retryable,
                        usage: item.usage.as_ref(),
                        session: session.as_ref(),
                    };
                    write_failure(conn, self.backoff, before, failure).await?
                }
                _ => self.rows.remove(&item.task).ok_or_else(lost_race)?,
            },
        };
        self.tasks.insert(item.task, row.clone());
        Ok(Some(Written::Row(row)))
    }
}

/// The answers, and the events of the written reports in round order.
fn emit(
    items: &[ReportItem],
    plan: &Plan,
    written: Vec<Option<Written>>,
) -> Result<(Answers, Changes)> {
    let mut ch = Changes::default();
    let mut answers: Vec<Option<std::result::Result<Task, Refusal>>> = vec![None; items.len()];
    let mut written = written;
    for round in 0..plan.round_count() {
        for i in plan.round(round) {
            let item = &items[i];
            answers[i] = Some(match (&plan.steps[i], written[i].take()) {
                (Step::Refuse(refusal), _) => Err(refusal.clone()),
                (_, Some(Written::Answer(task))) => Ok(task),
                (_, Some(Written::Row(task))) => {
                    ch.push(event_of(item, &task));
                    if matches!(item.report, Report::Complete(_) | Report::Fail { .. }) {
                        ch.agent_changed(task.agent_id);
                    }
                    Ok(task)
                }
                (_, None) => return Err(lost_race()),
            });
        }
    }
    let answers = answers
        .into_iter()
        .map(|a| a.ok_or_else(lost_race))
        .collect::<Result<Answers>>()?;
    Ok((answers, ch))
}

/// The event of a written report.
fn event_of(item: &ReportItem, task: &Task) -> db::events::NewEvent {
    match &item.report {
        Report::Start => events::task(EventType::TaskRunning, task),
        Report::Progress(_) => events::task_progress(task),
        Report::Complete(_) => events::task(EventType::TaskCompleted, task),
        Report::Fail { error, .. } => {
            events::task_ended(task, FailureReason::AgentError, Some(error))
        }
    }
}

/// A single report (`/tasks/{id}/start|progress|complete|fail`): refused with `Error::Refused`.
pub async fn report_one(app: &App, ws: WorkspaceId, item: ReportItem) -> Result<Task> {
    report(app, ws, std::slice::from_ref(&item))
        .await?
        .pop()
        .ok_or_else(lost_race)?
        .map_err(super::Error::Refused)
}
