//! The daemon: register one runtime per provider, heartbeat on the server's interval (listing the
//! held attempts), long-poll claims for each runtime's free slots, run the attempts, act on
//! cancellations, and stop cleanly.
//!
//! **Stop.** The first SIGTERM or SIGINT stops claiming and lets running attempts finish for
//! `drain_timeout`; then they are stopped (SIGTERM, SIGKILL after `kill_grace`) and failed
//! (retryable), the outbox delivers what it can, the journal is flushed, the runtimes deregister
//! and the daemon exits 0. A second signal stops the attempts at once (their failures are still
//! journaled, and the journal flushed) and exits 130. Whatever is not delivered by then waits in
//! the journal for the next start.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use paddock_api::{
    AttemptId, CancelNotice, Claim, ErrorCode, Heartbeat, HeartbeatStatus, Register, RuntimeId,
    RuntimeIds,
};
use paddock_client::{Client, RetryPolicy};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::attempt::{self, Context, Control, Definitions};
use crate::config::{Config, DaemonArgs, Provider};
use crate::journal::Journal;
use crate::outbox::Outbox;

/// One registered runtime: its provider, its id (a re-registration may change it) and its slots.
struct Runtime {
    provider: Provider,
    id: watch::Sender<RuntimeId>,
    slots: Arc<Semaphore>,
    ctx: Arc<Context>,
}

/// What the loops share.
struct Shared {
    cfg: Config,
    client: Client,
    outbox: Arc<Outbox>,
    runtimes: Vec<Runtime>,
    /// Live attempts, by attempt id.
    live: Mutex<HashMap<AttemptId, Control>>,
    /// Claiming stops when this is cancelled (drain).
    draining: CancellationToken,
    /// The server's heartbeat interval.
    heartbeat_every: Mutex<Duration>,
}

/// Runs the daemon until it is told to stop (or, with `--once`, until what was claimable is done).
pub async fn run(args: DaemonArgs) -> anyhow::Result<()> {
    let cfg = args.resolve()?;
    let (journal, pending) = Journal::open(&cfg.state_dir)
        .await
        .with_context(|| format!("cannot open the journal in {}", cfg.state_dir.display()))?;
    let client = Client::new(&cfg.server, &cfg.token)?
        .retry(RetryPolicy {
            attempts: 6,
            base: Duration::from_millis(200),
            max: Duration::from_secs(5),
        })
        .timeout(Duration::from_secs(30));
    let (refused_tx, refused_rx) = mpsc::unbounded_channel();
    let outbox = Outbox::new(journal, client.clone(), refused_tx);
    let restarted = outbox.recover(pending).await?;
    for a in &restarted {
        tracing::info!(attempt = %a, "attempt of the previous run failed: daemon restarted");
    }
    let definitions = Arc::new(Definitions::default());
    let mut runtimes = Vec::new();
    let mut interval = Duration::from_secs(15);
    for provider in &cfg.providers {
        let (id, every) = register(&client, &cfg, provider).await?;
        interval = every;
        tracing::info!(provider = provider.kind.as_str(), runtime = %id, "runtime registered");
        let ctx = Arc::new(Context {
            client: client.clone(),
            outbox: outbox.clone(),
            definitions: definitions.clone(),
            provider: provider.kind,
            bin: provider.bin.clone(),
            runtime: id,
            work_root: cfg.work_root.clone(),
            kill_grace: cfg.kill_grace,
        });
        runtimes.push(Runtime {
            provider: provider.clone(),
            id: watch::Sender::new(id),
            slots: Arc::new(Semaphore::new(cfg.max_concurrency as usize)),
            ctx,
        });
    }
    let shared = Arc::new(Shared {
        cfg,
        client,
        outbox,
        runtimes,
        live: Mutex::default(),
        draining: CancellationToken::new(),
        heartbeat_every: Mutex::new(interval),
    });
    let stop_now = CancellationToken::new();
    let mut background = JoinSet::new();
    background.spawn(heartbeats(shared.clone(), stop_now.clone()));
    background.spawn(refusals(shared.clone(), refused_rx));
    let mut attempts = JoinSet::new();
    let code = if shared.cfg.once {
        once(&shared, &mut attempts).await;
        0
    } else {
        serve(&shared, &mut attempts, &stop_now).await
    };
    finish(&shared, &mut attempts, code == 0).await;
    background.abort_all();
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}

