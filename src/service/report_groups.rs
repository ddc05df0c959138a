//! Group commit of daemons' batch reports (`POST /daemon/report`).
//!
//! A report's transaction has a fixed cost (begin, lock, one statement per action, the events'
//! insert, the agents' status, commit) that does not depend on how many updates it carries. Under
//! load many daemons report at once, and each paying it is most of the work. So reports go to a
//! few writers ([`WRITERS`]); a writer takes the next report and, with it, every report of the same
//! workspace already waiting (up to [`GROUP_MAX`] updates), and applies them as one: one
//! transaction, the updates in arrival order, each report answered with its own part. A report
//! that arrives while a writer is free is applied at once, alone: grouping never waits for more.
//!
//! A group that fails as a whole (a value the database refuses, say) is applied again report by
//! report, so that one report's error is that report's answer only. A writer that panics answers
//! its group with an internal error and goes on.
//!
//! A writer waits at most `report_lock_wait` for a lock (a task row another transaction holds):
//! then the group is rolled back and handed off to a task of its own, and the writer takes the
//! next reports. That task applies a group's reports one by one in arrival order, each again
//! waiting at most `report_lock_wait` (a report alone has had that wait already); those still held
//! up, and every later report of the group that names one of their tasks, are then applied in
//! order waiting as long as they must, by at most [`HANDOFF_WAITERS`] such tasks of the replica at
//! once (so that reports behind a held row cannot take the pool's connections). A held row thus
//! holds up only the reports of its task.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};

use tokio::sync::{Mutex, Semaphore, mpsc, oneshot};

use super::reports::{Answers, ReportItem, report, report_bounded};
use super::{Error, Result};
use crate::ids::{TaskId, WorkspaceId};
use crate::state::App;

/// Report transactions one replica runs at once.
pub const WRITERS: usize = 2;
/// Updates one group carries at most (a report alone may carry more: it is not split).
pub const GROUP_MAX: usize = 1000;
/// Handed-off reports that wait without a bound for a held lock, at once, per replica.
pub const HANDOFF_WAITERS: usize = 4;

struct Job {
    ws: WorkspaceId,
    items: Vec<ReportItem>,
    reply: oneshot::Sender<Result<Answers>>,
}

/// The way in to the writers.
pub struct ReportGroups {
    tx: mpsc::UnboundedSender<Job>,
    rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Job>>>,
    waiters: Arc<Semaphore>,
}

impl Default for ReportGroups {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
            waiters: Arc::new(Semaphore::new(HANDOFF_WAITERS)),
        }
    }
}

impl ReportGroups {
    /// Starts the writers. They hold the app weakly and stop once it is dropped.
    pub fn start(app: &Arc<App>) {
        let Some(rx) = app.reports.rx.lock().expect("report groups lock").take() else {
            return;
        };
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..WRITERS {
            tokio::spawn(writer(Arc::downgrade(app), rx.clone()));
        }
    }

    /// Applies a daemon's reports as [`report`] does, in a group with whatever else waits.
    pub async fn submit(&self, ws: WorkspaceId, items: Vec<ReportItem>) -> Result<Answers> {
        let (reply, answer) = oneshot::channel();
        // Counted before it can be taken, so that the gauge never dips below the queue.
        metrics::gauge!("paddock_reports_waiting").increment(1.0);
        if self.tx.send(Job { ws, items, reply }).is_err() {
            metrics::gauge!("paddock_reports_waiting").decrement(1.0);
            return Err(Error::Internal(anyhow::anyhow!(
                "the report writers have stopped"
            )));
        }
        answer.await.map_err(|_| {
            Error::Internal(anyhow::anyhow!(
                "a report writer dropped a report unanswered"
            ))
        })?
    }
}

async fn writer(app: Weak<App>, rx: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>) {
    loop {
        let groups = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            take_waiting(first, &mut rx)
        };
        let Some(app) = app.upgrade() else {
            return;
        };
        for group in groups {
            // A task of its own, so that a panic answers the group instead of ending the writer.
            let (app2, answers) = (app.clone(), group.iter().map(|j| j.items.len()).collect());
            let run = tokio::spawn(async move { apply(app2, group, answers).await });
            if let Err(e) = run.await {
                tracing::error!(error = %e, "a report group's writer panicked");
            }
        }
    }
}

