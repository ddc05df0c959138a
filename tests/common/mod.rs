//! Test harness: real PostgreSQL and Redis, a fresh database per test, the real router on port 0.
//!
//! Services are found as DEVELOPERS.md / README say: `DATABASE_URL` (a server where we may create
//! databases) and `REDIS_URL` when set; otherwise private instances started from the local
//! `postgres`/`initdb` and `redis-server` binaries under `target/test-services/`, shared by every
//! test process of the run and left running for the next run; otherwise the test fails with a
//! message naming what to install. Nothing is ever skipped.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

pub mod api;
pub mod daemon;
pub mod db;
pub mod heartbeater;
pub mod json;
pub mod problem;
pub mod settings;
pub mod wait;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use paddock::Settings;
use paddock::embedded::{PgOptions, PrivatePostgres, PrivateRedis, RedisOptions};
use paddock_client::api as wire;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub struct Services {
    /// URL of a database on the server where test databases can be created.
    pub admin_url: String,
    pub redis_url: String,
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// The shared services, started once per process (on a runtime of its own, so that no test's
/// runtime owns them).
pub fn services() -> &'static Services {
    static SERVICES: OnceLock<Services> = OnceLock::new();
    SERVICES.get_or_init(|| {
        std::thread::spawn(|| {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            rt.block_on(async {
                let admin_url = match std::env::var("DATABASE_URL") {
                    Ok(url) => url,
                    Err(_) => {
                        let opts = PgOptions {
                            data_dir: target_dir().join("test-services").join("pg"),
                            fast_unsafe: true,
                            max_connections: 500,
                        };
                        let pg = PrivatePostgres::start_shared(opts).await.unwrap_or_else(|e| {
                            panic!("tests need PostgreSQL: set DATABASE_URL, or install the PostgreSQL server binaries: {e}")
                        });
                        pg.url_for("postgres")
                    }
                };
                let redis_url = match std::env::var("REDIS_URL") {
                    Ok(url) => url,
                    Err(_) => {
                        let opts = RedisOptions { dir: target_dir().join("test-services").join("redis") };
                        let redis = PrivateRedis::start_shared(opts).await.unwrap_or_else(|e| {
                            panic!("tests need Redis: set REDIS_URL, or install redis-server: {e}")
                        });
                        redis.url()
                    }
                };
                drop_stale_databases(&admin_url).await;
                Services { admin_url, redis_url }
            })
        })
        .join()
        .expect("starting test services")
    })
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Test databases are named `paddock_test_<unix secs>_<random>`; those over two hours old are
/// leftovers of earlier runs.
async fn drop_stale_databases(admin_url: &str) {
    let Ok(mut conn) = PgConnection::connect(admin_url).await else {
        return;
    };
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'paddock_test_%'")
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
    let cutoff = unix_secs().saturating_sub(2 * 3600);
    for name in names {
        let created: Option<u64> = name.split('_').nth(2).and_then(|s| s.parse().ok());
        if created.is_some_and(|t| t < cutoff) {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
    }
}

fn database_url(admin_url: &str, db: &str) -> String {
    let mut url = url_without_db(admin_url);
    url.push('/');
    url.push_str(db);
    if let Some((_, query)) = admin_url.split_once('?') {
        url.push('?');
        url.push_str(query);
    }
    url
}

fn url_without_db(admin_url: &str) -> String {
    let base = admin_url.split('?').next().unwrap();
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    match base[scheme_end..].find('/') {
        Some(i) => base[..scheme_end + i].to_owned(),
        None => base.to_owned(),
    }
}

/// Creates a fresh, empty database and returns its URL.
pub async fn fresh_database() -> String {
    let svc = services();
    let name = format!("paddock_test_{}_{}", unix_secs(), Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(&svc.admin_url)
        .await
        .expect("connect to the test PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await
        .expect("create test database");
    database_url(&svc.admin_url, &name)
}

/// Settings for a test server: short, valid defaults and the shared Redis under a unique prefix.
pub fn test_settings(database_url: &str) -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: Some(database_url.to_owned()),
        redis_url: Some(services().redis_url.clone()),
        redis_prefix: format!("paddock-test-{}", Uuid::new_v4().simple()),
        admin_token: Some(paddock::auth::generate_token()),
        db_pool_size: 10,
        ..Settings::default()
    }
}

/// One running server.
pub struct TestApp {
    pub addr: SocketAddr,
    pub base: String,
    pub http: reqwest::Client,
    pub admin_token: String,
    pub database_url: String,
    pub settings: Settings,
    /// Direct access for assertions on stored state.
    pub pool: PgPool,
    shutdown: CancellationToken,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// A workspace with one member and one daemon token.
#[derive(Clone, Debug)]
pub struct Ws {
    pub id: String,
    pub member: String,
    pub daemon: String,
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Resp {
    /// Reads a reply: its status, headers and body (JSON when it parses, else the text as a JSON
    /// string, `null` when empty).
    pub async fn read(res: reqwest::Response) -> Self {
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap_or_default();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Resp {
            status,
            headers,
            body,
        }
    }

    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The problem+json `code`, if any.
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// A server on a fresh database; `tweak` adjusts its settings first.
    pub async fn spawn_with(tweak: impl FnOnce(&mut Settings)) -> Self {
        let url = fresh_database().await;
        let mut settings = test_settings(&url);
        tweak(&mut settings);
        Self::start(settings).await
    }

    /// Another replica on the same database and Redis prefix (with its own settings tweak).
    pub async fn replica(&self, tweak: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = self.settings.clone();
        tweak(&mut settings);
        Self::start(settings).await
    }

    pub async fn start(settings: Settings) -> Self {
        Self::start_at(settings, "127.0.0.1:0".parse().unwrap()).await
    }

    /// A server listening on `addr` (a replica restarted on the address it had, say).
    pub async fn start_at(settings: Settings, addr: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let database_url = settings.database_url.clone().unwrap();
        // Migrate before serving so that the assertion pool sees the schema.
        let pool = PgPool::connect(&database_url)
            .await
            .expect("connect test pool");
        paddock::db::MIGRATOR.run(&pool).await.expect("migrate");
        let handle = tokio::spawn(paddock::serve(settings.clone(), listener, shutdown.clone()));
        let app = TestApp {
            addr,
            base: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            admin_token: settings.admin_token.clone().unwrap_or_default(),
            database_url,
            settings,
            pool,
            shutdown,
            handle: Some(handle),
        };
        // Wait until the server answers (the listener is bound already; this waits for migrations).
        for _ in 0..200 {
            if let Ok(r) = app.http.get(format!("{}/healthz", app.base)).send().await
                && r.status().is_success()
            {
                return app;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("test server did not come up");
    }

    /// Graceful shutdown; returns serve's result.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.handle.take() {
            Some(h) => h.await.expect("serve task"),
            None => Ok(()),
        }
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Resp::read(req.send().await.expect("request")).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.request(reqwest::Method::GET, path, Some(token), None)
            .await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.request(reqwest::Method::POST, path, Some(token), Some(body))
            .await
    }

    /// [`TestApp::post`] with `Prefer: return=minimal`.
    pub async fn post_minimal(&self, path: &str, token: &str, body: Value) -> Resp {
        let req = self
            .http
            .post(format!("{}{}", self.base, path))
            .bearer_auth(token)
            .header("prefer", "return=minimal")
            .json(&body);
        Resp::read(req.send().await.expect("request")).await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Resp {
        self.request(reqwest::Method::PATCH, path, Some(token), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.request(reqwest::Method::DELETE, path, Some(token), None)
            .await
    }

    /// A typed API client for this server with `token` (no retries: tests see every answer).
    pub fn client(&self, token: &str) -> paddock_client::Client {
        paddock_client::Client::with_http(self.http.clone(), &self.base, token)
            .expect("client for the test server")
            .retry(paddock_client::RetryPolicy::NONE)
    }

    /// A workspace with a member and a daemon token.
    pub async fn workspace(&self) -> Ws {
        let slug = format!("ws-{}", &Uuid::new_v4().simple().to_string()[..12]);
        let body = wire::CreateWorkspace {
            name: slug.clone().try_into().unwrap(),
            slug: Some(slug.try_into().unwrap()),
        };
        let ws = self
            .client(&self.admin_token)
            .create_workspace(&body)
            .await
            .expect("create a workspace");
        let id = ws.id.to_string();
        let member = self.token(&id, "member").await;
        let daemon = self.token(&id, "daemon").await;
        Ws { id, member, daemon }
    }

    pub async fn token(&self, ws: &str, kind: &str) -> String {
        let body = wire::CreateToken {
            kind: kind.parse().expect("a token kind"),
            name: kind.to_owned().try_into().unwrap(),
        };
        self.client(&self.admin_token)
            .create_token(ws.parse().unwrap(), &body)
            .await
            .expect("mint a token")
            .token
    }

    /// Registers a runtime; returns its id.
    pub async fn runtime(&self, ws: &Ws, daemon_id: &str) -> String {
        self.runtime_with(
            ws,
            json!({ "daemon_id": daemon_id, "provider": "claude-code" }),
        )
        .await
    }

    pub async fn runtime_with(&self, ws: &Ws, body: Value) -> String {
        let body: wire::Register = serde_json::from_value(body).expect("a registration body");
        let reg = self
            .client(&ws.daemon)
            .register(&body)
            .await
            .expect("register a runtime");
        reg.value.runtime_id.to_string()
    }

    /// Creates an agent on a runtime; returns its id.
    pub async fn agent(&self, ws: &Ws, runtime: &str, max_concurrent_tasks: i64) -> String {
        let body = wire::CreateAgent {
            name: "agent".to_owned().try_into().unwrap(),
            runtime_id: Some(runtime.parse().unwrap()),
            runtime_selector: None,
            max_concurrent_tasks: max_concurrent_tasks.try_into().unwrap(),
            definition: json!({ "model": "test" }).as_object().unwrap().clone(),
        };
        let agent = self
            .client(&ws.member)
            .create_agent(&body)
            .await
            .expect("create an agent");
        agent.id.to_string()
    }

    /// Enqueues a task (the payload `{"n": 1}` unless `body` says otherwise); returns the task
    /// object as the server sent it.
    pub async fn enqueue(&self, ws: &Ws, agent: &str, body: Value) -> Value {
        let mut b = json!({ "agent_id": agent, "payload": { "n": 1 } });
        if let (Some(b), Some(extra)) = (b.as_object_mut(), body.as_object()) {
            b.extend(extra.clone());
        }
        let body: wire::CreateTask = serde_json::from_value(b).expect("an enqueue body");
        let task = self
            .client(&ws.member)
            .enqueue(&body)
            .await
            .expect("enqueue a task");
        assert!(task.created, "a new task, not an idempotent repeat");
        serde_json::to_value(task.value).unwrap()
    }

    /// Claims for a runtime; returns the reply body.
    pub async fn claim(&self, ws: &Ws, runtime: &str, max_tasks: i64, wait_ms: u64) -> Value {
        let body = wire::Claim {
            runtime_id: runtime.parse().unwrap(),
            max_tasks: max_tasks.try_into().unwrap(),
            wait_ms: (wait_ms as i64).try_into().unwrap(),
        };
        let reply = self.client(&ws.daemon).claim(&body).await.expect("claim");
        serde_json::to_value(reply).unwrap()
    }

    /// A daemon report on one task: `action` is start|progress|complete|fail.
    pub async fn report(&self, ws: &Ws, task: &str, action: &str, body: Value) -> Resp {
        self.post(&format!("/api/v1/tasks/{task}/{action}"), &ws.daemon, body)
            .await
    }

    /// Rows of a table, for "nothing was written" assertions.
    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Awaits a condition, polling every 20 ms, up to `within`; panics with `what` on time-out.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
