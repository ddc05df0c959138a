//! One attempt, from its claim to its final report: fetch the agent's definition (cached by
//! version), build the provider's command, report `start`, run the agent in its own process group
//! in `<work_root>/<task_id>`, turn its output into transcript messages (posted in batches of at
//! most 50 or every 250 ms), usage and session (reported with `progress`, at most once a second),
//! and at exit `complete` or `fail` with the final usage and session. Every report goes through the
//! outbox (journaled, then delivered in order).
//!
//! Two ways to end early: the server **cancels** (the process group is stopped — SIGTERM, SIGKILL
//! after `kill_grace` — and nothing more of the attempt is reported), or the daemon **stops** (it
//! drains: the same stop, then a retryable `fail`, so the task goes back to the queue).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use paddock_api::{
    AgentId, ClaimedTask, CompleteBody, FailBody, JsonObject, MessageKind, NewMessage,
    PostMessages, ProgressBody, RuntimeId, Session, Usage,
};
use paddock_client::Client;
use tokio_util::sync::CancellationToken;

use crate::outbox::{Outbox, Record};
use crate::provider::{Launch, Outcome, Parsed, Parser, ProviderKind, Stream};
use crate::supervise::{self, Line, Spec};

/// Messages per transcript post, and the longest a message waits to be posted.
const BATCH_MESSAGES: usize = 50;
const BATCH_WAIT: Duration = Duration::from_millis(250);
/// Usage and session are reported at most this often while the agent runs.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Agent definitions by version (`GET /daemon/agents/{id}/definition`, `If-None-Match`).
#[derive(Default)]
pub struct Definitions {
    cached: Mutex<HashMap<AgentId, (i32, JsonObject)>>,
}

impl Definitions {
    pub async fn get(
        &self,
        client: &Client,
        agent: AgentId,
        version: i32,
    ) -> anyhow::Result<JsonObject> {
        let have = self
            .cached
            .lock()
            .expect("definitions lock")
            .get(&agent)
            .cloned();
        if let Some((v, def)) = &have
            && *v >= version
        {
            return Ok(def.clone());
        }
        let cached_version = have.as_ref().map(|(v, _)| *v);
        let def = match client.definition(agent, cached_version).await? {
            Some(reply) => {
                let def = reply.definition.as_object().cloned().unwrap_or_default();
                self.cached
                    .lock()
                    .expect("definitions lock")
                    .insert(agent, (reply.version, def.clone()));
                def
            }
            None => have.map(|(_, d)| d).unwrap_or_default(),
        };
        Ok(def)
    }
}

/// What an attempt needs from its daemon.
pub struct Context {
    pub client: Client,
    pub outbox: Arc<Outbox>,
    pub definitions: Arc<Definitions>,
    pub provider: ProviderKind,
    /// The provider's CLI (`None` for `exec`).
    pub bin: Option<PathBuf>,
    pub runtime: RuntimeId,
    pub work_root: PathBuf,
    pub kill_grace: Duration,
}

/// How the daemon can end an attempt early.
#[derive(Clone, Default)]
pub struct Control {
    /// The server cancelled it: stop, report nothing more.
    pub cancel: CancellationToken,
    /// The daemon is stopping: stop, report a retryable failure.
    pub stop: CancellationToken,
}

/// Runs the claimed attempt to its end (its `Held` record is journaled already).
pub async fn run(ctx: Arc<Context>, task: ClaimedTask, control: Control) {
    let (id, attempt) = (task.task_id, task.attempt_id);
    let started = Instant::now();
    tracing::info!(task = %id, attempt = task.attempt, provider = ctx.provider.as_str(), "attempt claimed");
    let outcome = match prepare(&ctx, &task).await {
        Ok(spec) => supervise_attempt(&ctx, &task, spec, &control).await,
        Err((error, retryable)) => Some(Ended::failed(error, retryable)),
    };
    let Some(ended) = outcome else {
        tracing::info!(task = %id, attempt = task.attempt, "attempt cancelled by the server; stopped");
        ctx.outbox.drop_attempt(attempt).await;
        return;
    };
    let secs = started.elapsed().as_secs_f64();
    let record = match ended.outcome {
        Outcome::Complete(result) => {
            tracing::info!(task = %id, attempt = task.attempt, secs, "attempt completed");
            Record::Complete {
                task: id,
                body: CompleteBody {
                    attempt_id: attempt,
                    result,
                    usage: ended.usage,
                    session: ended.session,
                },
            }
        }
        Outcome::Fail { error, retryable } => {
            tracing::info!(task = %id, attempt = task.attempt, secs, %error, "attempt failed");
            Record::Fail {
                task: id,
                body: FailBody {
                    attempt_id: attempt,
                    error,
                    retryable,
                    usage: ended.usage,
                    session: ended.session,
                },
            }
        }
    };
    if let Err(e) = ctx.outbox.push(attempt, record).await {
        tracing::error!(error = %e, task = %id, "could not journal the final report");
    }
}