/// `first` and the reports already waiting, grouped by workspace in arrival order: the first
/// group is `first`'s workspace's.
fn take_waiting(first: Job, rx: &mut mpsc::UnboundedReceiver<Job>) -> Vec<Vec<Job>> {
    let mut groups: Vec<Vec<Job>> = Vec::new();
    let mut sizes: Vec<usize> = Vec::new();
    let mut at: HashMap<WorkspaceId, usize> = HashMap::new();
    let mut total = 0;
    let mut job = Some(first);
    while let Some(j) = job.take() {
        metrics::gauge!("paddock_reports_waiting").decrement(1.0);
        total += j.items.len();
        let n = j.items.len();
        match at.get(&j.ws) {
            Some(&g) if sizes[g] + n <= GROUP_MAX => {
                sizes[g] += n;
                groups[g].push(j);
            }
            _ => {
                at.insert(j.ws, groups.len());
                sizes.push(n);
                groups.push(vec![j]);
            }
        }
        if total < GROUP_MAX {
            job = rx.try_recv().ok();
        }
    }
    groups
}

/// Applies one workspace's group in one transaction, or report by report if that fails.
async fn apply(app: Arc<App>, group: Vec<Job>, sizes: Vec<usize>) {
    if group.len() > 1 {
        metrics::histogram!("paddock_report_group_size").record(group.len() as f64);
    }
    let ws = group[0].ws;
    let mut all = Vec::with_capacity(sizes.iter().sum());
    let mut replies = Vec::with_capacity(group.len());
    for job in group {
        all.extend(job.items);
        replies.push(job.reply);
    }
    let answer = report_bounded(&app, ws, &all, app.settings.report_lock_wait).await;
    let mut items = all.into_iter();
    let mut jobs: Vec<Pending> = replies
        .into_iter()
        .zip(sizes)
        .map(|(reply, n)| (items.by_ref().take(n).collect(), reply))
        .collect();
    match answer {
        Ok(answers) => {
            let mut answers = answers.into_iter();
            for (items, reply) in jobs {
                let _ = reply.send(Ok(answers.by_ref().take(items.len()).collect()));
            }
        }
        Err(e) if e.is_lock_timeout() => {
            // A report alone has just had its bounded wait; a group's reports have not.
            let alone = jobs.len() == 1;
            hand_off(&app, ws, jobs, !alone);
        }
        Err(e) if jobs.len() == 1 => {
            let _ = jobs.pop().expect("one report").1.send(Err(e));
        }
        Err(e) => {
            tracing::debug!(error = %e, reports = jobs.len(), "a report group failed; applying its reports one by one");
            let stuck = one_by_one(&app, ws, jobs).await;
            if !stuck.is_empty() {
                hand_off(&app, ws, stuck, false);
            }
        }
    }
}

type Pending = (Vec<ReportItem>, oneshot::Sender<Result<Answers>>);

/// Applies reports one by one in order, each waiting at most `report_lock_wait`; returns, in
/// order, those that waited longer and every later one that names one of their tasks (applying it
/// first could change the order of a task's reports).
async fn one_by_one(app: &App, ws: WorkspaceId, jobs: Vec<Pending>) -> Vec<Pending> {
    let mut stuck = Vec::new();
    let mut held: HashSet<TaskId> = HashSet::new();
    for (items, reply) in jobs {
        if items.iter().any(|i| held.contains(&i.task)) {
            stuck.push((items, reply));
            continue;
        }
        match report_bounded(app, ws, &items, app.settings.report_lock_wait).await {
            Err(e) if e.is_lock_timeout() => {
                held.extend(items.iter().map(|i| i.task));
                stuck.push((items, reply));
            }
            answer => {
                let _ = reply.send(answer);
            }
        }
    }
    stuck
}

/// Takes reports held up by a lock out of the writers: a task of their own applies them one by one
/// (`one_by_one`) unless each has already had its bounded wait alone (`sort_out` false), then what
/// is still held up in order and without a bound, once one of the replica's [`HANDOFF_WAITERS`]
/// permits is free. At shutdown, what still waits is dropped unanswered (its daemon retries).
fn hand_off(app: &Arc<App>, ws: WorkspaceId, jobs: Vec<Pending>, sort_out: bool) {
    metrics::counter!("paddock_report_handoffs_total").increment(jobs.len() as u64);
    let app = app.clone();
    tokio::spawn(async move {
        let shutdown = app.shutdown.clone();
        let settle = async {
            let stuck = if sort_out {
                one_by_one(&app, ws, jobs).await
            } else {
                jobs
            };
            if stuck.is_empty() {
                return;
            }
            let Ok(_permit) = app.reports.waiters.acquire().await else {
                return;
            };
            for (items, reply) in stuck {
                let _ = reply.send(report(&app, ws, &items).await);
            }
        };
        tokio::select! {
            () = settle => {}
            () = shutdown.cancelled() => {}
        }
    });
}
