//! What every scenario stands on: a scratch database created on the `DATABASE_URL` server and
//! dropped at the end, a Paddock server started as a process of its own (`paddock serve`, so that
//! its CPU and memory are its own) on a free loopback port, and a small JSON-over-HTTP client that
//! turns any unexpected answer into an error naming the call.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::RngCore;
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use uuid::Uuid;

pub use crate::http::{Api, Conn};

/// Where the bench may work: a PostgreSQL server on which it creates a database, Redis if set, and
/// the `paddock` binary whose `serve` it measures.
#[derive(Clone, Debug)]
pub struct Services {
    pub database_url: String,
    pub redis_url: Option<String>,
    pub server_bin: PathBuf,
    /// Where the peer's `run.sh` lives (`crate::peer`); None: no peer.
    pub peers_dir: Option<PathBuf>,
}

/// A database created for one run (`paddock_bench_<random>`), dropped by [`BenchDb::drop_now`].
pub struct BenchDb {
    admin_url: String,
    pub name: String,
    pub url: String,
}

impl BenchDb {
    pub async fn create(admin_url: &str) -> anyhow::Result<Self> {
        let name = format!(
            "paddock_bench_{}",
            &Uuid::new_v4().simple().to_string()[..12]
        );
        let mut conn = admin_connection(admin_url).await.context(
            "cannot connect to DATABASE_URL (bench needs a PostgreSQL server where it may create a database)",
        )?;
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .with_context(|| format!("cannot create the scratch database {name}"))?;
        conn.close().await.ok();
        Ok(Self {
            admin_url: admin_url.to_owned(),
            url: database_url(admin_url, &name),
            name,
        })
    }

    /// Drops the database, closing whatever connections are still open on it.
    pub async fn drop_now(self) -> anyhow::Result<()> {
        let mut conn = admin_connection(&self.admin_url).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        ))
        .execute(&mut conn)
        .await
        .with_context(|| format!("cannot drop the scratch database {}", self.name))?;
        conn.close().await.ok();
        Ok(())
    }

    /// A pool on the scratch database for the bench's own SQL (set-up and baselines). Its
    /// statements are not logged: seeding is slow on purpose.
    pub async fn pool(&self, size: u32) -> anyhow::Result<PgPool> {
        let opts: PgConnectOptions = self.url.parse()?;
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(size)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts.disable_statement_logging())
            .await
            .with_context(|| format!("cannot connect to the scratch database {}", self.name))
    }
}

/// A connection to the `DATABASE_URL` database, for CREATE and DROP DATABASE (not logged).
async fn admin_connection(url: &str) -> anyhow::Result<PgConnection> {
    let opts: PgConnectOptions = url.parse()?;
    Ok(opts.disable_statement_logging().connect().await?)
}

/// `admin_url` with its database name replaced by `db` (query parameters kept).
fn database_url(admin_url: &str, db: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (admin_url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(base.len());
    let mut url = format!("{}/{db}", &base[..host_end]);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

/// How a server of the run is started: `paddock serve`'s defaults (and `PADDOCK_*` from the
/// environment), the scratch database, Redis under a key prefix of its own, a fresh admin token,
/// and any `PADDOCK_*` overrides of the scenario.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub bin: PathBuf,
    pub env: Vec<(String, String)>,
    pub admin_token: String,
}

pub fn settings(services: &Services, db: &BenchDb) -> ServerConfig {
    let admin_token = generate_token();
    let mut env = vec![
        ("DATABASE_URL".to_owned(), db.url.clone()),
        (
            "PADDOCK_REDIS_PREFIX".to_owned(),
            format!(
                "paddock-bench-{}",
                &Uuid::new_v4().simple().to_string()[..12]
            ),
        ),
        ("PADDOCK_ADMIN_TOKEN".to_owned(), admin_token.clone()),
        ("RUST_LOG".to_owned(), "warn".to_owned()),
    ];
    if let Some(url) = &services.redis_url {
        env.push(("REDIS_URL".to_owned(), url.clone()));
    }
    ServerConfig {
        bin: services.server_bin.clone(),
        env,
        admin_token,
    }
}

/// A token in the server's format (`pdk_` + 64 hex characters).
fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("pdk_{}", hex::encode(bytes))
}