/// The command to run, from the agent's definition and the task's payload; or why not, and whether
/// another attempt could do better.
async fn prepare(ctx: &Context, task: &ClaimedTask) -> Result<(Spec, JsonObject), (String, bool)> {
    let definition = ctx
        .definitions
        .get(&ctx.client, task.agent_id, task.definition_version)
        .await
        .map_err(|e| (format!("cannot read the agent's definition: {e}"), true))?;
    let payload = task.payload.as_object().cloned().unwrap_or_default();
    let work_dir = supervise::work_dir_for(&ctx.work_root, &task.task_id.to_string())
        .map_err(|e| (e.to_string(), true))?;
    let resume = task
        .prior_session
        .as_ref()
        .filter(|s| s.runtime_id == ctx.runtime)
        .map(|s| s.id.as_str());
    let bin = ctx.bin.clone().unwrap_or_default();
    let launch = Launch {
        bin: &bin,
        definition: &definition,
        payload: &payload,
        work_dir: &work_dir,
        resume_session: resume,
    };
    let cmd = ctx
        .provider
        .command(&launch)
        .map_err(|e| (format!("invalid agent definition: {e}"), false))?;
    let mut env = cmd.env;
    env.push(("PADDOCK_TASK_ID".into(), task.task_id.to_string()));
    env.push(("PADDOCK_ATTEMPT_ID".into(), task.attempt_id.to_string()));
    env.push(("PADDOCK_AGENT_ID".into(), task.agent_id.to_string()));
    let spec = Spec {
        program: cmd.program,
        args: cmd.args,
        stdin: cmd.stdin,
        env,
        work_dir,
    };
    Ok((spec, definition))
}

/// How an attempt ended, with what it reported last.
struct Ended {
    outcome: Outcome,
    usage: Option<Usage>,
    session: Option<Session>,
}

impl Ended {
    fn failed(error: String, retryable: bool) -> Self {
        Self {
            outcome: Outcome::Fail { error, retryable },
            usage: None,
            session: None,
        }
    }
}

/// Starts the process and follows it to its exit; `None` when the server cancelled it.
async fn supervise_attempt(
    ctx: &Context,
    task: &ClaimedTask,
    (spec, definition): (Spec, JsonObject),
    control: &Control,
) -> Option<Ended> {
    let (id, attempt) = (task.task_id, task.attempt_id);
    if let Err(e) = ctx
        .outbox
        .push(attempt, Record::Start { task: id, attempt })
        .await
    {
        return Some(Ended::failed(format!("cannot journal start: {e}"), true));
    }
    let work_dir = spec.work_dir.display().to_string();
    let program = spec.program.display().to_string();
    let mut running = match supervise::spawn(spec) {
        Ok(r) => r,
        Err(e) => return Some(Ended::failed(format!("cannot start {program}: {e}"), true)),
    };
    tracing::info!(task = %id, attempt = task.attempt, pid = running.pid(), "agent started");
    if let Err(e) = ctx.outbox.spawned(attempt, running.pid()).await {
        tracing::warn!(error = %e, "could not journal the agent's pid");
    }
    let mut out = Transcript::new(ctx, task, work_dir);
    let mut parser: Box<dyn Parser> = ctx.provider.parser(&definition);
    let mut stopping = false;
    loop {
        let flush_at = out.flush_deadline();
        tokio::select! {
            line = running.lines.recv() => match line {
                Some(line) => {
                    let (stream, text) = match line {
                        Line::Stdout(t) => (Stream::Stdout, t),
                        Line::Stderr(t) => (Stream::Stderr, t),
                    };
                    for p in parser.line(stream, &text) {
                        out.take(p.without_nul()).await;
                    }
                }
                None => break,
            },
            () = sleep_until(flush_at) => out.flush().await,
            _ = control.cancel.cancelled() => {
                running.process.stop(ctx.kill_grace).await;
                return None;
            }
            _ = control.stop.cancelled(), if !stopping => {
                stopping = true;
                running.process.stop(ctx.kill_grace).await;
            }
        }
    }
    let exit = running.process.wait().await;
    out.flush().await;
    let outcome = if stopping {
        Outcome::Fail {
            error: "the daemon stopped before the agent finished".into(),
            retryable: true,
        }
    } else {
        parser.finish(exit.code).without_nul()
    };
    Some(Ended {
        outcome,
        usage: out.usage,
        session: out.session,
    })
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The attempt's transcript on its way out, and the usage and session it last reported.
struct Transcript<'a> {
    ctx: &'a Context,
    task: paddock_api::TaskId,
    attempt: paddock_api::AttemptId,
    work_dir: String,
    next_seq: i64,
    batch: Vec<NewMessage>,
    first_at: Option<tokio::time::Instant>,
    usage: Option<Usage>,
    session: Option<Session>,
    /// Usage or session changed since the last progress report.
    dirty: bool,
    last_progress: Option<Instant>,
}

