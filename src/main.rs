//! `paddock`: parse the command line, set up logging, hand over. No logic lives here.
//! `serve | migrate | daemon | sweep | bench`.

use std::path::Path;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use paddock::Settings;
use paddock::embedded::{PgOptions, PrivatePostgres};

/// mimalloc: the request path allocates many small JSON and row buffers; glibc's malloc spent a
/// tenth of the server's CPU on them in the drain benchmark's profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "paddock",
    version,
    about = "Control plane for AI-agent runtimes"
)]
struct Cli {
    /// Log format: `pretty` for terminals, `json` for log shippers.
    #[arg(
        long,
        env = "PADDOCK_LOG_FORMAT",
        default_value = "pretty",
        global = true
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API server, sweepers and event fan-out.
    Serve {
        #[command(flatten)]
        settings: Box<Settings>,
    },
    /// Apply database migrations and exit.
    Migrate {
        /// PostgreSQL URL (unset: the embedded cluster under --data-dir).
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        #[arg(long, env = "PADDOCK_DATA_DIR", default_value = "./.paddock")]
        data_dir: std::path::PathBuf,
    },
    /// Run agents on this machine: register a runtime per provider, claim tasks, run the agent CLIs
    /// and report every step (DESIGN §11).
    Daemon(Box<paddock_daemon::DaemonArgs>),
    /// Run the sweepers' tick now (as the leader; refused while a replica leads) and print each
    /// tick's time in milliseconds.
    Sweep {
        #[command(flatten)]
        settings: Box<Settings>,
        /// Ticks to run.
        #[arg(long, default_value_t = 1)]
        ticks: u64,
        /// The name the ticks are recorded under in `sweeper_runs`.
        #[arg(long, default_value = "paddock-sweep")]
        replica: String,
    },
    /// Measure throughput and latency against a scratch database (see BENCHMARKS.md).
    Bench(paddock_bench::BenchArgs),
}

/// Logs go to stdout, except for `bench`, whose stdout carries the results.
fn init_tracing(format: LogFormat, default_filter: &str, to_stderr: bool) {
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let writer = if to_stderr {
        BoxMakeWriter::new(std::io::stderr)
    } else {
        BoxMakeWriter::new(std::io::stdout)
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
}

async fn shutdown_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
    token.cancel();
}

async fn embedded_postgres(data_dir: &Path) -> anyhow::Result<PrivatePostgres> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let opts = PgOptions {
        data_dir: data_dir.join("pg"),
        fast_unsafe: false,
        max_connections: 200,
    };
    tracing::info!(dir = %opts.data_dir.display(), "DATABASE_URL not set: starting the embedded PostgreSQL cluster");
    Ok(PrivatePostgres::start(opts).await?)
}

/// The admin token of an embedded deployment: generated on first start, printed once, kept in the
/// data dir (mode 0600) for the next start.
fn embedded_admin_token(data_dir: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join("admin_token");
    if let Ok(token) = std::fs::read_to_string(&path) {
        tracing::info!(path = %path.display(), "admin token loaded from the data dir");
        return Ok(token.trim().to_owned());
    }
    let token = paddock::auth::generate_token();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    std::io::Write::write_all(&mut f, token.as_bytes())?;
    println!(
        "\n  Admin token (shown once; also kept in {}):\n\n    {token}\n",
        path.display()
    );
    Ok(token)
}

async fn run_serve(mut settings: Settings) -> anyhow::Result<()> {
    let mut embedded = None;
    if settings.database_url.is_none() {
        let pg = embedded_postgres(&settings.data_dir).await?;
        settings.database_url = Some(pg.url());
        if settings.admin_token.is_none() {
            settings.admin_token = Some(embedded_admin_token(&settings.data_dir)?);
        }
        embedded = Some(pg);
    }
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown_signal(shutdown.clone()));
    let result = paddock::serve(settings, listener, shutdown).await;
    if let Some(pg) = embedded {
        tracing::info!("stopping the embedded PostgreSQL cluster");
        if let Err(e) = pg.stop().await {
            tracing::warn!(error = %e, "embedded PostgreSQL did not stop cleanly");
        }
    }
    result
}

async fn run_sweep(mut settings: Settings, ticks: u64, replica: &str) -> anyhow::Result<()> {
    let mut embedded = None;
    if settings.database_url.is_none() {
        let pg = embedded_postgres(&settings.data_dir).await?;
        settings.database_url = Some(pg.url());
        embedded = Some(pg);
    }
    let result = paddock::sweep_now(settings, ticks, replica).await;
    if let Some(pg) = embedded {
        pg.stop().await?;
    }
    for t in result? {
        println!("tick {:.3}", t.as_secs_f64() * 1000.0);
    }
    Ok(())
}

async fn run_migrate(database_url: Option<String>, data_dir: &Path) -> anyhow::Result<()> {
    let (url, embedded) = match database_url {
        Some(url) => (url, None),
        None => {
            let pg = embedded_postgres(data_dir).await?;
            (pg.url(), Some(pg))
        }
    };
    let pool = paddock::db::connect(&url, 2)
        .await
        .context("cannot connect to PostgreSQL")?;
    paddock::db::MIGRATOR
        .run(&pool)
        .await
        .context("migrations failed")?;
    pool.close().await;
    println!("migrations applied");
    if let Some(pg) = embedded {
        pg.stop().await?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    no_transparent_huge_pages();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(run())
}

/// Transparent huge pages off for this process (and what it starts), before the runtime's
/// threads allocate: mimalloc asks for them on its arenas, and a 2 MiB page is resident whole
/// however little of it the heap uses. A server holding 10,000 idle keep-alive connections was
/// 221 MB with them and 130 MB without (`docs/operators.md`); the heap is sparse there, one
/// connection's buffers and task every few KiB.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        eprintln!(
            "paddock: could not turn transparent huge pages off ({e}); memory use may be higher"
        );
    }
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // A bench's in-process server would log every request at info; only warnings are wanted.
    let (default_filter, to_stderr) = match cli.command {
        Command::Bench(_) | Command::Sweep { .. } => ("warn", true),
        // One line per task event on stderr (stdout stays free for the agents' scripts).
        Command::Daemon(_) => ("info,paddock_client=warn", true),
        _ => ("info,sqlx=warn,tower_http=info", false),
    };
    init_tracing(cli.log_format, default_filter, to_stderr);
    match cli.command {
        Command::Serve { settings } => run_serve(*settings).await,
        Command::Migrate {
            database_url,
            data_dir,
        } => run_migrate(database_url, &data_dir).await,
        Command::Sweep {
            settings,
            ticks,
            replica,
        } => run_sweep(*settings, ticks, &replica).await,
        Command::Bench(args) => paddock_bench::run(args).await,
        Command::Daemon(args) => paddock_daemon::run(*args).await,
    }
}
