//! `paddock daemon`: the runtime side of Paddock (DESIGN §11). It registers one runtime per agent
//! provider, heartbeats (listing the attempts it holds), long-polls claims for its free slots, runs
//! each attempt's agent CLI in a process group of its own, streams the transcript, and reports
//! start, usage, session and the outcome — every report written to a durable journal first and
//! delivered, in order per attempt, through outages and restarts.
//!
//! | module | owns |
//! |---|---|
//! | `config` | the flags and environment of §11, validated at start |
//! | `provider` | per provider: the command line, and the parser from output lines to messages, usage, session and outcome (pure) |
//! | `supervise` | one attempt's process: process group, environment, stdin, lines, stop and reap |
//! | `journal` | the fsynced append-only journal of reports |
//! | `outbox` | delivering the journal's reports, in order per attempt, until a final answer |
//! | `attempt` | running one attempt from claim to final report |
//! | `daemon` | registration, heartbeats, claims, cancellation, drain and stop |

pub mod attempt;
pub mod config;
pub mod daemon;
pub mod journal;
pub mod outbox;
pub mod provider;
pub mod supervise;

pub use config::DaemonArgs;
pub use daemon::run;