impl<'a> Transcript<'a> {
    fn new(ctx: &'a Context, task: &ClaimedTask, work_dir: String) -> Self {
        Self {
            ctx,
            task: task.task_id,
            attempt: task.attempt_id,
            work_dir,
            next_seq: 0,
            batch: Vec::new(),
            first_at: None,
            usage: None,
            session: None,
            dirty: false,
            last_progress: None,
        }
    }

    /// When the batch must go out (or, with usage to report, the next progress report).
    fn flush_deadline(&self) -> Option<tokio::time::Instant> {
        let batch = self.first_at.map(|t| t + BATCH_WAIT);
        let progress = self.dirty.then(|| {
            let next = self
                .last_progress
                .map_or_else(Instant::now, |t| t + PROGRESS_EVERY);
            tokio::time::Instant::from_std(next)
        });
        match (batch, progress) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    async fn take(&mut self, parsed: Parsed) {
        match parsed {
            Parsed::Message {
                kind,
                content,
                data,
            } => self.message(kind, content, data).await,
            Parsed::Usage(u) => {
                self.usage = Some(u);
                self.dirty = true;
            }
            Parsed::Session(id) => {
                self.session = Some(Session {
                    id,
                    work_dir: Some(self.work_dir.clone()),
                });
                self.dirty = true;
            }
        }
    }

    async fn message(&mut self, kind: MessageKind, content: String, data: Option<JsonObject>) {
        self.batch.push(NewMessage {
            seq: self.next_seq,
            kind,
            content,
            data,
        });
        self.next_seq += 1;
        self.first_at.get_or_insert_with(tokio::time::Instant::now);
        if self.batch.len() >= BATCH_MESSAGES {
            self.post_batch().await;
        }
    }

    /// Posts what is due: the batch, and usage or session if they changed.
    async fn flush(&mut self) {
        self.post_batch().await;
        let due = self
            .last_progress
            .is_none_or(|t| t.elapsed() >= PROGRESS_EVERY);
        if self.dirty && due {
            self.dirty = false;
            self.last_progress = Some(Instant::now());
            let body = ProgressBody {
                attempt_id: self.attempt,
                progress: JsonObject::new(),
                usage: self.usage.clone(),
                session: self.session.clone(),
            };
            self.push(Record::Progress {
                task: self.task,
                body,
            })
            .await;
        }
    }

    async fn post_batch(&mut self) {
        self.first_at = None;
        if self.batch.is_empty() {
            return;
        }
        let body = PostMessages {
            attempt_id: self.attempt,
            messages: std::mem::take(&mut self.batch),
        };
        self.push(Record::Messages {
            task: self.task,
            body,
        })
        .await;
    }

    async fn push(&self, record: Record) {
        if let Err(e) = self.ctx.outbox.push(self.attempt, record).await {
            tracing::error!(error = %e, task = %self.task, "could not journal a report");
        }
    }
}
