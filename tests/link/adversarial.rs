//! Peers that lie, stall or flood: each is cut off (or denied) and the
//! master keeps serving honest edges.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use outpost::link::CallError;
use outpost::link::handshake::{self, HandshakeError, Hello};
use outpost::link::master::HANDSHAKE_THROTTLE;
use outpost::link::{CloseReason, tls};
use outpost::proto::frame::with_length_prefix;
use outpost::proto::{
    DenyReason, Handshake, PROTOCOL_VERSION, Preface, RepoOp, RequestBody, ResponseBody, WireError,
};
use outpost::util::FailureThrottle;
use rustls_pki_types::ServerName;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use uuid::Uuid;

use crate::roles;
use crate::support::*;

pub(crate) async fn tls_connect(certs: &Certs, addr: std::net::SocketAddr) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let cfg = tls::client_config(&certs.paths.ca_cert, None).unwrap();
    TlsConnector::from(cfg)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

pub(crate) fn exporter(s: &TlsStream<TcpStream>) -> [u8; 32] {
    tls::exporter(s.get_ref().1).unwrap()
}

/// A raw, authenticated connection: what a malicious but keyed edge holds.
async fn raw_edge(
    certs: &Certs,
    addr: std::net::SocketAddr,
    id: &EdgeIdentity,
) -> TlsStream<TcpStream> {
    let mut s = tls_connect(certs, addr).await;
    let ex = exporter(&s);
    let hello = Hello {
        edge_id: id.id,
        boot_id: Uuid::now_v7(),
        commit: None,
        max_in_flight: 8,
    };
    handshake::connect(&mut s, ex, &id.key(), &hello)
        .await
        .unwrap();
    s
}

pub(crate) async fn send_raw(s: &mut TlsStream<TcpStream>, payload: &[u8]) {
    s.write_all(&with_length_prefix(payload)).await.unwrap();
    s.flush().await.unwrap();
}

pub(crate) async fn read_frame(s: &mut TlsStream<TcpStream>) -> serde_json::Value {
    let len = within("a frame", s.read_u32()).await.unwrap() as usize;
    let mut b = vec![0u8; len];
    s.read_exact(&mut b).await.unwrap();
    serde_json::from_slice(&b).unwrap()
}

/// Reads until the peer closes (or errors); true if it did.
/// The master cut link `session` as malformed, and its raw edge saw the
/// connection end.
async fn cut_as_malformed(m: &mut Master, s: &mut TlsStream<TcpStream>, session: u64) {
    assert!(closed_by_peer(s).await);
    let (_, lost, reason) = m.next_lost().await;
    assert_eq!(lost, session);
    assert!(
        matches!(reason, CloseReason::Protocol(ref r) if r.contains("malformed")),
        "{reason}"
    );
}

async fn closed_by_peer(s: &mut TlsStream<TcpStream>) -> bool {
    let mut buf = vec![0u8; 65536];
    loop {
        match within("the peer to close", s.read(&mut buf)).await {
            Ok(0) | Err(_) => return true,
            Ok(_) => {}
        }
    }
}

async fn honest_edge_still_served(certs: &Certs, m: &mut Master, id: &EdgeIdentity) {
    let mut e = start_edge(
        edge_config(certs, id, vec![m.addr.to_string()]),
        TestHandler::default(),
    );
    let p = e.connected().await;
    let r = p
        .request(
            outpost::proto::RequestBody::Exec {
                module: "echo".into(),
                method: "x".into(),
                args: json!(5),
                epoch: None,
            },
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(r, outpost::proto::ResponseBody::Value { value: json!(5) });
    e.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_and_unknown_edge_are_denied_and_recorded() {
    let certs = dev_certs();
    let good = EdgeIdentity::new();
    let mut m = start_master(&certs, MasterOpts::new(keys(&[&good]))).await;

    // Wrong secret for a known id.
    let liar = EdgeIdentity {
        id: good.id,
        secret: outpost::secret::EdgeSecret::generate(),
    };
    let mut s = tls_connect(&certs, m.addr).await;
    let ex = exporter(&s);
    let hello = Hello {
        edge_id: liar.id,
        boot_id: Uuid::now_v7(),
        commit: None,
        max_in_flight: 8,
    };
    let err = handshake::connect(&mut s, ex, &liar.key(), &hello)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            HandshakeError::Denied {
                reason: Some(DenyReason::BadProof),
                ..
            }
        ),
        "{err}"
    );
    let (edge, reason) = m.next_auth_failure().await;
    assert_eq!(edge, Some(good.id));
    assert!(reason.contains("wrong edge proof"), "{reason}");

    // Unknown edge id: on a link speaking version 2 the edge learns why
    // (ids are random UUIDs: this helps no prober), and the master records it.
    let stranger = EdgeIdentity::new();
    let mut e = start_edge(
        edge_config(&certs, &stranger, vec![m.addr.to_string()]),
        TestHandler::default(),
    );
    loop {
        if let outpost::link::EdgeLinkEvent::Refused { reason, .. } = e.next_event().await {
            assert_eq!(reason, Some(DenyReason::UnknownEdge));
            break;
        }
    }
    e.stop().await;
    let (edge, reason) = m.next_auth_failure().await;
    assert_eq!(edge, Some(stranger.id));
    assert!(reason.contains("unknown edge"), "{reason}");
    assert!(m.registry.is_empty());
    honest_edge_still_served(&certs, &mut m, &good).await;
    m.stop().await;
}

