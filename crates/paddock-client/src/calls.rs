//! One method per endpoint, grouped as DESIGN §4 groups them. Each says whether it retries.

use std::borrow::Cow;
use std::time::Duration;

use paddock_api::{
    Agent, AgentId, AttemptId, AttemptOnly, BatchResults, Claim, ClaimReply, CompleteBody,
    CreateAgent, CreateTask, CreateTaskBatch, CreateToken, CreateWorkspace, CreatedToken,
    DefinitionReply, Deregistered, Event, EventId, FailBody, Health, Heartbeat, HeartbeatReply,
    Message, Page, PatchAgent, PostMessages, PostedMessages, ProgressBody, Readiness, Register,
    Registered, ReportBody, ReportReply, Runtime, RuntimeId, RuntimeIds, Task, TaskId, TaskStatus,
    TaskWithAttempts, TokenId, Workspace, WorkspaceId,
};
use reqwest::{Method, StatusCode};

use crate::{Client, Created, Error, Repeat, RequestExtra, Result, decode, erased};

/// `Prefer: return=minimal` (RFC 7240): batch answers that name their tasks by id alone.
const PREFER_MINIMAL: (&str, Cow<'static, str>) = ("prefer", Cow::Borrowed("return=minimal"));

/// Filters and page of `GET /tasks` (newest first).
#[derive(Debug, Clone, Default)]
pub struct TaskQuery {
    pub status: Option<TaskStatus>,
    pub agent_id: Option<AgentId>,
    pub runtime_id: Option<RuntimeId>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// Where a transcript read starts: one `attempt` (and `after_seq` in it), or a `cursor`
/// (`<attempt>:<seq>`, the `next_cursor` of the page before).
#[derive(Debug, Clone, Default)]
pub struct MessageQuery {
    pub attempt: Option<i32>,
    pub after_seq: Option<i64>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// A page of a list: `limit` and the `next_cursor` of the page before.
#[derive(Debug, Clone, Default)]
pub struct PageQuery {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

fn with_query(path: &str, pairs: &[(&str, Option<String>)]) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (k, v) in pairs {
        if let Some(v) = v {
            q.append_pair(k, v);
            any = true;
        }
    }
    if any {
        format!("{path}?{}", q.finish())
    } else {
        path.to_owned()
    }
}

fn page_pairs(p: &PageQuery) -> [(&'static str, Option<String>); 2] {
    [
        ("limit", p.limit.map(|l| l.to_string())),
        ("cursor", p.cursor.clone()),
    ]
}

/// Admin calls (the admin token; a member may mint tokens of its own workspace).
impl Client {
    pub async fn create_workspace(&self, body: &CreateWorkspace) -> Result<Workspace> {
        self.post("api/v1/workspaces", body, Repeat::Never).await
    }

    pub async fn create_token(&self, ws: WorkspaceId, body: &CreateToken) -> Result<CreatedToken> {
        self.post(
            &format!("api/v1/workspaces/{ws}/tokens"),
            body,
            Repeat::Never,
        )
        .await
    }

    /// Revokes a token at once on every replica. Safe to repeat.
    pub async fn revoke_token(&self, id: TokenId) -> Result<()> {
        let extra = RequestExtra {
            repeat: Repeat::Safe,
            ..Default::default()
        };
        self.send(Method::DELETE, &format!("api/v1/tokens/{id}"), None, extra)
            .await?;
        Ok(())
    }
}

/// Member calls: runtimes, agents, tasks, events.
impl Client {
    pub async fn list_runtimes(&self, page: &PageQuery) -> Result<Page<Runtime>> {
        self.get(&with_query("api/v1/runtimes", &page_pairs(page)))
            .await
    }

    pub async fn get_runtime(&self, id: RuntimeId) -> Result<Runtime> {
        self.get(&format!("api/v1/runtimes/{id}")).await
    }

    pub async fn create_agent(&self, body: &CreateAgent) -> Result<Agent> {
        self.post("api/v1/agents", body, Repeat::Never).await
    }

    pub async fn list_agents(
        &self,
        page: &PageQuery,
        include_archived: bool,
    ) -> Result<Page<Agent>> {
        let mut pairs = page_pairs(page).to_vec();
        pairs.push(("include_archived", include_archived.then(|| "true".into())));
        self.get(&with_query("api/v1/agents", &pairs)).await
    }

    pub async fn get_agent(&self, id: AgentId) -> Result<Agent> {
        self.get(&format!("api/v1/agents/{id}")).await
    }

    pub async fn update_agent(&self, id: AgentId, patch: &PatchAgent) -> Result<Agent> {
        let path = format!("api/v1/agents/{id}");
        let body = erased::Json(patch);
        Ok(self
            .call(Method::PATCH, &path, Some(&body), Repeat::Never)
            .await?
            .1)
    }

    /// Archives an agent (its queued tasks are cancelled). Safe to repeat.
    pub async fn archive_agent(&self, id: AgentId) -> Result<Agent> {
        let path = format!("api/v1/agents/{id}");
        Ok(self
            .call(Method::DELETE, &path, None, Repeat::Safe)
            .await?
            .1)
    }

    /// Enqueues a task. Retried only when it carries an idempotency key (a repeat then answers the
    /// task the first call made, `created: false`).
    pub async fn enqueue(&self, body: &CreateTask) -> Result<Created<Task>> {
        let repeat = if body.idempotency_key.is_some() {
            Repeat::Safe
        } else {
            Repeat::Never
        };
        let (status, task) = self
            .call(
                Method::POST,
                "api/v1/tasks",
                Some(&erased::Json(body)),
                repeat,
            )
            .await?;
        Ok(Created {
            value: task,
            created: status == StatusCode::CREATED,
        })
    }

    /// Enqueues up to 1000 tasks in one transaction: one result per item, in order (DESIGN §13).
    /// Retried only when every item carries an idempotency key (a repeat then answers 200 items).
    pub async fn enqueue_batch(&self, tasks: &[CreateTask]) -> Result<BatchResults> {
        self.enqueue_batch_as(tasks, &[]).await
    }

    /// [`Client::enqueue_batch`] under `Prefer: return=minimal`: each result names its task by
    /// `task_id` and carries none.
    pub async fn enqueue_batch_minimal(&self, tasks: &[CreateTask]) -> Result<BatchResults> {
        self.enqueue_batch_as(tasks, &[PREFER_MINIMAL]).await
    }

    async fn enqueue_batch_as(
        &self,
        tasks: &[CreateTask],
        headers: &[(&'static str, Cow<'_, str>)],
    ) -> Result<BatchResults> {
        let repeat = if tasks.iter().all(|t| t.idempotency_key.is_some()) {
            Repeat::Safe
        } else {
            Repeat::Never
        };
        let body = CreateTaskBatch {
            tasks: tasks.to_vec(),
        };
        let extra = RequestExtra {
            repeat,
            headers,
            ..Default::default()
        };
        let body = erased::Json(&body);
        Ok(self
            .call_with(Method::POST, "api/v1/tasks/batch", Some(&body), extra)
            .await?
            .1)
    }

    pub async fn list_tasks(&self, q: &TaskQuery) -> Result<Page<Task>> {
        let pairs = [
            ("status", q.status.map(|s| s.as_str().to_owned())),
            ("agent_id", q.agent_id.map(|a| a.to_string())),
            ("runtime_id", q.runtime_id.map(|r| r.to_string())),
            ("limit", q.limit.map(|l| l.to_string())),
            ("cursor", q.cursor.clone()),
        ];
        self.get(&with_query("api/v1/tasks", &pairs)).await
    }

    pub async fn get_task(&self, id: TaskId) -> Result<TaskWithAttempts> {
        self.get(&format!("api/v1/tasks/{id}")).await
    }

    /// Cancels a task; cancelling a cancelled task answers it again, so this is safe to repeat.
    pub async fn cancel_task(&self, id: TaskId) -> Result<Task> {
        let path = format!("api/v1/tasks/{id}/cancel");
        Ok(self.call(Method::POST, &path, None, Repeat::Safe).await?.1)
    }

    /// A page of a task's transcript in `(attempt, seq)` order.
    pub async fn list_messages(&self, task: TaskId, q: &MessageQuery) -> Result<Page<Message>> {
        let pairs = [
            ("attempt", q.attempt.map(|a| a.to_string())),
            ("after_seq", q.after_seq.map(|s| s.to_string())),
            ("limit", q.limit.map(|l| l.to_string())),
            ("cursor", q.cursor.clone()),
        ];
        self.get(&with_query(
            &format!("api/v1/tasks/{task}/messages"),
            &pairs,
        ))
        .await
    }

    /// The workspace's events after `after`, in log order.
    pub async fn list_events(
        &self,
        after: Option<EventId>,
        limit: Option<i64>,
    ) -> Result<Page<Event>> {
        let pairs = [
            ("after", after.map(|a| a.to_string())),
            ("limit", limit.map(|l| l.to_string())),
        ];
        self.get(&with_query("api/v1/events", &pairs)).await
    }
}

/// Daemon calls (a daemon token).
impl Client {
    /// Registers a runtime (idempotent on daemon id and provider: safe to repeat).
    pub async fn register(&self, body: &Register) -> Result<Created<Registered>> {
        let (status, reg) = self
            .call(
                Method::POST,
                "api/v1/daemon/register",
                Some(&erased::Json(body)),
                Repeat::Safe,
            )
            .await?;
        Ok(Created {
            value: reg,
            created: status == StatusCode::CREATED,
        })
    }

    pub async fn heartbeat(&self, body: &Heartbeat) -> Result<HeartbeatReply> {
        self.post("api/v1/daemon/heartbeat", body, Repeat::Safe)
            .await
    }

    /// Claims tasks, waiting up to `wait_ms` when there are none. Never retried: a lost answer
    /// would hand out tasks nobody runs (they come back after `dispatch_timeout`).
    pub async fn claim(&self, body: &Claim) -> Result<ClaimReply> {
        let extra = RequestExtra {
            repeat: Repeat::Never,
            longer: Duration::from_millis(body.wait_ms.get()),
            headers: &[],
        };
        let body = erased::Json(body);
        Ok(self
            .call_with(Method::POST, "api/v1/daemon/claim", Some(&body), extra)
            .await?
            .1)
    }

    pub async fn start(&self, task: TaskId, attempt: AttemptId) -> Result<Task> {
        let body = AttemptOnly {
            attempt_id: attempt,
        };
        self.post(&format!("api/v1/tasks/{task}/start"), &body, Repeat::Safe)
            .await
    }

    /// Progress of a running attempt, with its usage and session so far.
    pub async fn progress(&self, task: TaskId, body: &ProgressBody) -> Result<Task> {
        self.post(&format!("api/v1/tasks/{task}/progress"), body, Repeat::Safe)
            .await
    }

    /// Completes an attempt with its result (and final usage and session).
    pub async fn complete(&self, task: TaskId, body: &CompleteBody) -> Result<Task> {
        self.post(&format!("api/v1/tasks/{task}/complete"), body, Repeat::Safe)
            .await
    }

    /// Posts 1 to 500 transcript messages of an attempt (idempotent by seq: safe to repeat).
    pub async fn post_messages(&self, task: TaskId, body: &PostMessages) -> Result<PostedMessages> {
        self.post(&format!("api/v1/tasks/{task}/messages"), body, Repeat::Safe)
            .await
    }

    pub async fn fail(&self, task: TaskId, body: &FailBody) -> Result<Task> {
        self.post(&format!("api/v1/tasks/{task}/fail"), body, Repeat::Safe)
            .await
    }

    /// Several reports in one call, applied in order; one result per update.
    pub async fn report(&self, body: &ReportBody) -> Result<ReportReply> {
        self.post("api/v1/daemon/report", body, Repeat::Safe).await
    }

    /// [`Client::report`] under `Prefer: return=minimal`: the results name their tasks by
    /// `task_id` and carry none (a daemon that only needs each update's status).
    pub async fn report_minimal(&self, body: &ReportBody) -> Result<ReportReply> {
        let extra = RequestExtra {
            repeat: Repeat::Safe,
            headers: &[PREFER_MINIMAL],
            ..Default::default()
        };
        let body = erased::Json(body);
        Ok(self
            .call_with(Method::POST, "api/v1/daemon/report", Some(&body), extra)
            .await?
            .1)
    }

    pub async fn deregister(&self, body: &RuntimeIds) -> Result<Deregistered> {
        self.post("api/v1/daemon/deregister", body, Repeat::Safe)
            .await
    }

    /// An agent's definition; `None` when `cached` is still its version (304).
    pub async fn definition(
        &self,
        agent: AgentId,
        cached: Option<i32>,
    ) -> Result<Option<DefinitionReply>> {
        let headers: Vec<(&'static str, Cow<'_, str>)> = cached
            .map(|v| ("if-none-match", format!("\"v{v}\"").into()))
            .into_iter()
            .collect();
        let extra = RequestExtra {
            repeat: Repeat::Safe,
            longer: Duration::ZERO,
            headers: &headers,
        };
        let path = format!("api/v1/daemon/agents/{agent}/definition");
        let (status, _, bytes) = self.send(Method::GET, &path, None, extra).await?;
        if status == StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        decode(&path, &bytes).map(Some)
    }
}

/// Operations (no token needed).
impl Client {
    pub async fn healthz(&self) -> Result<Health> {
        self.get("healthz").await
    }

    /// Readiness, as the server judges it: a 503 answer is returned as its body, not an error.
    pub async fn readyz(&self) -> Result<Readiness> {
        match self.get::<Readiness>("readyz").await {
            Err(Error::Status { status: 503, body }) => decode("readyz", body.as_bytes()),
            other => other,
        }
    }
}
