//! The outbox: every report goes into the journal (fsynced) before it is sent, and is sent in
//! journal order per attempt — different attempts in parallel — retried with capped, jittered
//! backoff until the server answers 2xx or a final refusal (4xx but 429), through server outages
//! and daemon restarts. Only then is it acked in the journal.
//!
//! An attempt is `held` from the moment its claim is journaled until its final report (complete
//! or fail) has its answer: the heartbeat lists exactly the held attempts (DESIGN §10), so the
//! server never judges an attempt lost while its end is still on the way. At start, [`Outbox::recover`]
//! sends what the journal still holds; an attempt held without a journaled final report died with
//! the daemon, and is failed `agent_error` ("daemon restarted", retryable).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use paddock_api::{AttemptId, ErrorCode, FailBody, RuntimeId, TaskId};
use paddock_client::{Client, RetryPolicy};
use tokio::sync::{Notify, mpsc};

use crate::journal::{Entry, Journal};

mod record;
pub use record::Record;

/// What the server answered a report, once it answered for good.
enum Answer {
    Delivered,
    /// A refusal: the attempt is not (or no longer) the task's current one, or the task is gone
    /// (409, 404).
    Refused(Option<ErrorCode>),
    /// Any other final 4xx: the server will never take this report as it is (a value it cannot
    /// store, a revoked token). The report is dropped; a final one is replaced by its
    /// [`Record::fallback`], so the attempt still ends.
    Rejected(String),
}

#[derive(Default)]
struct Queue {
    /// Reports waiting, in journal order.
    entries: VecDeque<(u64, Record)>,
    /// The journal id of the attempt's `Held` record (acked with the final report's answer).
    held: Option<u64>,
    /// The journal id of its `Spawned` record (acked with `held`).
    spawned: Option<u64>,
    /// A sender task is delivering this queue.
    sending: bool,
}

/// Reports on their way, per attempt.
pub struct Outbox {
    journal: Journal,
    client: Client,
    queues: Mutex<HashMap<AttemptId, Queue>>,
    /// Woken whenever a queue empties (for `idle`).
    emptied: Notify,
    /// Attempts the server refused a report of: their process must stop.
    refused: mpsc::UnboundedSender<AttemptId>,
}

/// Longest pause between two tries of a report.
const MAX_PAUSE: Duration = Duration::from_secs(10);

impl Outbox {
    pub fn new(
        journal: Journal,
        client: Client,
        refused: mpsc::UnboundedSender<AttemptId>,
    ) -> Arc<Self> {
        // The outbox retries forever itself; each call tries once.
        let client = client.retry(RetryPolicy::NONE);
        Arc::new(Self {
            journal,
            client,
            queues: Mutex::default(),
            emptied: Notify::new(),
            refused,
        })
    }

    /// Journals that the daemon holds an attempt (before anything else is done for it).
    pub async fn hold(
        self: &Arc<Self>,
        runtime: RuntimeId,
        task: TaskId,
        attempt: AttemptId,
        number: i32,
    ) -> anyhow::Result<()> {
        let record = Record::Held {
            runtime,
            task,
            attempt,
            number,
        };
        let id = self
            .journal
            .append(&attempt.to_string(), serde_json::to_value(&record)?)
            .await?;
        self.lock().entry(attempt).or_default().held = Some(id);
        Ok(())
    }

    /// Journals the process group an attempt's agent runs as.
    pub async fn spawned(self: &Arc<Self>, attempt: AttemptId, pid: u32) -> anyhow::Result<()> {
        let record = Record::Spawned { pid };
        let id = self
            .journal
            .append(&attempt.to_string(), serde_json::to_value(&record)?)
            .await?;
        self.lock().entry(attempt).or_default().spawned = Some(id);
        Ok(())
    }

    /// Journals a report and sends it after the attempt's earlier ones.
    pub async fn push(self: &Arc<Self>, attempt: AttemptId, record: Record) -> anyhow::Result<()> {
        let id = self
            .journal
            .append(&attempt.to_string(), serde_json::to_value(&record)?)
            .await?;
        self.enqueue(attempt, id, record);
        Ok(())
    }

    fn enqueue(self: &Arc<Self>, attempt: AttemptId, id: u64, record: Record) {
        let start = {
            let mut q = self.lock();
            let queue = q.entry(attempt).or_default();
            queue.entries.push_back((id, record));
            !std::mem::replace(&mut queue.sending, true)
        };
        if start {
            let me = self.clone();
            tokio::spawn(async move { me.deliver(attempt).await });
        }
    }

