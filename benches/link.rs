//! Edge link benchmarks (issue 4); figures go to BENCHMARKS.md.
//!
//! `cargo bench --bench link` runs both parts:
//! - `rpc`: exec round trips on one TLS link (1 and 256 in flight, and a
//!   fixed 20,000 requests/s), against a raw TLS ping-pong of the same
//!   payload (the floor), the same ping-pong doing the link's JSON work per
//!   request (the floor with JSON: what any JSON RPC must pay, without
//!   tasks, ids or deadlines) and tarpc over the same kind of TLS stream.
//! - `edges`: N simulated edges (default 10,000; `OUTPOST_BENCH_EDGES`) in a
//!   child process (this binary re-invoked as `edge-sim`), from several
//!   127.0.0.x source addresses, held by one master: connect storm time,
//!   master memory per edge, idle CPU, then a reconnect storm, and two
//!   restart storms (the next master holding the ticket secret or not).
//!
//! - `authz`: exec round trips from an edge to the master at 256 in flight,
//!   through the master's per-site check (`master::authorize::SiteGuard`,
//!   a store of 10,000 modules in 1,000 sites) and without it, in
//!   interleaved rounds (issue 12; `BENCH_SECS`, `BENCH_ROUNDS`).
//!
//! - `loss`: how long each side takes to declare a link dead after a
//!   blackhole (a proxy that stops forwarding and closes nothing), over
//!   `OUTPOST_BENCH_TRIALS` (20) links at the default timing, each cut at a
//!   random phase of its heartbeat.
//!
//! `cargo bench --bench link -- rpc`, `-- edges`, `-- authz` or `-- loss`
//! runs one part.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    unreachable_pub,
    missing_debug_implementations,
    reason = "tests and benchmarks fail loudly by design, and their items are not an API"
)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use outpost::certs;
use outpost::link::edge::{self, CommitCell, EdgeLinkConfig, EdgeLinkEvent};
use outpost::link::master::{self, MasterLinkConfig, MasterLinkEvent};
use outpost::link::peer::{Handler, Peer, PeerConfig, PeerRole, RequestCtx};
use outpost::link::{LinkTiming, Registry, tls};
use outpost::proto::{RequestBody, ResponseBody, WireError};
use outpost::secret::{EdgeSecret, LinkKey, TicketSecret};
use rustls_pki_types::ServerName;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[path = "support/process.rs"]
mod process;
use process::{cpu_seconds, cpu_seconds_of, rss_bytes};
#[path = "../tests/support/proxy.rs"]
mod proxy;

/// Stands in for a logic module: echoes the exec arguments.
struct Echo;

impl Handler for Echo {
    async fn handle(&self, _ctx: RequestCtx, body: RequestBody) -> Result<ResponseBody, WireError> {
        match body {
            RequestBody::Exec { args, .. } => Ok(ResponseBody::Value { value: args }),
            _ => Ok(ResponseBody::Done),
        }
    }
}

fn args() -> Value {
    json!({"cmd": "power", "value": true, "input": "hdmi1", "seq": 123456, "pad": "0123456789abcdef"})
}

fn exec() -> RequestBody {
    RequestBody::Exec {
        module: "logic_1".into(),
        method: "set".into(),
        args: args(),
        epoch: Some(1),
    }
}

