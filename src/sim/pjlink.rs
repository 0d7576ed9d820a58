//! A PJLink class 1 projector on real TCP: greeting with or without MD5
//! authentication (`PJLINK 0` / `PJLINK 1 <random>`, `PJLINK ERRA` on a bad
//! digest), power with warm-up and cool-down, input, AV mute, error status,
//! lamp hours, information queries, and the `ERR1`–`ERR4` replies.
//! Time is tokio time, so tests drive warm-up with `tokio::time::pause`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use md5::{Digest, Md5};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Counter, Kick, LineReader};
use crate::util::Unpoisoned;

/// Longest command line accepted: 136 bytes by the specification plus a
/// 32-character digest.
const MAX_LINE: usize = 168;

#[derive(Debug, Clone)]
pub struct PjlinkOptions {
    /// `Some`: authentication on (`PJLINK 1`); `None`: `PJLINK 0`.
    pub password: Option<String>,
    pub warmup: Duration,
    pub cooldown: Duration,
    /// Input codes the projector has (e.g. `11` RGB 1, `31` digital 1).
    pub inputs: Vec<String>,
    pub lamp_hours: u32,
    pub name: String,
    /// The specification lets a projector close a silent connection after
    /// 30 s; `None` keeps it open.
    pub idle_timeout: Option<Duration>,
}

impl Default for PjlinkOptions {
    fn default() -> Self {
        PjlinkOptions {
            password: None,
            warmup: Duration::from_secs(5),
            cooldown: Duration::from_secs(3),
            inputs: ["11", "12", "31", "32", "51"].map(String::from).to_vec(),
            lamp_hours: 1200,
            name: "Outpost PJLink simulator".into(),
            idle_timeout: None,
        }
    }
}

/// Power state as `POWR ?` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    Off,
    On,
    Cooling,
    Warming,
}

#[derive(Debug)]
enum PowerState {
    Off,
    On,
    Warming(Instant),
    Cooling(Instant),
}

#[derive(Debug)]
struct State {
    power: PowerState,
    input: String,
    mute: String,
    errors: String,
    failure: bool,
    commands: u64,
}

impl State {
    fn power(&mut self) -> Power {
        let now = Instant::now();
        match self.power {
            PowerState::Warming(until) if now >= until => {
                self.power = PowerState::On;
                log_power(Power::On);
            }
            PowerState::Cooling(until) if now >= until => {
                self.power = PowerState::Off;
                log_power(Power::Off);
            }
            _ => {}
        }
        match self.power {
            PowerState::Off => Power::Off,
            PowerState::On => Power::On,
            PowerState::Warming(_) => Power::Warming,
            PowerState::Cooling(_) => Power::Cooling,
        }
    }
}

/// The PJLink answer to `POWR ?` for a power state.
fn power_code(power: Power) -> &'static str {
    match power {
        Power::Off => "0",
        Power::On => "1",
        Power::Cooling => "2",
        Power::Warming => "3",
    }
}

/// One line per change of power state, as `POWR ?` answers it from now on.
fn log_power(power: Power) {
    tracing::info!(power = ?power, powr = %power_code(power), "pjlink: power state changed");
}

struct Inner {
    opts: PjlinkOptions,
    state: Mutex<State>,
    conns: Arc<Counter>,
    kick: Kick,
}