    /// The attempts held now (for heartbeats).
    pub fn held(&self) -> Vec<AttemptId> {
        self.lock()
            .iter()
            .filter(|(_, q)| q.held.is_some())
            .map(|(a, _)| *a)
            .collect()
    }

    /// The server cancelled the attempt: nothing more of it is sent, and it is no longer held.
    pub async fn drop_attempt(&self, attempt: AttemptId) {
        let (ids, held) = {
            let mut q = self.lock();
            match q.get_mut(&attempt) {
                Some(queue) => {
                    let mut ids: Vec<u64> = queue.entries.drain(..).map(|(id, _)| id).collect();
                    ids.extend(queue.spawned.take());
                    (ids, queue.held.take())
                }
                None => (Vec::new(), None),
            }
        };
        for id in ids.into_iter().chain(held) {
            if let Err(e) = self.journal.ack(id).await {
                tracing::warn!(error = %e, "could not ack a dropped report");
            }
        }
        self.forget_if_done(attempt);
    }

    /// Waits until every report has its answer, or `limit` passes; true when all were delivered.
    pub async fn idle(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.emptied.notified();
                if self.lock().values().all(|q| q.entries.is_empty()) {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }

    /// Reports still on their way.
    pub fn pending(&self) -> usize {
        self.lock().values().map(|q| q.entries.len()).sum()
    }

    /// Flushes the journal (at stop).
    pub async fn close(&self) -> anyhow::Result<()> {
        self.journal.close().await?;
        Ok(())
    }

    /// Picks up what the journal holds at start: sends the reports, and fails (`daemon restarted`)
    /// the attempts held without a final report, after killing what is left of their agents.
    /// Returns those failed.
    pub async fn recover(self: &Arc<Self>, pending: Vec<Entry>) -> anyhow::Result<Vec<AttemptId>> {
        let mut order: Vec<AttemptId> = Vec::new();
        let mut by_attempt: HashMap<AttemptId, Vec<(u64, Record)>> = HashMap::new();
        for e in pending {
            let (Ok(attempt), Ok(record)) = (
                e.key.parse::<AttemptId>(),
                serde_json::from_value::<Record>(e.body),
            ) else {
                tracing::warn!(id = e.id, "unreadable journal record dropped");
                self.journal.ack(e.id).await?;
                continue;
            };
            if !by_attempt.contains_key(&attempt) {
                order.push(attempt);
            }
            by_attempt.entry(attempt).or_default().push((e.id, record));
        }
        let mut restarted = Vec::new();
        for attempt in order {
            let records = by_attempt.remove(&attempt).unwrap_or_default();
            let has_final = records.iter().any(|(_, r)| r.is_final());
            let held = records.iter().find_map(|(id, r)| match r {
                Record::Held { task, .. } => Some((*id, *task)),
                _ => None,
            });
            let pid = records.iter().find_map(|(_, r)| match r {
                Record::Spawned { pid } => Some(*pid),
                _ => None,
            });
            for (id, record) in records {
                match record {
                    Record::Held { .. } => self.lock().entry(attempt).or_default().held = Some(id),
                    Record::Spawned { .. } => {
                        self.lock().entry(attempt).or_default().spawned = Some(id)
                    }
                    r => self.enqueue(attempt, id, r),
                }
            }
            if let (Some(pid), false) = (pid, has_final)
                && crate::supervise::kill_orphan(pid, &attempt.to_string())
            {
                tracing::info!(%attempt, pid, "killed the agent left running by the previous run");
            }
            if let (Some((_, task)), false) = (held, has_final) {
                let body = FailBody {
                    attempt_id: attempt,
                    error: "daemon restarted: the agent process died with the daemon".into(),
                    retryable: true,
                    usage: None,
                    session: None,
                };
                self.push(attempt, Record::Fail { task, body }).await?;
                restarted.push(attempt);
            }
        }
        Ok(restarted)
    }

    /// Sends the attempt's queue in order until it is empty.
    async fn deliver(self: Arc<Self>, attempt: AttemptId) {
        loop {
            let next = {
                let mut q = self.lock();
                let queue = q.entry(attempt).or_default();
                match queue.entries.front() {
                    Some((id, r)) => Some((*id, r.clone())),
                    None => {
                        queue.sending = false;
                        None
                    }
                }
            };
            let Some((id, record)) = next else {
                self.forget_if_done(attempt);
                self.emptied.notify_waiters();
                return;
            };
            let answer = self.send_until_answered(&record).await;
            let mut fallback = None;
            match &answer {
                Answer::Delivered => {}
                Answer::Refused(code) => {
                    tracing::info!(%attempt, report = record.what(), ?code, "report refused; the attempt is over");
                    let _ = self.refused.send(attempt);
                }
                Answer::Rejected(why) => {
                    fallback = record.fallback(why);
                    tracing::error!(%attempt, report = record.what(), %why, replaced = fallback.is_some(),
                        "the server rejected a report for good; it is dropped");
                }
            }
            // The replacement is journaled before the rejected report is acked: a crash in
            // between sends one of them again, never neither.
            let fallback = match fallback {
                Some(r) => match self
                    .journal
                    .append(
                        &attempt.to_string(),
                        serde_json::to_value(&r).unwrap_or_default(),
                    )
                    .await
                {
                    Ok(fid) => Some((fid, r)),
                    Err(e) => {
                        tracing::error!(error = %e, "could not journal a replacement report");
                        None
                    }
                },
                None => None,
            };
            if let Err(e) = self.journal.ack(id).await {
                tracing::error!(error = %e, "could not ack a delivered report");
            }
            let held = {
                let mut q = self.lock();
                let queue = q.entry(attempt).or_default();
                if queue.entries.front().is_some_and(|(i, _)| *i == id) {
                    queue.entries.pop_front();
                }
                if let Some(next) = fallback {
                    queue.entries.push_front(next);
                    (None, Vec::new())
                } else if record.is_final() || matches!(answer, Answer::Refused(_)) {
                    // Nothing after a final answer can change the attempt: drop the rest.
                    let mut rest: Vec<u64> = queue.entries.drain(..).map(|(i, _)| i).collect();
                    rest.extend(queue.spawned.take());
                    (queue.held.take(), rest)
                } else {
                    (None, Vec::new())
                }
            };
            for done in held.0.into_iter().chain(held.1) {
                let _ = self.journal.ack(done).await;
            }
        }
    }

    fn forget_if_done(&self, attempt: AttemptId) {
        let mut q = self.lock();
        if q.get(&attempt)
            .is_some_and(|x| x.entries.is_empty() && x.held.is_none() && !x.sending)
        {
            q.remove(&attempt);
        }
    }

    /// One report, tried until the server answers for good.
    async fn send_until_answered(&self, record: &Record) -> Answer {
        let mut tries: u32 = 0;
        loop {
            let res = match record {
                Record::Held { .. } | Record::Spawned { .. } => return Answer::Delivered,
                Record::Start { task, attempt } => {
                    self.client.start(*task, *attempt).await.map(drop)
                }
                Record::Progress { task, body } => {
                    self.client.progress(*task, body).await.map(drop)
                }
                Record::Messages { task, body } => {
                    self.client.post_messages(*task, body).await.map(drop)
                }
                Record::Complete { task, body } => {
                    self.client.complete(*task, body).await.map(drop)
                }
                Record::Fail { task, body } => self.client.fail(*task, body).await.map(drop),
            };
            match res {
                Ok(()) => return Answer::Delivered,
                Err(e) if !e.is_transient() && matches!(e.status(), Some(404 | 409)) => {
                    return Answer::Refused(e.code());
                }
                Err(e)
                    if !e.is_transient() && e.status().is_some_and(|s| (400..500).contains(&s)) =>
                {
                    return Answer::Rejected(e.to_string());
                }
                Err(e) => {
                    tries += 1;
                    let pause = pause(tries);
                    tracing::warn!(error = %e, report = record.what(), ?pause, "report not delivered; retrying");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<AttemptId, Queue>> {
        self.queues.lock().expect("outbox lock")
    }
}

/// The pause before try `n + 1`: full jitter under 100 ms · 2^n, capped at `MAX_PAUSE`.
fn pause(n: u32) -> Duration {
    let policy = RetryPolicy {
        attempts: u32::MAX,
        base: Duration::from_millis(100),
        max: MAX_PAUSE,
    };
    policy.pause(n).max(Duration::from_millis(20))
}