/// Runs `paddock migrate` on the scratch database.
pub async fn migrate(services: &Services, db: &BenchDb) -> anyhow::Result<()> {
    let out = tokio::process::Command::new(&services.server_bin)
        .arg("migrate")
        .env("DATABASE_URL", &db.url)
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run {} migrate", services.server_bin.display()))?;
    if !out.status.success() {
        bail!(
            "paddock migrate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A free loopback port (bound, read and released; the server binds it a moment later).
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(l.local_addr()?.port())
}

/// A Paddock server running as a process of its own on a loopback port.
pub struct Server {
    pub api: Api,
    pub addr: std::net::SocketAddr,
    pub admin_token: String,
    /// From spawning `paddock serve` until `/readyz` first answered 200.
    pub startup: Duration,
    child: tokio::process::Child,
}

impl Server {
    pub async fn start(cfg: ServerConfig) -> anyhow::Result<Self> {
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let api = Api::new(format!("http://{addr}"))?;
        let t0 = Instant::now();
        let mut child = tokio::process::Command::new(&cfg.bin)
            .arg("serve")
            .envs(cfg.env.iter().map(|(k, v)| (k, v)))
            .env("PADDOCK_LISTEN", addr.to_string())
            .stdin(Stdio::null())
            // The server logs to stdout, which carries the bench's figures: its log goes to the
            // bench's stderr when PADDOCK_BENCH_SERVER_LOGS is set, else nowhere.
            .stdout(if std::env::var_os("PADDOCK_BENCH_SERVER_LOGS").is_some() {
                Stdio::from(std::io::stderr().as_fd().try_clone_to_owned()?)
            } else {
                Stdio::null()
            })
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {} serve", cfg.bin.display()))?;
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("the server exited before it was ready ({status})");
            }
            if api.ready().await {
                break;
            }
            if t0.elapsed() > Duration::from_secs(120) {
                bail!("the server did not become ready within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(Self {
            api,
            addr,
            admin_token: cfg.admin_token,
            startup: t0.elapsed(),
            child,
        })
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Graceful shutdown (SIGTERM: in-flight requests finish, heartbeats are flushed).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid)?);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        }
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .context("the server did not stop within 60 s")??;
        if !status.success() {
            bail!("the server exited with {status}");
        }
        Ok(())
    }

    /// A workspace with a member and a daemon token.
    pub async fn workspace(&self) -> anyhow::Result<Workspace> {
        let slug = format!("bench-{}", &Uuid::new_v4().simple().to_string()[..12]);
        let ws: Value = self
            .api
            .post(
                "/api/v1/workspaces",
                &self.admin_token,
                &json!({ "name": slug, "slug": slug }),
            )
            .await?;
        let id = ws["id"]
            .as_str()
            .context("workspace without id")?
            .to_owned();
        let mut tokens = Vec::new();
        for kind in ["member", "daemon"] {
            let t: Value = self
                .api
                .post(
                    &format!("/api/v1/workspaces/{id}/tokens"),
                    &self.admin_token,
                    &json!({ "kind": kind, "name": format!("bench {kind}") }),
                )
                .await?;
            tokens.push(t["token"].as_str().context("token missing")?.to_owned());
        }
        let daemon = tokens.pop().expect("two tokens");
        let member = tokens.pop().expect("two tokens");
        Ok(Workspace { id, member, daemon })
    }
}

#[derive(Clone, Debug)]
pub struct Workspace {
    pub id: String,
    pub member: String,
    pub daemon: String,
}

/// Runs each client as a task of its own on the runtime's worker threads, as separate daemons
/// would run, and returns their results in order. The first error (or panic) ends the run; the
/// clients still going are aborted.
pub async fn run_clients<T, F>(clients: impl IntoIterator<Item = F>) -> anyhow::Result<Vec<T>>
where
    F: std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for (i, client) in clients.into_iter().enumerate() {
        set.spawn(async move { client.await.map(|t| (i, t)) });
    }
    let mut out: Vec<Option<T>> = (0..set.len()).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        let (i, t) = joined.context("a bench client panicked")??;
        out[i] = Some(t);
    }
    Ok(out.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::database_url;

    #[test]
    fn database_url_replaces_only_the_database_name() {
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:5432/postgres", "b"),
            "postgres://postgres@127.0.0.1:5432/b"
        );
        assert_eq!(
            database_url("postgres://u:p@h/db?sslmode=disable", "b"),
            "postgres://u:p@h/b?sslmode=disable"
        );
        assert_eq!(
            database_url("postgres://h:5432", "b"),
            "postgres://h:5432/b"
        );
    }
}