/// A running simulated projector.
pub struct PjlinkSim {
    addr: SocketAddr,
    inner: Arc<Inner>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl PjlinkSim {
    /// Binds `addr` (port 0 for any) and starts serving.
    pub async fn start(addr: SocketAddr, opts: PjlinkOptions) -> std::io::Result<PjlinkSim> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                power: PowerState::Off,
                input: opts.inputs.first().cloned().unwrap_or_else(|| "11".into()),
                mute: "30".into(),
                errors: "000000".into(),
                failure: false,
                commands: 0,
            }),
            opts,
            conns: Arc::new(Counter::default()),
            kick: Kick::default(),
        });
        let cancel = CancellationToken::new();
        let task = tokio::spawn(super::accept(listener, inner.clone(), cancel.clone()));
        Ok(PjlinkSim {
            addr,
            inner,
            cancel,
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Client connections open now.
    pub fn connections(&self) -> usize {
        self.inner.conns.current()
    }

    pub fn max_connections_seen(&self) -> usize {
        self.inner.conns.max()
    }

    /// Starts a new measurement for [`Self::max_connections_seen`].
    pub fn reset_max_connections(&self) {
        self.inner.conns.reset_max()
    }

    /// The recent changes of the number of open connections, with their
    /// time, oldest first.
    pub fn connection_log(&self) -> Vec<(std::time::Instant, usize)> {
        self.inner.conns.log()
    }

    /// Connections accepted since start.
    pub fn total_connections(&self) -> u64 {
        self.inner.conns.total()
    }

    /// Commands answered since start (after authentication).
    pub fn commands(&self) -> u64 {
        self.inner.state.lock_unpoisoned().commands
    }

    pub fn power(&self) -> Power {
        self.inner.state.lock_unpoisoned().power()
    }

    pub fn input(&self) -> String {
        self.inner.state.lock_unpoisoned().input.clone()
    }

    /// AV mute as `AVMT ?` reports it (`30` off, `31` on, ...).
    pub fn av_mute(&self) -> String {
        self.inner.state.lock_unpoisoned().mute.clone()
    }

    /// Sets the six-digit `ERST` answer (fan, lamp, temperature, cover,
    /// filter, other; 0 ok, 1 warning, 2 error).
    pub fn set_error_status(&self, errst: &str) {
        self.inner.state.lock_unpoisoned().errors = errst.to_owned();
    }

    /// A failed projector answers `ERR4` to power, input and mute.
    pub fn set_failure(&self, failed: bool) {
        self.inner.state.lock_unpoisoned().failure = failed;
    }

    /// Drops every open client connection (the listener stays up).
    pub fn kick_clients(&self) {
        self.inner.kick.kick();
    }

    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        self.inner.kick.kick();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for PjlinkSim {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.inner.kick.kick();
    }
}

impl super::Served for Inner {
    const NAME: &'static str = "pjlink sim";

    fn conns(&self) -> &Arc<Counter> {
        &self.conns
    }

    fn kick(&self) -> &Kick {
        &self.kick
    }

    async fn serve(self: Arc<Self>, stream: TcpStream) -> std::io::Result<()> {
        serve(stream, &self).await
    }
}

fn digest(random: &str, password: &str) -> String {
    let d = Md5::digest(format!("{random}{password}").as_bytes());
    hex::encode(d)
}

async fn serve(stream: TcpStream, inner: &Inner) -> std::io::Result<()> {
    let (mut r, mut w) = stream.into_split();
    let random = inner
        .opts
        .password
        .as_ref()
        .map(|_| format!("{:08x}", fastrand::u32(..)));
    match &random {
        Some(rnd) => w.write_all(format!("PJLINK 1 {rnd}\r").as_bytes()).await?,
        None => w.write_all(b"PJLINK 0\r").await?,
    }
    let expected = random
        .as_ref()
        .zip(inner.opts.password.as_ref())
        .map(|(r, p)| digest(r, p));
    let mut authed = expected.is_none();
    let mut lines = LineReader::new(b"\r", MAX_LINE);
    loop {
        let next = match inner.opts.idle_timeout {
            Some(t) => match tokio::time::timeout(t, lines.next_line(&mut r)).await {
                Ok(r) => r?,
                Err(_) => return Ok(()),
            },
            None => lines.next_line(&mut r).await?,
        };
        let line = match next {
            Ok(Some(l)) => l,
            Ok(None) => return Ok(()),
            Err(super::TooLong) => return Ok(()),
        };
        let line = String::from_utf8_lossy(&line);
        let mut cmd = line.trim_start_matches('\n');
        // A digest may prefix any command; it must prefix the first one
        // when authentication is on.
        if let Some(exp) = &expected
            && (!authed || (cmd.len() >= 32 && !cmd.starts_with('%')))
        {
            if cmd.len() >= 32 && cmd.is_char_boundary(32) && &cmd[..32] == exp.as_str() {
                cmd = &cmd[32..];
                authed = true;
            } else {
                w.write_all(b"PJLINK ERRA\r").await?;
                return Ok(());
            }
        }
        let mut reply = respond(inner, cmd);
        tracing::info!(command = cmd, reply = %reply, "pjlink: command");
        reply.push('\r');
        w.write_all(reply.as_bytes()).await?;
    }
}

fn respond(inner: &Inner, cmd: &str) -> String {
    let mut st = inner.state.lock_unpoisoned();
    st.commands += 1;
    if !cmd.starts_with("%1") || cmd.len() < 7 || !cmd.is_char_boundary(6) {
        let name = cmd.get(2..6).unwrap_or("????");
        return format!("%1{name}=ERR1");
    }
    let name = &cmd[2..6];
    if cmd.as_bytes()[6] != b' ' {
        return format!("%1{name}=ERR2");
    }
    let param = &cmd[7..];
    let ok = |v: &str| format!("%1{name}={v}");
    let power = st.power();
    match (name, param) {
        ("POWR", "?") => ok(power_code(power)),
        ("POWR", "1" | "0") if st.failure => ok("ERR4"),
        ("POWR", "1") => ok(switch_power(&mut st, inner, true)),
        ("POWR", "0") => ok(switch_power(&mut st, inner, false)),
        ("POWR", _) => ok("ERR2"),
        ("INPT", "?") if power != Power::On => ok("ERR3"),
        ("INPT", "?") => ok(&st.input.clone()),
        ("INPT", p) => ok(set_input(&mut st, inner, p)),
        ("AVMT", "?") if power != Power::On => ok("ERR3"),
        ("AVMT", "?") => ok(&st.mute.clone()),
        ("AVMT", p) => ok(set_mute(&mut st, p)),
        ("ERST", "?") => ok(&st.errors.clone()),
        ("LAMP", "?") => ok(&format!(
            "{} {}",
            inner.opts.lamp_hours,
            u8::from(power == Power::On)
        )),
        ("INST", "?") => ok(&inner.opts.inputs.join(" ")),
        ("NAME", "?") => ok(&inner.opts.name),
        ("INF1", "?") => ok("Outpost"),
        ("INF2", "?") => ok("SIM-1"),
        ("INFO", "?") => ok("simulated projector"),
        ("CLSS", "?") => ok("1"),
        ("ERST" | "LAMP" | "INST" | "NAME" | "INF1" | "INF2" | "INFO" | "CLSS", _) => ok("ERR2"),
        _ => ok("ERR1"),
    }
}

/// `POWR 1` / `POWR 0`: starts warming up or cooling down; refused while
/// the projector is between states.
fn switch_power(st: &mut State, inner: &Inner, on: bool) -> &'static str {
    match (st.power(), on) {
        (Power::On, true) | (Power::Off, false) => "OK",
        (Power::Off, true) => {
            st.power = PowerState::Warming(Instant::now() + inner.opts.warmup);
            log_power(Power::Warming);
            "OK"
        }
        (Power::On, false) => {
            st.power = PowerState::Cooling(Instant::now() + inner.opts.cooldown);
            log_power(Power::Cooling);
            "OK"
        }
        (Power::Warming | Power::Cooling, _) => "ERR3",
    }
}

/// `INPT n`: a known input, while powered on and not failed.
fn set_input(st: &mut State, inner: &Inner, input: &str) -> &'static str {
    if !inner.opts.inputs.iter().any(|i| i == input) {
        "ERR2"
    } else if st.failure {
        "ERR4"
    } else if st.power() != Power::On {
        "ERR3"
    } else {
        if st.input != input {
            tracing::info!(input, "pjlink: input changed");
        }
        st.input = input.to_owned();
        "OK"
    }
}

/// `AVMT nn`: audio/video mute on or off, while powered on and not failed.
fn set_mute(st: &mut State, mute: &str) -> &'static str {
    if !matches!(mute, "10" | "11" | "20" | "21" | "30" | "31") {
        "ERR2"
    } else if st.failure {
        "ERR4"
    } else if st.power() != Power::On {
        "ERR3"
    } else {
        let new = match mute {
            "11" | "21" | "31" => "31",
            _ => "30",
        };
        if st.mute != new {
            tracing::info!(mute = new, "pjlink: AV mute changed");
        }
        st.mute = new.into();
        "OK"
    }
}