/// Registers a runtime, retrying until the server answers; returns its id and the heartbeat interval.
async fn register(
    client: &Client,
    cfg: &Config,
    provider: &Provider,
) -> anyhow::Result<(RuntimeId, Duration)> {
    let body = Register {
        daemon_id: cfg
            .daemon_id
            .clone()
            .try_into()
            .map_err(anyhow::Error::msg)?,
        provider: provider
            .kind
            .as_str()
            .to_owned()
            .try_into()
            .map_err(anyhow::Error::msg)?,
        name: None,
        version: Some(
            concat!("paddock-daemon ", env!("CARGO_PKG_VERSION"))
                .to_owned()
                .try_into()
                .map_err(anyhow::Error::msg)?,
        ),
        max_concurrency: Some(
            (cfg.max_concurrency as i64)
                .try_into()
                .map_err(anyhow::Error::msg)?,
        ),
        labels: Some(cfg.labels.clone()),
    };
    let mut tries = 0u32;
    loop {
        match client.register(&body).await {
            Ok(r) => {
                let every = Duration::from_millis(r.value.heartbeat_interval_ms.max(100));
                return Ok((r.value.runtime_id, every));
            }
            Err(e) if e.is_transient() => {
                tries += 1;
                tracing::warn!(error = %e, "cannot register yet; retrying");
                tokio::time::sleep(Duration::from_millis(250 * u64::from(tries.min(20)))).await;
            }
            Err(e) => return Err(e).context("registration refused"),
        }
    }
}

/// Runs until a signal: claim loops, then the drain.
async fn serve(
    shared: &Arc<Shared>,
    attempts: &mut JoinSet<()>,
    stop_now: &CancellationToken,
) -> i32 {
    let (spawned_tx, mut spawned_rx) = mpsc::unbounded_channel();
    let mut claimers = JoinSet::new();
    for i in 0..shared.runtimes.len() {
        claimers.spawn(claim_loop(shared.clone(), i, spawned_tx.clone()));
    }
    drop(spawned_tx);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
    let signal = async move |term: &mut Option<tokio::signal::unix::Signal>,
                             int: &mut Option<tokio::signal::unix::Signal>| {
        tokio::select! {
            _ = async { match term { Some(t) => t.recv().await, None => std::future::pending().await } } => {}
            _ = async { match int { Some(t) => t.recv().await, None => std::future::pending().await } } => {}
        }
    };
    // Run attempts as the claim loops hand them over, until the first signal.
    loop {
        tokio::select! {
            Some(fut) = spawned_rx.recv() => { attempts.spawn(fut); }
            Some(_) = attempts.join_next(), if !attempts.is_empty() => {}
            () = signal(&mut term, &mut int) => break,
        }
    }
    tracing::info!(
        running = attempts.len(),
        "stopping: no more claims; letting running attempts finish"
    );
    shared.draining.cancel();
    claimers.abort_all();
    while let Ok(fut) = spawned_rx.try_recv() {
        attempts.spawn(fut);
    }
    let drain = tokio::time::sleep(shared.cfg.drain_timeout);
    tokio::pin!(drain);
    let mut forced = false;
    loop {
        tokio::select! {
            next = attempts.join_next() => if next.is_none() { break },
            () = &mut drain => {
                tracing::info!(running = attempts.len(), "drain timeout: stopping the running attempts");
                stop_all(shared, shared.cfg.kill_grace);
            }
            () = signal(&mut term, &mut int) => {
                tracing::warn!("second signal: stopping at once");
                forced = true;
                stop_now.cancel();
                stop_all(shared, Duration::from_millis(100));
            }
        }
    }
    if forced { 130 } else { 0 }
}

/// Asks every live attempt to stop (a retryable failure is reported for each).
fn stop_all(shared: &Shared, _grace: Duration) {
    for c in shared.live.lock().expect("live lock").values() {
        c.stop.cancel();
    }
}

/// `--once`: claims what is claimable for every runtime, as slots allow, until nothing more is.
async fn once(shared: &Arc<Shared>, attempts: &mut JoinSet<()>) {
    loop {
        let mut claimed = 0;
        for i in 0..shared.runtimes.len() {
            let (tx, mut rx) = mpsc::unbounded_channel();
            claimed += claim_round(shared, i, Duration::ZERO, &tx)
                .await
                .unwrap_or(0);
            drop(tx);
            while let Some(fut) = rx.recv().await {
                attempts.spawn(fut);
            }
        }
        if claimed == 0 && attempts.is_empty() {
            return;
        }
        if claimed == 0 {
            // Wait for a slot to free before claiming again.
            attempts.join_next().await;
        }
    }
}

type AttemptFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// One runtime's claims, while not draining.
async fn claim_loop(shared: Arc<Shared>, i: usize, spawn: mpsc::UnboundedSender<AttemptFuture>) {
    let mut failures = 0u32;
    while !shared.draining.is_cancelled() {
        match claim_round(&shared, i, shared.cfg.claim_wait, &spawn).await {
            Ok(_) => failures = 0,
            Err(e) => {
                failures += 1;
                let pause = Duration::from_millis((200 * u64::from(failures)).min(5000));
                tracing::warn!(error = %e, ?pause, "claim failed; retrying");
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Waits for a free slot, claims up to the free slots, journals and starts what it got; returns
/// how many attempts it started.
async fn claim_round(
    shared: &Arc<Shared>,
    i: usize,
    wait: Duration,
    spawn: &mpsc::UnboundedSender<AttemptFuture>,
) -> anyhow::Result<usize> {
    let rt = &shared.runtimes[i];
    let first = rt.slots.clone().acquire_owned().await?;
    let free = rt.slots.available_permits() + 1;
    let runtime = *rt.id.borrow();
    let body = Claim {
        runtime_id: runtime,
        max_tasks: (free.min(100) as i64)
            .try_into()
            .map_err(anyhow::Error::msg)?,
        wait_ms: (wait.as_millis() as i64)
            .try_into()
            .map_err(anyhow::Error::msg)?,
    };
    let reply = match shared.client.claim(&body).await {
        Ok(r) => r,
        Err(e)
            if e.code() == Some(ErrorCode::RuntimeOffline)
                || e.code() == Some(ErrorCode::NotFound) =>
        {
            tracing::warn!(runtime = %runtime, "the server has the runtime offline; registering again");
            let (id, _) = register(&shared.client, &shared.cfg, &rt.provider).await?;
            rt.id.send_replace(id);
            return Ok(0);
        }
        Err(e) => return Err(e.into()),
    };
    cancel(shared, &reply.cancel).await;
    let mut permits = vec![first];
    let n = reply.tasks.len();
    for task in reply.tasks {
        let permit = match permits.pop() {
            Some(p) => p,
            None => rt.slots.clone().acquire_owned().await?,
        };
        shared
            .outbox
            .hold(runtime, task.task_id, task.attempt_id, task.attempt)
            .await?;
        let control = Control::default();
        shared
            .live
            .lock()
            .expect("live lock")
            .insert(task.attempt_id, control.clone());
        let (me, ctx) = (shared.clone(), rt.ctx_for(runtime));
        let fut: AttemptFuture = Box::pin(async move {
            let attempt = task.attempt_id;
            attempt::run(ctx, task, control).await;
            me.live.lock().expect("live lock").remove(&attempt);
            drop(permit);
        });
        let _ = spawn.send(fut);
    }
    Ok(n)
}

impl Runtime {
    /// The attempt context, for the runtime's current id.
    fn ctx_for(&self, id: RuntimeId) -> Arc<Context> {
        if self.ctx.runtime == id {
            return self.ctx.clone();
        }
        Arc::new(Context {
            client: self.ctx.client.clone(),
            outbox: self.ctx.outbox.clone(),
            definitions: self.ctx.definitions.clone(),
            provider: self.ctx.provider,
            bin: self.ctx.bin.clone(),
            runtime: id,
            work_root: self.ctx.work_root.clone(),
            kill_grace: self.ctx.kill_grace,
        })
    }
}

/// Stops the attempts the server cancelled; drops what is still queued of the others.
async fn cancel(shared: &Shared, notices: &[CancelNotice]) {
    for n in notices {
        let live = shared
            .live
            .lock()
            .expect("live lock")
            .get(&n.attempt_id)
            .cloned();
        match live {
            Some(c) => c.cancel.cancel(),
            None => shared.outbox.drop_attempt(n.attempt_id).await,
        }
    }
}

/// Heartbeats every interval for all runtimes, listing the held attempts.
async fn heartbeats(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let every = *shared.heartbeat_every.lock().expect("interval lock");
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let ids: Vec<RuntimeId> = shared.runtimes.iter().map(|r| *r.id.borrow()).collect();
        let body = Heartbeat {
            runtime_ids: ids.clone(),
            attempts: Some(shared.outbox.held()),
        };
        match shared.client.heartbeat(&body).await {
            Ok(reply) => {
                cancel(&shared, &reply.cancel).await;
                for state in reply.runtimes {
                    if state.status == HeartbeatStatus::Unknown
                        && let Some(rt) = shared
                            .runtimes
                            .iter()
                            .find(|r| *r.id.borrow() == state.runtime_id)
                    {
                        tracing::warn!(runtime = %state.runtime_id, "the server does not know the runtime; registering again");
                        if let Ok((id, _)) =
                            register(&shared.client, &shared.cfg, &rt.provider).await
                        {
                            rt.id.send_replace(id);
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}

/// Stops the attempts the server refused a report of.
async fn refusals(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<AttemptId>) {
    while let Some(attempt) = rx.recv().await {
        if let Some(c) = shared.live.lock().expect("live lock").get(&attempt) {
            c.cancel.cancel();
        }
    }
}

/// After the attempts: deliver what can be delivered, flush the journal, deregister (not with
/// `--once`, whose runtimes stay online for the next run).
async fn finish(shared: &Arc<Shared>, attempts: &mut JoinSet<()>, graceful: bool) {
    while attempts.join_next().await.is_some() {}
    let limit = if graceful {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(2)
    };
    if !shared.outbox.idle(limit).await {
        tracing::warn!(
            pending = shared.outbox.pending(),
            "reports not delivered yet: they stay in the journal for the next start"
        );
    }
    if let Err(e) = shared.outbox.close().await {
        tracing::error!(error = %e, "could not flush the journal");
    }
    if shared.cfg.once || !graceful {
        return;
    }
    let ids: Vec<RuntimeId> = shared.runtimes.iter().map(|r| *r.id.borrow()).collect();
    match shared
        .client
        .deregister(&RuntimeIds { runtime_ids: ids })
        .await
    {
        Ok(_) => tracing::info!("runtimes deregistered; stopped"),
        Err(e) => tracing::warn!(error = %e, "could not deregister"),
    }
}
