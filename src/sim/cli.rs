//! `outpost simulate ...`: runs a device simulator by hand until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use super::{LineOptions, LineSim, PjlinkOptions, PjlinkSim};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum SimulateCommand {
    /// A PJLink class 1 projector.
    Pjlink {
        #[arg(long, default_value = "127.0.0.1:4352")]
        listen: SocketAddr,
        /// Turns on MD5 authentication (`PJLINK 1`).
        #[arg(long)]
        password: Option<String>,
        #[arg(long, default_value_t = 5000)]
        warmup_ms: u64,
        #[arg(long, default_value_t = 3000)]
        cooldown_ms: u64,
    },
    /// A generic line-protocol device. Commands (one per line): PING,
    /// GET k, SET k v, ECHO text, DELAY ms text, SILENT, FLOOD, ENDLESS,
    /// GARBAGE n, HALF, CLOSE.
    Line {
        #[arg(long, default_value = "127.0.0.1:5000")]
        listen: SocketAddr,
        /// Line delimiter; `\n`, `\r` and `\r\n` are understood as escapes.
        #[arg(long, default_value = "\\n")]
        delimiter: String,
    },
}

fn unescape(s: &str) -> Vec<u8> {
    s.replace("\\r", "\r").replace("\\n", "\n").into_bytes()
}

/// Runs the simulator until `shutdown` completes, logging its connection
/// count when it changes (the simulators log each command and state
/// change themselves).
pub async fn run(cmd: SimulateCommand, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut last = usize::MAX;
    match cmd {
        SimulateCommand::Pjlink {
            listen,
            password,
            warmup_ms,
            cooldown_ms,
        } => {
            let sim = PjlinkSim::start(
                listen,
                PjlinkOptions {
                    password,
                    warmup: Duration::from_millis(warmup_ms),
                    cooldown: Duration::from_millis(cooldown_ms),
                    ..PjlinkOptions::default()
                },
            )
            .await?;
            tracing::info!(addr = %sim.addr(), "PJLink simulator listening");
            loop {
                tokio::select! {
                    () = &mut shutdown => break,
                    _ = tick.tick() => {
                        if sim.connections() != last {
                            last = sim.connections();
                            tracing::info!(connections = last, "pjlink: connections");
                        }
                        // Notices a finished warm-up or cool-down (logged once).
                        let _ = sim.power();
                    }
                }
            }
            sim.shutdown().await;
        }
        SimulateCommand::Line { listen, delimiter } => {
            let sim = LineSim::start(
                listen,
                LineOptions {
                    delimiter: unescape(&delimiter),
                    ..LineOptions::default()
                },
            )
            .await?;
            tracing::info!(addr = %sim.addr(), "line device simulator listening");
            loop {
                tokio::select! {
                    () = &mut shutdown => break,
                    _ = tick.tick() => {
                        if sim.connections() != last {
                            last = sim.connections();
                            tracing::info!(connections = last, "line device");
                        }
                    }
                }
            }
            sim.shutdown().await;
        }
    }
    Ok(())
}