fn main() {
    let argv: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    match argv.first().map(String::as_str) {
        Some("edge-sim") => edge_sim(&argv[1..]),
        Some("bare-sim") => bare_sim(&argv[1..]),
        Some("rpc") => rpc(),
        Some("profile") => profile(),
        Some("profile-tarpc") => profile_tarpc(),
        Some("edges") => edges(),
        Some("authz") => authz(),
        Some("loss") => loss(),
        _ => {
            rpc();
            edges();
            authz();
            loss();
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(
            std::env::var("OUTPOST_BENCH_WORKERS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(2),
        )
        .enable_all()
        .build()
        .unwrap()
}

fn dev_certs(dir: &std::path::Path) -> certs::DevCerts {
    certs::install_crypto_provider();
    certs::init_dev(dir, &["localhost".into(), "127.0.0.1".into()], true).unwrap()
}

// ---------------------------------------------------------------- stats

struct Stats {
    count: usize,
    elapsed: Duration,
    lat: Vec<Duration>,
}

impl Stats {
    fn rps(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&mut self, p: f64) -> Duration {
        self.lat.sort_unstable();
        if self.lat.is_empty() {
            return Duration::ZERO;
        }
        self.lat[((self.lat.len() - 1) as f64 * p) as usize]
    }
    fn line(&mut self, name: &str) {
        let (p50, p99) = (self.pct(0.5), self.pct(0.99));
        println!(
            "  {name:<34} {:>10.0} req/s   p50 {:>8.1} µs   p99 {:>8.1} µs   ({} requests)",
            self.rps(),
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
            self.count
        );
    }
}

/// Runs `workers` closed loops of `call` for `dur`.
async fn closed_loop<F, Fut>(workers: usize, dur: Duration, call: F) -> Stats
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let start = Instant::now();
    let end = start + dur;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let call = call.clone();
        set.spawn(async move {
            let mut lat = Vec::with_capacity(1 << 16);
            while Instant::now() < end {
                let t = Instant::now();
                call().await;
                lat.push(t.elapsed());
            }
            lat
        });
    }
    let mut lat = Vec::new();
    while let Some(l) = set.join_next().await {
        lat.extend(l.unwrap());
    }
    Stats {
        count: lat.len(),
        elapsed: start.elapsed(),
        lat,
    }
}

// ---------------------------------------------------------------- rpc

fn rpc() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dev_certs(dir.path());
    let dur = Duration::from_secs(
        std::env::var("OUTPOST_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(4),
    );
    runtime().block_on(async move {
        let payload_len = outpost::proto::frame::encode(
            &outpost::proto::Frame::<_, (), ()>::Request { id: 1_000_000, deadline_ms: 10_000, body: &exec() },
            1 << 20,
        )
        .unwrap()
        .len();
        println!("## rpc: exec round trips on one TLS 1.3 link (loopback, 2 tokio workers, {dur:?} per row)");
        println!("  request frame payload: {payload_len} bytes; handler: in-process JSON echo (stands in for a logic module)");

        // Our link: master -> edge exec, as the API would proxy it.
        let link = LinkBench::start(&certs).await;
        let peer = link.to_edge.clone();
        let call = move || {
            let p = peer.clone();
            async move {
                p.request(exec(), Duration::from_secs(10)).await.unwrap();
            }
        };
        // Raw TLS floor and tarpc, same payload, same kind of socket.
        let raw_addr = raw_server(&certs, Ok).await;
        let json_addr = raw_server(&certs, answer_as_the_link_does).await;
        let tarpc_client = tarpc_pair(&certs).await;
        let tcall = move || {
            let c = tarpc_client.clone();
            async move {
                c.exec(tarpc::context::current(), "logic_1".into(), "set".into(), args())
                    .await
                    .unwrap();
            }
        };

        // Rounds interleave the three contenders, so background load on
        // the machine hits them alike; rates are medians over rounds,
        // percentiles over all requests.
        let rounds: usize = std::env::var("OUTPOST_BENCH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
        for inflight in [1usize, 256] {
            println!("### {inflight} in flight ({rounds} interleaved rounds of {dur:?})");
            closed_loop(inflight, Duration::from_millis(300), call.clone()).await;
            closed_loop(inflight, Duration::from_millis(300), tcall.clone()).await;
            let mut all: [Vec<Stats>; 4] = Default::default();
            for _ in 0..rounds {
                all[0].push(closed_loop(inflight, dur, call.clone()).await);
                all[1].push(raw_floor(&certs, raw_addr, Floor::Bytes(payload_len), inflight, dur).await);
                all[2].push(closed_loop(inflight, dur, tcall.clone()).await);
                all[3].push(raw_floor(&certs, json_addr, Floor::Json, inflight, dur).await);
            }
            let mut res = Vec::new();
            let names = ["outpost link", "raw TLS ping-pong (floor)", "tarpc over TLS (json)", "floor with the link's JSON"];
            for (name, runs) in names.iter().zip(all) {
                let mut rates: Vec<f64> = runs.iter().map(Stats::rps).collect();
                rates.sort_by(f64::total_cmp);
                let median = rates[rates.len() / 2];
                let mut pooled = Stats { count: 0, elapsed: Duration::ZERO, lat: Vec::new() };
                for r in runs {
                    pooled.count += r.count;
                    pooled.lat.extend(r.lat);
                }
                let (p50, p99) = (pooled.pct(0.5), pooled.pct(0.99));
                println!(
                    "  {name:<28} {median:>10.0} req/s (rounds: {})   p50 {:>8.1} µs   p99 {:>8.1} µs",
                    rates.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", "),
                    p50.as_secs_f64() * 1e6,
                    p99.as_secs_f64() * 1e6
                );
                res.push((median, p50, p99));
            }
            let (l, r, t, j) = (res[0], res[1], res[2], res[3]);
            println!(
                "  ratios: link/floor throughput {:.2}, p50 {:.2}x, p99 {:.2}x; link/tarpc throughput {:.2}, p50 {:.2}x, p99 {:.2}x",
                l.0 / r.0,
                l.1.as_secs_f64() / r.1.as_secs_f64(),
                l.2.as_secs_f64() / r.2.as_secs_f64(),
                l.0 / t.0,
                l.1.as_secs_f64() / t.1.as_secs_f64(),
                l.2.as_secs_f64() / t.2.as_secs_f64(),
            );
            println!(
                "  link/(floor with JSON) throughput {:.2}; (floor with JSON)/floor {:.2}",
                l.0 / j.0,
                j.0 / r.0,
            );
        }

        // Open loop at a fixed rate: latency measured from the scheduled send
        // time (no coordinated omission).
        let rate = 20_000u64;
        let mut stats = fixed_rate(&link.to_edge, rate, dur).await;
        println!("### fixed rate {rate} requests/s");
        stats.line("outpost link");
        link.stop().await;
    });
}

/// Sends `rate` requests per second for `dur`, evenly spaced by a pacer
/// thread (the tokio timer ticks in milliseconds, which would send bursts),
/// one task each; latency counts from the moment each is issued.
async fn fixed_rate(peer: &Peer, rate: u64, dur: Duration) -> Stats {
    let total = rate * dur.as_secs();
    let lat = Arc::new(std::sync::Mutex::new(Vec::with_capacity(total as usize)));
    let tracker = tokio_util::task::TaskTracker::new();
    let handle = tokio::runtime::Handle::current();
    let start = Instant::now();
    let pacer = {
        let (peer, lat, tracker) = (peer.clone(), lat.clone(), tracker.clone());
        std::thread::spawn(move || {
            let period = Duration::from_nanos(1_000_000_000 / rate);
            for n in 0..total {
                let due = start + period * n as u32;
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let issued = Instant::now();
                let (p, lat) = (peer.clone(), lat.clone());
                tracker.spawn_on(
                    async move {
                        match p.request(exec(), Duration::from_secs(10)).await {
                            Ok(_) => lat.lock().unwrap().push(issued.elapsed()),
                            Err(e) => eprintln!("request failed: {e}"),
                        }
                    },
                    &handle,
                );
            }
        })
    };
    tokio::task::spawn_blocking(move || pacer.join().unwrap())
        .await
        .unwrap();
    tracker.close();
    tracker.wait().await;
    let lat = std::mem::take(&mut *lat.lock().unwrap());
    Stats {
        count: lat.len(),
        elapsed: start.elapsed(),
        lat,
    }
}

/// Only the link at 256 in flight, for `perf record`.
fn profile() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dev_certs(dir.path());
    runtime().block_on(async move {
        let link = LinkBench::start(&certs).await;
        let peer = link.to_edge.clone();
        let call = move || {
            let p = peer.clone();
            async move {
                p.request(exec(), Duration::from_secs(10)).await.unwrap();
            }
        };
        // OUTPOST_BENCH_SECS (default 5): a short run under callgrind.
        let secs = std::env::var("OUTPOST_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5);
        closed_loop(256, Duration::from_secs(secs), call)
            .await
            .line("outpost link");
        link.stop().await;
    });
}

/// tarpc alone at 256 in flight, for the same profiles.
fn profile_tarpc() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dev_certs(dir.path());
    runtime().block_on(async move {
        let client = tarpc_pair(&certs).await;
        let call = move || {
            let c = client.clone();
            async move {
                c.exec(
                    tarpc::context::current(),
                    "logic_1".into(),
                    "set".into(),
                    args(),
                )
                .await
                .unwrap();
            }
        };
        let secs = std::env::var("OUTPOST_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5);
        closed_loop(256, Duration::from_secs(secs), call)
            .await
            .line("tarpc");
    });
}

struct LinkBench {
    to_edge: Peer,
    master_stop: CancellationToken,
    edge_stop: CancellationToken,
    /// The master's events after the link came up (the loss bench's clock).
    master_events: mpsc::Receiver<MasterLinkEvent>,
    /// The edge's events, when the caller asked to keep them.
    edge_events: Option<mpsc::UnboundedReceiver<EdgeLinkEvent>>,
}

impl LinkBench {
    async fn start(certs: &certs::DevCerts) -> Self {
        Self::start_via(certs, |addr| async move { addr }, false).await
    }

    /// Starts a master and an edge whose connection goes to `route(master)`
    /// (a proxy, for the loss bench); `keep_edge_events` hands the edge's
    /// events to the caller instead of logging lost links.
    async fn start_via<R, Fut>(certs: &certs::DevCerts, route: R, keep_edge_events: bool) -> Self
    where
        R: FnOnce(SocketAddr) -> Fut,
        Fut: std::future::Future<Output = SocketAddr>,
    {
        let id = Uuid::now_v7();
        let secret = EdgeSecret::generate();
        let keys: HashMap<Uuid, LinkKey> = [(id, secret.link_key(id))].into();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cfg = MasterLinkConfig {
            tls: tls::server_config(&certs.cert, &certs.key, None).unwrap(),
            peer: PeerConfig::new(PeerRole::Master, LinkTiming::default()),
            boot_id: Uuid::now_v7(),
            max_handshakes: 64,
            // The storm stands for edges at many sites: their addresses are
            // distinct in life, a few loopback ones here.
            admission: outpost::link::AdmissionLimits {
                max_unauthenticated: 20_000,
                per_source: 20_000,
            },
            failure_report_interval: Duration::ZERO,
            shutdown_grace: Duration::from_secs(1),
            store_id: None,
            leadership: outpost::control::leadership::alone_watch(),
            probe: None,
        };
        let (tx, mut events) = mpsc::channel(1 << 16);
        let registry = Registry::new(tx);
        let master_stop = CancellationToken::new();
        tokio::spawn(master::serve(
            listener,
            cfg,
            Arc::new(keys),
            Arc::new(Echo),
            registry,
            master_stop.clone(),
        ));
        let ecfg = EdgeLinkConfig {
            edge_id: id,
            key: secret.link_key(id),
            masters: vec![route(addr).await.to_string()],
            tls: tls::client_config(&certs.ca_cert, None).unwrap(),
            peer: PeerConfig::new(PeerRole::Edge, LinkTiming::default()),
            reconnect: Duration::from_secs(3),
            boot_id: Uuid::now_v7(),
            commit: CommitCell::default(),
            bind: None,
            stand_down: Default::default(),
        };
        let (etx, mut erx) = mpsc::unbounded_channel();
        let edge_events = if keep_edge_events {
            Some(erx)
        } else {
            tokio::spawn(async move {
                while let Some(ev) = erx.recv().await {
                    if let EdgeLinkEvent::ConnectionLost { reason, .. } = ev {
                        eprintln!("  (link lost: {reason})");
                    }
                }
            });
            None
        };
        let edge_stop = CancellationToken::new();
        tokio::spawn(edge::run(ecfg, Arc::new(Echo), etx, edge_stop.clone()));
        let to_edge = loop {
            if let Some(MasterLinkEvent::LinkUp { peer, .. }) = events.recv().await {
                break peer;
            }
        };
        Self {
            to_edge,
            master_stop,
            edge_stop,
            master_events: events,
            edge_events,
        }
    }

    async fn stop(self) {
        self.edge_stop.cancel();
        self.master_stop.cancel();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the link's edge does with an exec frame, without the link: decode
/// the envelope, parse the body, answer the echo's value, encode.
fn answer_as_the_link_does(frame: Bytes) -> Result<Bytes, std::io::Error> {
    use outpost::proto::{Frame, frame};
    let bad = |e: String| std::io::Error::other(e);
    let Ok(Frame::Request { id, body, .. }) = frame::decode_sliced(&frame) else {
        return Err(bad("not a request".into()));
    };
    let result = match frame::parse_request(body).map_err(|e| bad(e.to_string()))? {
        Ok(RequestBody::Exec { args, .. }) => Ok(ResponseBody::Value { value: args }),
        Ok(_) => Ok(ResponseBody::Done),
        Err(e) => Err(e),
    };
    frame::encode(
        &Frame::<(), _, ()>::Response {
            id,
            result: &result,
        },
        1 << 20,
    )
    .map_err(|e| bad(e.to_string()))
}

/// The floor: a TLS echo server with length-delimited frames and batched
/// writes, no envelope, no dispatch; or, with `answer`, each frame
/// answered by that function instead of echoed.
async fn raw_server(
    certs: &certs::DevCerts,
    answer: fn(Bytes) -> Result<Bytes, std::io::Error>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor =
        tokio_rustls::TlsAcceptor::from(tls::server_config(&certs.cert, &certs.key, None).unwrap());
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let tls = acceptor.accept(s).await.unwrap();
                let mut framed = Framed::new(tls, LengthDelimitedCodec::new());
                while let Some(Ok(f)) = framed.next().await {
                    let Ok(a) = answer(f.freeze()) else { return };
                    if framed.feed(a).await.is_err() {
                        return;
                    }
                    // Echo everything already buffered before one flush.
                    while let Some(Some(Ok(f))) = framed.next().now_or_never() {
                        let Ok(a) = answer(f.freeze()) else { return };
                        if framed.feed(a).await.is_err() {
                            return;
                        }
                    }
                    if futures_util::SinkExt::<Bytes>::flush(&mut framed)
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// What the floor's client sends and checks.
#[derive(Clone, Copy)]
enum Floor {
    /// Frames of this many bytes, echoed.
    Bytes(usize),
    /// Exec requests encoded, and their answers parsed, as the link's
    /// caller does (`exec()` built per request, the result parsed).
    Json,
}

impl Floor {
    fn request(self, filler: &Bytes) -> Bytes {
        use outpost::proto::{Frame, frame};
        match self {
            Floor::Bytes(_) => filler.clone(),
            Floor::Json => frame::encode(
                &Frame::<_, (), ()>::Request {
                    id: 1,
                    deadline_ms: 10_000,
                    body: &exec(),
                },
                1 << 20,
            )
            .unwrap(),
        }
    }

    fn check(self, answer: &[u8]) {
        use outpost::proto::{Frame, frame};
        match self {
            Floor::Bytes(len) => assert_eq!(answer.len(), len),
            Floor::Json => {
                let Ok(Frame::Response { result, .. }) = frame::decode_sliced(answer) else {
                    panic!("not a response");
                };
                let value = frame::parse_result(result).unwrap().unwrap();
                assert!(matches!(value, ResponseBody::Value { .. }));
            }
        }
    }
}

/// One task pipelining `inflight` frames (echo is FIFO, so a queue of send
/// times gives each latency).
async fn raw_floor(
    certs: &certs::DevCerts,
    addr: SocketAddr,
    floor: Floor,
    inflight: usize,
    dur: Duration,
) -> Stats {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let connector =
        tokio_rustls::TlsConnector::from(tls::client_config(&certs.ca_cert, None).unwrap());
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let mut framed = Framed::new(tls, LengthDelimitedCodec::new());
    let filler = match floor {
        Floor::Bytes(len) => Bytes::from(vec![b'x'; len]),
        Floor::Json => Bytes::new(),
    };
    let mut sent: VecDeque<Instant> = VecDeque::with_capacity(inflight);
    let mut lat = Vec::with_capacity(1 << 20);
    let start = Instant::now();
    let end = start + dur;
    loop {
        let now = Instant::now();
        if now < end {
            while sent.len() < inflight {
                framed.feed(floor.request(&filler)).await.unwrap();
                sent.push_back(Instant::now());
            }
            futures_util::SinkExt::<Bytes>::flush(&mut framed)
                .await
                .unwrap();
        } else if sent.is_empty() {
            break;
        }
        let f = framed.next().await.unwrap().unwrap();
        floor.check(&f);
        lat.push(sent.pop_front().unwrap().elapsed());
        while let Some(Some(Ok(f))) = framed.next().now_or_never() {
            floor.check(&f);
            lat.push(sent.pop_front().unwrap().elapsed());
        }
    }
    Stats {
        count: lat.len(),
        elapsed: start.elapsed(),
        lat,
    }
}

#[tarpc::service]
trait Logic {
    async fn exec(module: String, method: String, args: Value) -> Value;
}

#[derive(Clone)]
struct LogicServer;

impl Logic for LogicServer {
    async fn exec(
        self,
        _: tarpc::context::Context,
        _module: String,
        _method: String,
        args: Value,
    ) -> Value {
        args
    }
}

async fn tarpc_pair(certs: &certs::DevCerts) -> LogicClient {
    use tarpc::server::{BaseChannel, Channel as _};
    use tarpc::tokio_serde::formats::Json;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor =
        tokio_rustls::TlsAcceptor::from(tls::server_config(&certs.cert, &certs.key, None).unwrap());
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        let tls = acceptor.accept(s).await.unwrap();
        let transport = tarpc::serde_transport::new(
            Framed::new(tls, LengthDelimitedCodec::new()),
            Json::default(),
        );
        BaseChannel::with_defaults(transport)
            .execute(LogicServer.serve())
            .for_each(|f| async move {
                tokio::spawn(f);
            })
            .await;
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let connector =
        tokio_rustls::TlsConnector::from(tls::client_config(&certs.ca_cert, None).unwrap());
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let transport = tarpc::serde_transport::new(
        Framed::new(tls, LengthDelimitedCodec::new()),
        Json::default(),
    );
    let mut config = tarpc::client::Config::default();
    config.max_in_flight_requests = 1024;
    config.pending_request_buffer = 1024;
    LogicClient::new(config, transport).spawn()
}

// ---------------------------------------------------------------- edges

const ID_BASE: u128 = 0x0b0b_0000_0000_7000_8000_0000_0000_0000;

fn edge_identity(i: usize) -> (Uuid, LinkKey) {
    let id = Uuid::from_u128(ID_BASE + i as u128);
    let secret = EdgeSecret::from_string(format!("outpost-bench-edge-secret-{i:016}")).unwrap();
    (id, secret.link_key(id))
}

/// Source addresses the simulated edges connect from.
const SOURCES: u8 = 8;

/// Link timing of the edges part: defaults, or `OUTPOST_BENCH_HEARTBEAT_MS`
/// with a dead time of three heartbeats.
fn edges_timing() -> LinkTiming {
    let mut t = LinkTiming::default();
    if let Some(ms) = std::env::var("OUTPOST_BENCH_HEARTBEAT_MS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        t.heartbeat = Duration::from_millis(ms);
        t.dead_after = Duration::from_millis(3 * ms);
    }
    t
}

/// The master of the `edges` part: admission sized for the storm.
fn edges_master_config(tls: Arc<rustls::ServerConfig>) -> MasterLinkConfig {
    let mut cfg = MasterLinkConfig {
        tls,
        peer: PeerConfig::new(PeerRole::Master, edges_timing()),
        boot_id: Uuid::now_v7(),
        max_handshakes: 256,
        // The storm stands for edges at many sites: their addresses are
        // distinct in life, a few loopback ones here.
        admission: outpost::link::AdmissionLimits {
            max_unauthenticated: 20_000,
            per_source: 20_000,
        },
        failure_report_interval: Duration::ZERO,
        shutdown_grace: Duration::from_secs(2),
        store_id: None,
        leadership: outpost::control::leadership::alone_watch(),
        probe: None,
    };
    cfg.peer.timing.handshake_timeout = Duration::from_secs(30);
    cfg
}

fn edge_count() -> usize {
    std::env::var("OUTPOST_BENCH_EDGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000)
}

fn edges() {
    let n = edge_count();
    let dir = tempfile::tempdir().unwrap();
    let certs = dev_certs(dir.path());
    let keys: HashMap<Uuid, LinkKey> = (0..n).map(edge_identity).collect();
    runtime().block_on(async move {
        println!("## edges: {n} simulated edges in a child process, {SOURCES} source addresses, heartbeat {:?}", edges_timing().heartbeat);
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(4096).unwrap();
        let addr = listener.local_addr().unwrap();
        // Tickets sealed with a secret the "database" holds: the restart
        // storms below start a master that holds it, and one that does not.
        let secret = TicketSecret::generate();
        let own_tickets = || tls::server_config(&certs.cert, &certs.key, None).unwrap();
        let cfg = edges_master_config(tls::with_shared_tickets(&own_tickets(), &secret));
        let (tx, mut events) = mpsc::channel(1 << 16);
        let registry = Registry::new(tx);
        let ups = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(AtomicUsize::new(0));
        tokio::spawn({
            let (ups, failures) = (ups.clone(), failures.clone());
            async move {
                while let Some(ev) = events.recv().await {
                    match ev {
                        MasterLinkEvent::LinkUp { .. } => {
                            ups.fetch_add(1, Ordering::Relaxed);
                        }
                        MasterLinkEvent::AuthFailed { .. } => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                        MasterLinkEvent::LinkLost { .. } => {}
                    }
                }
            }
        });
        let keys = Arc::new(keys);
        let mut stop = CancellationToken::new();
        let mut serving = tokio::spawn(master::serve(listener, cfg, keys.clone(), Arc::new(Echo), registry.clone(), stop.clone()));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss0 = rss_bytes();

        let t0 = Instant::now();
        let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
            .arg("edge-sim")
            .arg(addr.to_string())
            .arg(n.to_string())
            .arg(&certs.ca_cert)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let connected = wait_until(|| registry.len() >= n, Duration::from_secs(120)).await;
        let storm1 = t0.elapsed();
        println!(
            "  initial connect storm: {} of {n} edges authenticated in {:.2} s (incl. child start; {} handshake failures)",
            registry.len(),
            storm1.as_secs_f64(),
            failures.load(Ordering::Relaxed)
        );
        if !connected {
            println!("  not all edges connected; stopping");
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rss1 = rss_bytes();
        let idle = Duration::from_secs(std::env::var("OUTPOST_BENCH_IDLE_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10));
        let c0 = cpu_seconds();
        let f0 = frames_of(&registry);
        tokio::time::sleep(idle).await;
        let cpu = (cpu_seconds() - c0) / idle.as_secs_f64();
        let f1 = frames_of(&registry);
        let held = registry.len();
        // Links that closed during the window take their counts along:
        // the figure is only meaningful when every edge stayed connected.
        let per_edge = |a: u64, b: u64| a.saturating_sub(b) as f64 / idle.as_secs_f64() / held.max(1) as f64;
        let (rx_rate, tx_rate) = (per_edge(f1.read, f0.read), per_edge(f1.written, f0.written));
        println!("  idle frames per edge per second at the master: {rx_rate:.3} read, {tx_rate:.3} written");
        println!(
            "  master memory: {:.1} MiB before, {:.1} MiB with {held} edges: {:.1} KiB per edge",
            rss0 as f64 / 1048576.0,
            rss1 as f64 / 1048576.0,
            (rss1.saturating_sub(rss0)) as f64 / 1024.0 / held.max(1) as f64
        );
        println!("  master idle CPU with {held} edges: {:.1} % of one core (over {idle:?})", cpu * 100.0);

        // Reconnect storm: the master drops every link at once (as after a
        // network blip); every edge reconnects immediately.
        let before = ups.load(Ordering::Relaxed);
        let t0 = Instant::now();
        for info in registry.list() {
            if let Some(p) = registry.peer(info.edge_id) {
                p.close(outpost::link::CloseReason::Local);
            }
        }
        let ok = wait_until(|| ups.load(Ordering::Relaxed) >= before + n && registry.len() >= n, Duration::from_secs(120)).await;
        println!(
            "  reconnect storm: {} of {n} edges re-authenticated in {:.2} s{}",
            ups.load(Ordering::Relaxed) - before,
            t0.elapsed().as_secs_f64(),
            if ok { "" } else { " (incomplete)" }
        );
        // Restart storms: the master ends and another starts on its
        // address; every edge reconnects (after its jittered retry delay,
        // the same for both), resuming its session only if the new master
        // can open its ticket.
        for (what, tls) in [
            ("a master holding the database's ticket secret", tls::with_shared_tickets(&own_tickets(), &secret)),
            ("a master with a ticket key of its own", own_tickets()),
        ] {
            stop.cancel();
            let _ = serving.await;
            wait_until(|| registry.is_empty(), Duration::from_secs(30)).await;
            let socket = TcpSocket::new_v4().unwrap();
            socket.set_reuseaddr(true).unwrap();
            socket.bind(addr).unwrap();
            let listener = socket.listen(4096).unwrap();
            let before = ups.load(Ordering::Relaxed);
            let sim = child.id().unwrap();
            let (t0, c0, s0) = (Instant::now(), cpu_seconds(), cpu_seconds_of(sim));
            stop = CancellationToken::new();
            serving = tokio::spawn(master::serve(listener, edges_master_config(tls), keys.clone(), Arc::new(Echo), registry.clone(), stop.clone()));
            let ok = wait_until(|| ups.load(Ordering::Relaxed) >= before + n && registry.len() >= n, Duration::from_secs(120)).await;
            println!(
                "  restart storm, {what}: {} of {n} edges in {:.2} s, CPU {:.2} s master, {:.2} s edges{}",
                ups.load(Ordering::Relaxed) - before,
                t0.elapsed().as_secs_f64(),
                cpu_seconds() - c0,
                cpu_seconds_of(sim) - s0,
                if ok { "" } else { " (incomplete)" }
            );
        }
        let _ = child.kill().await;
        stop.cancel();
        drop(child);
        tokio::time::sleep(Duration::from_secs(2)).await;
        if rx_rate > 0.0 {
            let floor = idle_floor(&certs, n, rx_rate, idle).await;
            println!(
                "  physical floor (bare TLS echo, {n} connections, one {}-byte record each way per {:.2} s): {:.1} % of one core; link idle / floor = {:.2}",
                PING_RECORD.len(),
                1.0 / rx_rate,
                floor * 100.0,
                cpu / floor
            );
        }
    });
}

/// The keepalive record of the floor: a frame the size of the link's ping.
const PING_RECORD: &[u8] = b"\"Ping\"";

/// The master's idle CPU with nothing but the keepalive records: `n` TLS
/// connections from a child process (`bare-sim`), each sending one record
/// every `1 / rate` seconds, which the server echoes at once (a reply in
/// the same wake-up as the record it answers, the cheapest way to hear
/// and be heard). No envelope, no timers on this side, no tasks but one
/// per connection.
async fn idle_floor(certs: &certs::DevCerts, n: usize, rate: f64, idle: Duration) -> f64 {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(4096).unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor =
        tokio_rustls::TlsAcceptor::from(tls::server_config(&certs.cert, &certs.key, None).unwrap());
    let up = Arc::new(AtomicUsize::new(0));
    let server = tokio::spawn({
        let up = up.clone();
        async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                s.set_nodelay(true).unwrap();
                let (acceptor, up) = (acceptor.clone(), up.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(s).await else {
                        return;
                    };
                    up.fetch_add(1, Ordering::Relaxed);
                    let mut framed = Framed::new(tls, LengthDelimitedCodec::new());
                    while let Some(Ok(f)) = framed.next().await {
                        if framed.send(f.freeze()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    });
    let period_ms = (1000.0 / rate).round() as u64;
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .arg("bare-sim")
        .arg(addr.to_string())
        .arg(n.to_string())
        .arg(&certs.ca_cert)
        .arg(period_ms.to_string())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    if !wait_until(|| up.load(Ordering::Relaxed) >= n, Duration::from_secs(120)).await {
        println!(
            "  (floor: only {} of {n} connections up; its figure is for those)",
            up.load(Ordering::Relaxed)
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let c0 = cpu_seconds();
    tokio::time::sleep(idle).await;
    let cpu = (cpu_seconds() - c0) / idle.as_secs_f64();
    let _ = child.kill().await;
    server.abort();
    cpu
}

/// The floor's child: `bare-sim ADDR N CA PERIOD_MS`, N TLS connections
/// each sending one record per period, at phases spread over the period.
fn bare_sim(args: &[String]) {
    let addr: SocketAddr = args[0].parse().unwrap();
    let n: usize = args[1].parse().unwrap();
    let ca = std::path::PathBuf::from(&args[2]);
    let period = Duration::from_millis(args[3].parse().unwrap());
    certs::install_crypto_provider();
    runtime().block_on(async move {
        let connector = tokio_rustls::TlsConnector::from(tls::client_config(&ca, None).unwrap());
        for i in 0..n {
            let connector = connector.clone();
            tokio::spawn(async move {
                let socket = TcpSocket::new_v4().unwrap();
                let source = std::net::IpAddr::from([127, 0, 0, 10 + (i % SOURCES as usize) as u8]);
                socket.bind(SocketAddr::new(source, 0)).unwrap();
                // A refused connection (a saturated machine) is one
                // connection fewer; the parent waits for the count.
                let Ok(tcp) = socket.connect(addr).await else {
                    return;
                };
                tcp.set_nodelay(true).unwrap();
                let Ok(tls) = connector
                    .connect(ServerName::try_from("localhost").unwrap(), tcp)
                    .await
                else {
                    return;
                };
                let mut framed = Framed::new(tls, LengthDelimitedCodec::new());
                let phase = period.mul_f64(i as f64 / n as f64);
                let mut tick =
                    tokio::time::interval_at(tokio::time::Instant::now() + phase, period);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            if framed.send(Bytes::from_static(PING_RECORD)).await.is_err() {
                                return;
                            }
                        }
                        f = framed.next() => if !matches!(f, Some(Ok(_))) { return },
                    }
                }
            });
        }
        std::future::pending::<()>().await;
    });
}

/// Frames moved so far by every link the registry holds.
fn frames_of(registry: &Registry) -> outpost::link::peer::FrameCounts {
    let mut sum = outpost::link::peer::FrameCounts::default();
    for info in registry.list() {
        if let Some(p) = registry.peer(info.edge_id) {
            let f = p.frames();
            sum.read += f.read;
            sum.written += f.written;
        }
    }
    sum
}

async fn wait_until(mut f: impl FnMut() -> bool, max: Duration) -> bool {
    let end = Instant::now() + max;
    while Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// The child process: `edge-sim ADDR N CA`.
fn edge_sim(args: &[String]) {
    let master = args[0].clone();
    let n: usize = args[1].parse().unwrap();
    let ca = std::path::PathBuf::from(&args[2]);
    certs::install_crypto_provider();
    runtime().block_on(async move {
        // Each simulated edge gets its own client configuration, as a real
        // edge has: TLS session tickets are cached per server name, so a
        // shared cache would let only a handful of edges resume.
        let base = (*tls::client_config(&ca, None).unwrap()).clone();
        let no_resume = std::env::var_os("OUTPOST_BENCH_NO_RESUME").is_some();
        let handler = Arc::new(Echo);
        let stop = CancellationToken::new();
        let (tx, mut rx) = mpsc::unbounded_channel::<EdgeLinkEvent>();
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        for i in 0..n {
            let (edge_id, key) = edge_identity(i);
            let cfg = EdgeLinkConfig {
                edge_id,
                key,
                masters: vec![master.clone()],
                tls: {
                    let mut c = base.clone();
                    c.resumption = if no_resume {
                        rustls::client::Resumption::disabled()
                    } else {
                        rustls::client::Resumption::in_memory_sessions(4)
                    };
                    Arc::new(c)
                },
                peer: {
                    let mut p = PeerConfig::new(PeerRole::Edge, edges_timing());
                    p.timing.handshake_timeout = Duration::from_secs(30);
                    p
                },
                reconnect: Duration::from_secs(3),
                boot_id: Uuid::now_v7(),
                commit: CommitCell::default(),
                bind: Some(std::net::IpAddr::from([
                    127,
                    0,
                    0,
                    10 + (i % SOURCES as usize) as u8,
                ])),
                stand_down: Default::default(),
            };
            tokio::spawn(edge::run(cfg, handler.clone(), tx.clone(), stop.clone()));
        }
        std::future::pending::<()>().await;
    });
}

// ---------------------------------------------------------------- authz

/// The master's side for `authz`: the per-site check (when `on`), then an
/// echo standing in for the module.
struct Guarded {
    guard: outpost::master::authorize::SiteGuard,
    on: std::sync::atomic::AtomicBool,
}

impl Handler for Guarded {
    async fn handle(&self, ctx: RequestCtx, body: RequestBody) -> Result<ResponseBody, WireError> {
        if self.on.load(Ordering::Relaxed) {
            self.guard.check(ctx.peer.meta().edge_id, &body).await?;
        }
        match body {
            RequestBody::Exec { args, .. } => Ok(ResponseBody::Value { value: args }),
            _ => Ok(ResponseBody::Done),
        }
    }
}

/// 1,000 edge locations, each with one system of 10 modules; returns the
/// site in the middle and its modules.
async fn thousand_sites(store: &outpost::store::Store) -> (Uuid, Vec<Uuid>) {
    use outpost::model::{ControlSystem, EdgeLocation, Module, new_id};
    let mut file = outpost::admin::SiteFile::default();
    for s in 0..1_000 {
        let edge: EdgeLocation =
            serde_json::from_value(json!({"id": new_id(), "name": format!("site {s}")})).unwrap();
        let modules: Vec<Module> = (0..10)
            .map(|m| Module {
                id: new_id(),
                name: format!("module {s}.{m}"),
                driver: "room.lua".into(),
                uri: None,
                settings: Default::default(),
                enabled: true,
            })
            .collect();
        file.systems.push(ControlSystem {
            id: new_id(),
            name: format!("room {s}"),
            description: String::new(),
            edge_id: Some(edge.id),
            module_ids: modules.iter().map(|m| m.id).collect(),
            settings: Default::default(),
            stopped: false,
        });
        file.edges.push(edge);
        file.modules.extend(modules);
    }
    outpost::admin::import(store, &file, &Default::default())
        .await
        .unwrap();
    let mid = file.edges[500].id;
    let own = file.modules[5_000..5_010].iter().map(|m| m.id).collect();
    (mid, own)
}

// ---------------------------------------------------------------- loss

/// Loss detection after a blackhole (issue 16): each trial is its own
/// master and edge at the default timing, talking through a proxy that is
/// told to forward nothing after the link has idled a while plus a random
/// part of a heartbeat. The clock runs from that command to each side's
/// loss event. Trials run side by side; an idle link costs nothing, so
/// they do not slow each other.
fn loss() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Arc::new(dev_certs(dir.path()));
    let trials: usize = std::env::var("OUTPOST_BENCH_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let timing = LinkTiming::default();
    println!(
        "## loss: blackhole to loss event, {trials} trials (heartbeat {:?}, dead_after {:?})",
        timing.heartbeat, timing.dead_after
    );
    runtime().block_on(async move {
        let mut set = tokio::task::JoinSet::new();
        for trial in 0..trials {
            let certs = certs.clone();
            let phase = Duration::from_millis((trial as u64 * 389) % 1000);
            set.spawn(async move { loss_trial(&certs, phase).await });
        }
        let (mut master, mut edge) = (Vec::new(), Vec::new());
        while let Some(r) = set.join_next().await {
            let (m, e) = r.unwrap();
            master.push(m);
            edge.push(e);
        }
        let dead = timing.dead_after.as_secs_f64() * 1e3;
        for (side, mut v) in [("master", master), ("edge", edge)] {
            v.sort_unstable();
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            let (p50, p99) = (v[(v.len() - 1) / 2], v[((v.len() - 1) as f64 * 0.99) as usize]);
            println!(
                "  {side:<6} detects: min {:>6.0} ms   p50 {:>6.0} ms   p99 {:>6.0} ms   max {:>6.0} ms   p99 ÷ dead_after {:.2} (target ≤ {:.2})",
                ms(v[0]),
                ms(p50),
                ms(p99),
                ms(v[v.len() - 1]),
                ms(p99) / dead,
                (dead + 500.0) / dead,
            );
        }
    });
}

/// One trial: (master's detection time, edge's detection time).
async fn loss_trial(certs: &certs::DevCerts, phase: Duration) -> (Duration, Duration) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut link = LinkBench::start_via(
        certs,
        |addr| async move {
            let p = proxy::Proxy::start(addr).await;
            let a = p.addr();
            let _ = tx.send(p);
            a
        },
        true,
    )
    .await;
    let proxy = rx.await.unwrap();
    let mut edge_events = link.edge_events.take().unwrap();
    // Past the connect burst, into the steady heartbeat, then a random phase.
    tokio::time::sleep(Duration::from_secs(2) + phase).await;
    let cut = Instant::now();
    proxy.blackhole();
    let master = async {
        loop {
            match link.master_events.recv().await {
                Some(MasterLinkEvent::LinkLost { .. }) => return cut.elapsed(),
                Some(_) => {}
                None => panic!("master events closed"),
            }
        }
    };
    let edge = async {
        loop {
            match edge_events.recv().await {
                Some(EdgeLinkEvent::ConnectionLost { .. }) => return cut.elapsed(),
                Some(_) => {}
                None => panic!("edge events closed"),
            }
        }
    };
    let both = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(master, edge)
    })
    .await
    .expect("a side never declared the blackholed link dead");
    link.stop().await;
    drop(proxy);
    both
}

fn authz() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dev_certs(&dir.path().join("certs"));
    let dur = Duration::from_secs(
        std::env::var("BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3),
    );
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    runtime().block_on(async move {
        let url = format!("sqlite://{}", dir.path().join("master.db").display());
        let store = outpost::store::Store::open(&outpost::store::StoreOptions::new(url)).await.unwrap();
        let (edge_id, modules) = thousand_sites(&store).await;
        let handler = Arc::new(Guarded {
            guard: outpost::master::authorize::SiteGuard::new(store.clone()),
            on: true.into(),
        });
        let secret = EdgeSecret::generate();
        let keys: HashMap<Uuid, LinkKey> = [(edge_id, secret.link_key(edge_id))].into();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cfg = MasterLinkConfig {
            tls: tls::server_config(&certs.cert, &certs.key, None).unwrap(),
            peer: PeerConfig::new(PeerRole::Master, LinkTiming::default()),
            boot_id: Uuid::now_v7(),
            max_handshakes: 64,
            admission: outpost::link::AdmissionLimits::default(),
            shutdown_grace: Duration::from_secs(1),
            store_id: None,
            leadership: outpost::control::leadership::alone_watch(),
                probe: None,
            failure_report_interval: Duration::ZERO,
        };
        let (tx, _events) = mpsc::channel(1 << 16);
        let stop = CancellationToken::new();
        tokio::spawn(master::serve(listener, cfg, Arc::new(keys), handler.clone(), Registry::new(tx), stop.clone()));
        let ecfg = EdgeLinkConfig {
            edge_id,
            key: secret.link_key(edge_id),
            masters: vec![addr.to_string()],
            tls: tls::client_config(&certs.ca_cert, None).unwrap(),
            peer: PeerConfig::new(PeerRole::Edge, LinkTiming::default()),
            reconnect: Duration::from_secs(3),
            boot_id: Uuid::now_v7(),
            commit: CommitCell::default(),
            bind: None,
            stand_down: Default::default(),
        };
        let (etx, mut erx) = mpsc::unbounded_channel();
        tokio::spawn(edge::run(ecfg, Arc::new(Echo), etx, stop.clone()));
        let to_master = loop {
            if let Some(EdgeLinkEvent::Connected { peer, .. }) = erx.recv().await {
                break peer;
            }
        };
        // The edge calls its own ten modules in turn, as its clients would
        // through the proxy path.
        let next = Arc::new(AtomicUsize::new(0));
        let modules = Arc::new(modules);
        let call = move || {
            let (p, next, modules) = (to_master.clone(), next.clone(), modules.clone());
            async move {
                let i = next.fetch_add(1, Ordering::Relaxed) % modules.len();
                let body = RequestBody::Exec { module: modules[i].to_string(), method: "set".into(), args: args(), epoch: Some(1) };
                p.request(body, Duration::from_secs(10)).await.unwrap();
            }
        };
        println!("## authz: edge -> master exec at 256 in flight, 10,000 modules in 1,000 sites (SQLite), {rounds} interleaved rounds of {dur:?}");
        closed_loop(256, Duration::from_millis(500), call.clone()).await;
        let mut rates: [Vec<f64>; 2] = Default::default();
        for _ in 0..rounds {
            for (i, on) in [true, false].into_iter().enumerate() {
                handler.on.store(on, Ordering::Relaxed);
                rates[i].push(closed_loop(256, dur, call.clone()).await.rps());
            }
        }
        let mut medians = [0.0; 2];
        for (i, name) in ["with the per-site check", "without it"].into_iter().enumerate() {
            rates[i].sort_by(f64::total_cmp);
            medians[i] = rates[i][rates[i].len() / 2];
            println!("  {name:<26} {:>10.0} req/s (rounds: {})", medians[i],
                rates[i].iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", "));
        }
        println!("  ratio with/without: {:.3} (target >= 0.9)", medians[0] / medians[1]);
        stop.cancel();
        tokio::time::sleep(Duration::from_millis(100)).await;
    });
}