/// Records everything written through it.
struct Recorder<S> {
    inner: S,
    written: Arc<Mutex<Vec<u8>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Recorder<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recorder<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.written.lock().unwrap().extend_from_slice(&buf[..*n]);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_handshake_messages_are_denied() {
    let certs = dev_certs();
    let id = EdgeIdentity::new();
    let mut m = start_master(&certs, MasterOpts::new(keys(&[&id]))).await;

    // Record a genuine edge's handshake bytes (plaintext, inside TLS).
    let written = Arc::new(Mutex::new(Vec::new()));
    let s = tls_connect(&certs, m.addr).await;
    let ex = exporter(&s);
    let mut rec = Recorder {
        inner: s,
        written: written.clone(),
    };
    let hello = Hello {
        edge_id: id.id,
        boot_id: Uuid::now_v7(),
        commit: None,
        max_in_flight: 8,
    };
    handshake::connect(&mut rec, ex, &id.key(), &hello)
        .await
        .unwrap();
    m.next_up().await;
    let recorded = written.lock().unwrap().clone();

    // Replay them, byte for byte, on a new connection.
    let mut s = tls_connect(&certs, m.addr).await;
    s.write_all(&recorded).await.unwrap();
    s.flush().await.unwrap();
    let mut preface = [0u8; 10];
    s.read_exact(&mut preface).await.unwrap();
    assert!(matches!(
        handshake::read_msg(&mut s).await.unwrap(),
        Handshake::Challenge { .. }
    ));
    assert_eq!(
        handshake::read_msg(&mut s).await.unwrap(),
        Handshake::Denied {
            reason: Some(DenyReason::BadProof),
            store_id: None
        }
    );
    let (edge, reason) = m.next_auth_failure().await;
    assert_eq!(edge, Some(id.id));
    assert!(reason.contains("wrong edge proof"), "{reason}");
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_tls_and_stalled_handshakes_are_closed() {
    let certs = dev_certs();
    let id = EdgeIdentity::new();
    let mut opts = MasterOpts::new(keys(&[&id]));
    opts.timing = fast_timing();
    opts.timing.handshake_timeout = Duration::from_millis(300);
    let mut m = start_master(&certs, opts).await;

    let mut tcp = TcpStream::connect(m.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = within("close after garbage", tcp.read_to_end(&mut buf)).await;
    let (_, reason) = m.next_auth_failure().await;
    assert!(reason.starts_with("TLS"), "{reason}");

    // TCP connected, nothing sent.
    let mut tcp = TcpStream::connect(m.addr).await.unwrap();
    let _ = within("close of a silent connection", tcp.read_to_end(&mut buf)).await;
    let (_, reason) = m.next_auth_failure().await;
    assert!(reason.contains("timed out"), "{reason}");

    // TLS done, then silence before the handshake.
    let mut s = tls_connect(&certs, m.addr).await;
    assert!(closed_by_peer(&mut s).await);
    let (_, reason) = m.next_auth_failure().await;
    assert!(reason.contains("timed out"), "{reason}");

    honest_edge_still_served(&certs, &mut m, &id).await;
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_mismatch_is_a_clear_error_on_both_sides() {
    let certs = dev_certs();
    let id = EdgeIdentity::new();
    let mut m = start_master(&certs, MasterOpts::new(keys(&[&id]))).await;
    let mut s = tls_connect(&certs, m.addr).await;
    s.write_all(
        &Preface {
            version: PROTOCOL_VERSION + 2,
        }
        .encode(),
    )
    .await
    .unwrap();
    s.flush().await.unwrap();
    let mut theirs = [0u8; 10];
    s.read_exact(&mut theirs).await.unwrap();
    let err = Preface::check(&{
        // What a newer edge sees: our preface against its own version.
        let mut p = theirs;
        p[8..].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
        p
    });
    assert!(err.is_ok());
    assert_eq!(Preface::decode(&theirs).unwrap().version, PROTOCOL_VERSION);
    assert!(closed_by_peer(&mut s).await);
    let (_, reason) = m.next_auth_failure().await;
    assert!(reason.contains("version mismatch"), "{reason}");
    assert!(
        reason.contains(&format!("we speak {PROTOCOL_VERSION}")),
        "{reason}"
    );

    // The edge side, against a peer speaking another version.
    let (mut a, mut b) = tokio::io::duplex(1024);
    let peer = tokio::spawn(async move {
        b.write_all(&Preface { version: 9 }.encode()).await.unwrap();
        let mut x = [0u8; 10];
        let _ = b.read_exact(&mut x).await;
    });
    let hello = Hello {
        edge_id: id.id,
        boot_id: Uuid::now_v7(),
        commit: None,
        max_in_flight: 1,
    };
    let err = handshake::connect(&mut a, [0; 32], &id.key(), &hello)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "protocol version mismatch: we speak {PROTOCOL_VERSION} (and accept one version either side), the peer speaks 9"
        )
    );
    peer.await.unwrap();

    // Bad magic.
    let mut s = tls_connect(&certs, m.addr).await;
    s.write_all(b"HELLO?????").await.unwrap();
    assert!(closed_by_peer(&mut s).await);
    let (_, reason) = m.next_auth_failure().await;
    assert!(reason.contains("bad magic"), "{reason}");
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kinds_get_typed_errors_and_malformed_frames_close_the_link() {
    let certs = dev_certs();
    let id = EdgeIdentity::new();
    let mut opts = MasterOpts::new(keys(&[&id]));
    // The master's keepalive (a Pong after `dead_after - 2 × heartbeat` of
    // quiet) must come well before it declares this ping-less raw peer
    // dead: 800 ms apart, so a loaded machine does not lose the race.
    opts.timing.heartbeat = Duration::from_millis(400);
    opts.timing.dead_after = Duration::from_secs(2);
    let mut m = start_master(&certs, opts).await;
    let mut s = raw_edge(&certs, m.addr, &id).await;
    let (_, session, _) = m.next_up().await;

    send_raw(
        &mut s,
        br#"{"Request":{"id":1,"deadline_ms":5000,"body":{"kind":"teleport","to":"mars"}}}"#,
    )
    .await;
    let f = read_frame(&mut s).await;
    assert_eq!(
        f,
        json!({"Response": {"id": 1, "result": {"Err": {"code": "unknown_kind", "kind": "teleport"}}}})
    );
    send_raw(
        &mut s,
        br#"{"Request":{"id":2,"deadline_ms":5000,"body":{"kind":"exec","module":5}}}"#,
    )
    .await;
    let f = read_frame(&mut s).await;
    assert_eq!(f["Response"]["result"]["Err"]["code"], json!("bad_request"));
    send_raw(&mut s, br#"{"Event":{"body":{"kind":"from_the_future"}}}"#).await;
    send_raw(&mut s, br#""Ping""#).await;
    assert_eq!(read_frame(&mut s).await, json!("Pong"));
    assert_eq!(m.registry.len(), 1, "the link survives unknown kinds");

    send_raw(&mut s, b"{not json").await;
    cut_as_malformed(&mut m, &mut s, session).await;
    m.stop().await;
}

/// The reader finds the body of an envelope in the shape our encoder
/// writes without reading it (`frame::decode_sliced`); a body there that is
/// not JSON must still cut the link, wherever it is parsed: a request's by
/// the reader, a response's by its caller or, with none, by the reader, an
/// event's by the reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_are_not_json_close_the_link() {
    let certs = dev_certs();
    let id = EdgeIdentity::new();
    let mut m = start_master(&certs, MasterOpts::new(keys(&[&id]))).await;
    let frames: [&[u8]; 4] = [
        br#"{"Request":{"id":1,"deadline_ms":5000,"body":{"kind":"exec",}}}"#,
        br#"{"Response":{"id":77,"result":{"Ok":}}}"#,
        br#"{"Event":{"body":{"kind":"debug"}}}}"#,
        b"{\"Request\":{\"id\":1,\"deadline_ms\":5000,\"body\":{\"kind\":\"st\xffatus\"}}}",
    ];
    for frame in frames {
        let mut s = raw_edge(&certs, m.addr, &id).await;
        let (_, session, _) = m.next_up().await;
        // Shown with the failure, if any.
        eprintln!("frame: {}", String::from_utf8_lossy(frame));
        send_raw(&mut s, frame).await;
        cut_as_malformed(&mut m, &mut s, session).await;
    }

    // A response with a caller waiting: the caller gets an error, and the
    // link is cut all the same.
    let mut s = raw_edge(&certs, m.addr, &id).await;
    let (_, session, _) = m.next_up().await;
    let to_edge = m.registry.peer(id.id).unwrap();
    let call = tokio::spawn(async move {
        let body = RequestBody::Status {
            module: "m".into(),
            key: None,
        };
        to_edge.request(body, Duration::from_secs(30)).await
    });
    let request = read_frame(&mut s).await;
    let asked = request["Request"]["id"].as_u64().unwrap();
    send_raw(
        &mut s,
        format!(r#"{{"Response":{{"id":{asked},"result":{{"Ok":}}}}}}"#).as_bytes(),
    )
    .await;
    let answer = call.await.unwrap();
    assert!(
        matches!(answer, Err(CallError::BadResponse(_))),
        "{answer:?}"
    );
    cut_as_malformed(&mut m, &mut s, session).await;
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_close_the_link() {
    let certs = dev_certs();
    let id = EdgeIdentity::new();
    let mut opts = MasterOpts::new(keys(&[&id]));
    opts.max_frame = 4096;
    let mut m = start_master(&certs, opts).await;
    let mut s = raw_edge(&certs, m.addr, &id).await;
    m.next_up().await;
    // Only the length prefix: the master must not wait for the bytes.
    s.write_all(&(1u32 << 30).to_be_bytes()).await.unwrap();
    s.flush().await.unwrap();
    assert!(closed_by_peer(&mut s).await);
    let (_, _, reason) = m.next_lost().await;
    assert_eq!(
        reason,
        CloseReason::Protocol("frame exceeds the maximum size".into())
    );

    // An oversized handshake message, too.
    let mut s = tls_connect(&certs, m.addr).await;
    s.write_all(&Preface::ours().encode()).await.unwrap();
    s.write_all(&(1u32 << 20).to_be_bytes()).await.unwrap();
    s.flush().await.unwrap();
    assert!(closed_by_peer(&mut s).await);
    let (_, reason) = m.next_auth_failure().await;
    assert!(reason.contains("too large"), "{reason}");
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_flood_from_a_peer_that_does_not_read_is_cut_off() {
    let certs = dev_certs();
    let flooder = EdgeIdentity::new();
    let honest = EdgeIdentity::new();
    let mut opts = MasterOpts::new(keys(&[&flooder, &honest]));
    opts.max_in_flight = 16;
    opts.outbound_queue = 64;
    opts.timing = fast_timing();
    let mut m = start_master(&certs, opts).await;
    let mut s = raw_edge(&certs, m.addr, &flooder).await;
    m.next_up().await;
    // Tens of thousands of requests, never reading a byte of the answers.
    let writer = tokio::spawn(async move {
        let mut batch = Vec::new();
        for id in 0..200_000u64 {
            let f = format!(
                r#"{{"Request":{{"id":{id},"deadline_ms":60000,"body":{{"kind":"exec","module":"sleep","method":"x","args":{{"ms":1000}}}}}}}}"#
            );
            batch.extend_from_slice(&with_length_prefix(f.as_bytes()));
            if batch.len() > 64 * 1024 {
                if s.write_all(&batch).await.is_err() {
                    return;
                }
                batch.clear();
            }
        }
        // Keep the socket open without reading.
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let (_, _, reason) = m.next_lost().await;
    assert!(
        matches!(reason, CloseReason::Protocol(_) | CloseReason::Stalled),
        "{reason}"
    );
    writer.abort();
    honest_edge_still_served(&certs, &mut m, &honest).await;
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_is_cut_off() {
    let certs = dev_certs();
    let id = EdgeIdentity::new();
    let mut opts = MasterOpts::new(keys(&[&id]));
    opts.timing = fast_timing();
    opts.outbound_queue = 16;
    let mut m = start_master(&certs, opts).await;
    let mut s = raw_edge(&certs, m.addr, &id).await;
    let (_, _, to_edge) = m.next_up().await;
    // Keep the link alive with pings but never read: the master's events
    // pile up, the socket buffers fill, the writer stalls.
    let pinger = tokio::spawn(async move {
        loop {
            if s.write_all(&with_length_prefix(b"\"Ping\"")).await.is_err() {
                return;
            }
            let _ = s.flush().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let big = "z".repeat(60_000);
    let flood = tokio::spawn(async move {
        loop {
            let ev = outpost::proto::EventBody::Debug {
                module: "m".into(),
                level: "x".into(),
                message: big.clone(),
            };
            if to_edge.event(ev).await.is_err() {
                return;
            }
        }
    });
    let (_, _, reason) = m.next_lost().await;
    assert_eq!(reason, CloseReason::Stalled);
    within("the flood to stop", flood).await.unwrap();
    pinger.abort();
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_are_detected_as_dead() {
    let certs = dev_certs();
    let id = EdgeIdentity::new();
    let mut opts = MasterOpts::new(keys(&[&id]));
    opts.timing = fast_timing();
    let mut m = start_master(&certs, opts).await;
    let _s = raw_edge(&certs, m.addr, &id).await; // authenticated, then silent
    m.next_up().await;
    let (edge, _, reason) = m.next_lost().await;
    assert_eq!(edge, id.id);
    assert!(matches!(reason, CloseReason::Dead(_)), "{reason}");
    assert!(m.registry.is_empty());
    m.stop().await;
}

#[test]
fn repeated_failures_from_one_address_are_slowed_down() {
    let l = FailureThrottle::new(HANDSHAKE_THROTTLE);
    let ip: std::net::IpAddr = "127.0.0.9".parse().unwrap();
    let other: std::net::IpAddr = "127.0.0.10".parse().unwrap();
    let t0 = tokio::time::Instant::now();
    let mut last = Duration::ZERO;
    for i in 0..10 {
        let p = l.penalty(ip, t0);
        if i < HANDSHAKE_THROTTLE.free {
            assert_eq!(p, Duration::ZERO, "failure {i}");
        } else {
            assert!(
                p > Duration::ZERO && p >= last && p <= HANDSHAKE_THROTTLE.cap,
                "failure {i}: {p:?}"
            );
        }
        last = p;
        l.failure(ip, t0);
    }
    assert_eq!(l.penalty(ip, t0), HANDSHAKE_THROTTLE.cap);
    assert_eq!(
        l.penalty(other, t0),
        Duration::ZERO,
        "other addresses are not affected"
    );
    assert_eq!(
        l.penalty(ip, t0 + HANDSHAKE_THROTTLE.window),
        Duration::ZERO,
        "failures expire"
    );
    l.success(ip);
    assert_eq!(l.penalty(ip, t0), Duration::ZERO);
}

/// Writes a fresh CA and one client certificate signed by it; returns
/// (ca.pem, client.pem, client-key.pem).
fn client_ca(
    dir: &std::path::Path,
    edge_id: Uuid,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, &ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec![outpost::certs::edge_dns_name(edge_id)]).unwrap();
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let paths = (
        dir.join("client-ca.pem"),
        dir.join("client.pem"),
        dir.join("client-key.pem"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_edges_without_a_client_certificate() {
    let certs = dev_certs();
    let dir = tempfile::tempdir().unwrap();
    let id = EdgeIdentity::new();
    let (ca, cert, key) = client_ca(dir.path(), id.id);
    let mut opts = MasterOpts::new(keys(&[&id]));
    opts.client_ca = Some(ca);
    let mut m = start_master(&certs, opts).await;

    // No client certificate: TLS fails, recorded, nothing registered.
    let e = start_edge(
        edge_config(&certs, &id, vec![m.addr.to_string()]),
        TestHandler::default(),
    );
    let (_, reason) = m.next_auth_failure().await;
    assert!(reason.starts_with("TLS"), "{reason}");
    e.shutdown.cancel();
    let _ = e.task.await;

    // With one: the link comes up and serves.
    let mut cfg = edge_config(&certs, &id, vec![m.addr.to_string()]);
    cfg.tls = tls::client_config(&certs.paths.ca_cert, Some((&cert, &key))).unwrap();
    let mut e = start_edge(cfg, TestHandler::default());
    let p = e.connected().await;
    let r = p
        .request(
            outpost::proto::RequestBody::Exec {
                module: "echo".into(),
                method: "x".into(),
                args: json!(7),
                epoch: None,
            },
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(r, outpost::proto::ResponseBody::Value { value: json!(7) });
    e.stop().await;
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_silent_connections_is_capped_and_keeps_no_edge_out() {
    let certs = dev_certs();
    let id = EdgeIdentity::new();
    let mut opts = MasterOpts::new(keys(&[&id]));
    opts.timing = fast_timing();
    // Admitted silent sockets keep their slot for the whole test.
    opts.timing.handshake_timeout = Duration::from_secs(60);
    opts.admission = outpost::link::AdmissionLimits {
        max_unauthenticated: 64,
        per_source: 16,
    };
    let mut m = start_master(&certs, opts).await;

    // 400 sockets from one address that never speak: 16 are admitted, the
    // rest are closed at once instead of each holding a task and a slot.
    let flood = 400;
    let closed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut held = Vec::new();
    for _ in 0..flood {
        let mut tcp = TcpStream::connect(m.addr).await.unwrap();
        let closed = closed.clone();
        held.push(tokio::spawn(async move {
            let mut buf = [0u8; 16];
            if matches!(tcp.read(&mut buf).await, Ok(0) | Err(_)) {
                closed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            tcp
        }));
    }
    within("the sockets past the per-source cap to be closed", async {
        while closed.load(std::sync::atomic::Ordering::SeqCst) < flood - 16 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    // An edge from another address gets in while the flood holds its share.
    let mut cfg = edge_config(&certs, &id, vec![m.addr.to_string()]);
    cfg.bind = Some("127.0.0.2".parse().unwrap());
    let mut e = start_edge(cfg, TestHandler::default());
    let p = e.connected().await;
    let (up, _, _) = m.next_up().await;
    assert_eq!(up, id.id);
    assert!(!p.is_closed());
    assert!(
        closed.load(std::sync::atomic::Ordering::SeqCst) <= flood - 16,
        "the admitted sockets stay open until their deadline"
    );
    for h in held {
        h.abort();
    }
    e.stop().await;
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_answers_an_internal_error_and_frees_its_slot() {
    let certs = dev_certs();
    let id = EdgeIdentity::new();
    let mut opts = MasterOpts::new(keys(&[&id]));
    // Two slots: a leaked slot per panic would refuse the third request.
    opts.max_in_flight = 2;
    let mut m = start_master(&certs, opts).await;
    let mut e = start_edge(
        edge_config(&certs, &id, vec![m.addr.to_string()]),
        TestHandler::default(),
    );
    let to_master = e.connected().await;
    let _ = m.next_up().await;
    let exec = |module: &str| outpost::proto::RequestBody::Exec {
        module: module.into(),
        method: "x".into(),
        args: json!(1),
        epoch: None,
    };
    for _ in 0..5 {
        let err = to_master
            .request(exec("panic"), Duration::from_secs(30))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, outpost::link::CallError::Remote(outpost::proto::WireError::Failed { message }) if message == "internal error"),
            "{err:?}"
        );
    }
    let r = to_master
        .request(exec("echo"), Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(r, outpost::proto::ResponseBody::Value { value: json!(1) });
    assert!(
        !to_master.is_closed(),
        "a panic does not take the link down"
    );
    e.stop().await;
    m.stop().await;
}

/// Imports a system of the master's own (no edge location) listing `module`.
async fn master_room(site: &roles::Site, module: &outpost::model::Module) -> Uuid {
    let system = outpost::model::ControlSystem {
        id: outpost::model::new_id(),
        name: "Master room".into(),
        description: String::new(),
        edge_id: None,
        module_ids: vec![module.id],
        settings: Default::default(),
        stopped: false,
    };
    let file = outpost::admin::SiteFile {
        edges: vec![],
        systems: vec![system.clone()],
        modules: vec![module.clone()],
    };
    let store = site.master_store().await;
    outpost::admin::import(&store, &file, &Default::default())
        .await
        .unwrap();
    store.close().await;
    system.id
}

/// Every request kind an edge could send about `module` and `system`,
/// under `epoch`.
fn every_kind_on(module: Uuid, system: Uuid, epoch: Option<u64>) -> Vec<RequestBody> {
    let module = module.to_string();
    vec![
        RequestBody::Exec {
            module: module.clone(),
            method: "projectors".into(),
            args: json!([]),
            epoch,
        },
        RequestBody::Status {
            module: module.clone(),
            key: None,
        },
        RequestBody::Status {
            module: module.clone(),
            key: Some("power".into()),
        },
        RequestBody::ModuleState {
            module: module.clone(),
        },
        RequestBody::DebugSubscribe {
            module: module.clone(),
        },
        RequestBody::DebugUnsubscribe { module },
        RequestBody::StartSystem { system, epoch },
        RequestBody::StopSystem { system, epoch },
        RequestBody::ExpireSystemCache { system },
    ]
}

fn refused_by(r: Result<ResponseBody, CallError>) -> String {
    match r {
        Err(CallError::Remote(WireError::Forbidden { rule, .. })) => rule,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// An edge that authenticated with its own secret, then asks for what is
/// not its site: every request kind on another site's module and system
/// (a site the master took over, so it runs there), and on the master's
/// own, is refused with the rule named; kinds only the master sends are
/// refused too. Its own site's module is served, with its epoch only, and
/// its replication requests get its own site only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authenticated_edge_reaches_only_its_own_site() {
    let site = roles::Site::new();
    let lost = json!({"failover": true, "failover_timeout_ms": 0});
    let own = roles::device("A room", "room.lua", None);
    let other = roles::device("B room", "room.lua", None);
    let masters = roles::device("Master room", "room.lua", None);
    let a = site
        .one_room(lost.clone(), std::slice::from_ref(&own))
        .await;
    let b = site.one_room(lost, std::slice::from_ref(&other)).await;
    let master_system = master_room(&site, &masters).await;
    let master = outpost::master::start(site.master_config()).await.unwrap();
    roles::eventually(10, "the master to run both sites", async || {
        [own.id, other.id, masters.id]
            .iter()
            .all(|id| master.runtime.module_info(*id).is_some())
            && [a.edge_id, b.edge_id].iter().all(|e| {
                master
                    .control
                    .state(*e)
                    .is_some_and(|s| s.controller == outpost::control::Side::Master)
            })
    })
    .await;

    // The malicious edge holds site A's real secret.
    let mut cfg = edge_config_with_ca(
        &site.path().join("certs/ca.pem"),
        &EdgeIdentity::new(),
        vec![master.link_addr.to_string()],
    );
    cfg.edge_id = a.edge_id;
    cfg.key = outpost::secret::EdgeSecret::from_string(a.secret.clone())
        .unwrap()
        .link_key(a.edge_id);
    let mut edge = start_edge(cfg, TestHandler::default());
    let peer = edge.connected().await;
    let epoch = Some(master.control.state(a.edge_id).unwrap().epoch as u64);
    let ask = |body: RequestBody| {
        let peer = peer.clone();
        async move { peer.request(body, Duration::from_secs(10)).await }
    };

    for (module, system) in [(other.id, b.system.id), (masters.id, master_system)] {
        for body in every_kind_on(module, system, epoch) {
            let kind = body.kind();
            assert_eq!(
                refused_by(ask(body).await),
                "own_site",
                "{kind} on {module}"
            );
        }
    }
    let master_only = [
        RequestBody::ReloadDriver {
            name: "room.lua".into(),
            source: None,
        },
        RequestBody::Repository { op: RepoOp::Pull },
        RequestBody::UnsyncedEvents { after: 0, limit: 1 },
        RequestBody::EventsSynced { ids: vec![] },
        RequestBody::ControlReport,
        RequestBody::ControlAssume {
            epoch: 99,
            reason: "mine".into(),
        },
        RequestBody::ControlRelease {
            epoch: 99,
            reason: "yours".into(),
        },
        RequestBody::Superseded {
            by: "127.0.0.1:1".into(),
        },
    ];
    for body in master_only {
        let kind = body.kind();
        assert_eq!(refused_by(ask(body).await), "master_only", "{kind}");
    }
    // Its replication requests name no site: the master answers with the
    // link's site, whatever the edge asks. Other sites' documents and the
    // master's own come, if at all, as tombstones without a body.
    let foreign = [other.id, b.system.id, b.edge_id, masters.id, master_system];
    let changes = RequestBody::Changes {
        after: 0,
        limit: 2000,
        unsynced: None,
    };
    let Ok(ResponseBody::Changes { docs, .. }) = ask(changes).await else {
        panic!("changes refused")
    };
    assert!(docs.iter().any(|d| d.id == own.id && !d.deleted));
    for d in docs.iter().filter(|d| foreign.contains(&d.id)) {
        assert!(d.deleted && d.body == "null" && d.owner.is_none(), "{d:?}");
    }
    for after_id in [None, Some(uuid::Uuid::nil())] {
        let snapshot = RequestBody::SiteSnapshot {
            after_id,
            limit: 2000,
        };
        let Ok(ResponseBody::SiteSnapshot { docs, keep, .. }) = ask(snapshot).await else {
            panic!("site snapshot refused")
        };
        let keep = keep.unwrap();
        assert!(docs.iter().all(|d| keep.contains(&d.id)));
        assert!(keep.contains(&own.id) && keep.contains(&a.system.id));
        assert!(foreign.iter().all(|id| !keep.contains(id)));
    }
    // Every kind the link knows was tried above (the edge's own business
    // aside: changes, site_snapshot, events, repo_tree, repo_blob).
    assert_eq!(RequestBody::KINDS.len(), 8 + 8 + 5);

    // Its own site, which the master runs now: served under its epoch,
    // refused without one.
    let exec = |epoch| RequestBody::Exec {
        module: own.id.to_string(),
        method: "projectors".into(),
        args: json!([]),
        epoch,
    };
    assert!(matches!(
        ask(exec(epoch)).await,
        Ok(ResponseBody::Value { .. })
    ));
    assert_eq!(refused_by(ask(exec(None)).await), "epoch_required");
    let status = RequestBody::Status {
        module: own.id.to_string(),
        key: None,
    };
    assert!(matches!(ask(status).await, Ok(ResponseBody::Status { .. })));
    // The refusals did not cost the link, and each rule is counted.
    assert!(!peer.is_closed());
    let metrics = crate::http::request(master.api_addr, "GET", "/metrics", &[], None).await;
    for rule in ["own_site", "master_only", "epoch_required"] {
        let counted = metrics.body.lines().any(|l| {
            l.starts_with("outpost_link_refused_requests_total")
                && l.contains(&format!("rule=\"{rule}\""))
        });
        assert!(counted, "no {rule} in {}", metrics.body);
    }
    edge.stop().await;
    master.stop().await;
}

/// With mutual TLS, the client certificate names its edge id (a DNS SAN
/// written by `outpost certs issue-edge`): an edge presenting another
/// edge's certificate is refused, even with its own correct secret, and
/// the reason is recorded; its own certificate lets it in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_a_certificate_issued_for_another_edge() {
    let certs = dev_certs();
    let a = EdgeIdentity::new();
    let b = EdgeIdentity::new();
    let dir = certs.paths.ca_cert.parent().unwrap();
    let (a_cert, a_key) = outpost::certs::issue_edge(dir, a.id, false).unwrap();
    let (b_cert, b_key) = outpost::certs::issue_edge(dir, b.id, false).unwrap();
    let mut opts = MasterOpts::new(keys(&[&a, &b]));
    opts.client_ca = Some(certs.paths.ca_cert.clone());
    let mut m = start_master(&certs, opts).await;

    // Edge B, its own secret, edge A's certificate: denied.
    let mut cfg = edge_config(&certs, &b, vec![m.addr.to_string()]);
    cfg.tls = tls::client_config(&certs.paths.ca_cert, Some((&a_cert, &a_key))).unwrap();
    let e = start_edge(cfg, TestHandler::default());
    let (claimed, reason) = m.next_auth_failure().await;
    assert_eq!(claimed, Some(b.id));
    assert!(reason.contains("issued for another edge"), "{reason}");
    e.shutdown.cancel();
    let _ = e.task.await;
    assert!(m.registry.peer(b.id).is_none());

    // Each with its own certificate: both in.
    for (id, cert, key) in [(&a, &a_cert, &a_key), (&b, &b_cert, &b_key)] {
        let mut cfg = edge_config(&certs, id, vec![m.addr.to_string()]);
        cfg.tls = tls::client_config(&certs.paths.ca_cert, Some((cert, key))).unwrap();
        let mut e = start_edge(cfg, TestHandler::default());
        e.connected().await;
        e.stop().await;
    }
    m.stop().await;
}
