//! TLS session resumption: what keeps a reconnect storm cheap. A resumed
//! handshake skips the certificate signature and its verification.

use std::sync::Arc;

use outpost::link::tls;
use outpost::store::{Store, StoreOptions};
use rustls::HandshakeKind;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::support::{EdgeIdentity, dev_certs};

/// An edge that reconnects resumes its session, again and again, and with
/// mutual TLS the resumed session still names the edge by its certificate
/// (the master's check that a certificate opens only its own edge's door
/// holds on every reconnect). The master issues one stateless ticket per
/// handshake: it keeps nothing per edge that a storm could evict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_edge_resumes_its_tls_session_and_keeps_its_identity() {
    let certs = dev_certs();
    let id = EdgeIdentity::new();
    let dir = certs.paths.ca_cert.parent().unwrap();
    let (cert, key) = outpost::certs::issue_edge(dir, id.id, false).unwrap();
    let server = tls::server_config(
        &certs.paths.cert,
        &certs.paths.key,
        Some(&certs.paths.ca_cert),
    )
    .unwrap();
    assert!(server.ticketer.enabled(), "tickets are stateless");
    assert_eq!(server.send_tls13_tickets, 1);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(server);
    let accepting = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..3 {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            let conn = tls.get_ref().1;
            let leaf = conn.peer_certificates().and_then(|c| c.first()).cloned();
            let named = leaf.is_some_and(|c| tls::names_edge(&c, id.id));
            seen.push((conn.handshake_kind(), named));
            // A byte after the handshake: the client reads the ticket
            // that precedes it.
            tls.write_all(b"!").await.unwrap();
            tls.shutdown().await.unwrap();
        }
        seen
    });
    let client = tls::client_config(&certs.paths.ca_cert, Some((&cert, &key))).unwrap();
    let connector = TlsConnector::from(Arc::clone(&client));
    for _ in 0..3 {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.unwrap();
    }
    let seen = accepting.await.unwrap();
    assert_eq!(
        seen,
        [
            (Some(HandshakeKind::Full), true),
            (Some(HandshakeKind::Resumed), true),
            (Some(HandshakeKind::Resumed), true),
        ]
    );
}

/// Masters that share a database share the secret their session tickets
/// are sealed with: an edge that reconnects to the master restarted on its
/// database (or to the next MASTER of a cluster) resumes its session. A
/// master on another database cannot open the ticket: a full handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_resumes_on_a_master_restarted_on_its_database_and_only_there() {
    let certs = dev_certs();
    let dir = tempfile::tempdir().unwrap();
    let secret_of = async |db: &str| {
        let url = format!("sqlite://{}", dir.path().join(db).display());
        let store = Store::open(&StoreOptions::new(url)).await.unwrap();
        let secret = store.link_ticket_secret().await.unwrap();
        store.close().await;
        secret
    };
    let first = secret_of("master.db").await;
    let restarted = secret_of("master.db").await;
    assert_eq!(first, restarted, "the secret outlives the process");
    let other = secret_of("other.db").await;
    assert_ne!(first, other);
    assert_eq!(format!("{first:?}"), "TicketSecret(<redacted>)");
    let server = |secret| {
        let own = tls::server_config(&certs.paths.cert, &certs.paths.key, None).unwrap();
        TlsAcceptor::from(tls::with_shared_tickets(&own, secret))
    };
    let client = tls::client_config(&certs.paths.ca_cert, None).unwrap();
    let mut kinds = Vec::new();
    for acceptor in [server(&first), server(&restarted), server(&other)] {
        kinds.push(handshake_kind(acceptor, &client).await);
    }
    assert_eq!(
        kinds,
        [
            Some(HandshakeKind::Full),
            Some(HandshakeKind::Resumed),
            Some(HandshakeKind::Full),
        ]
    );
}

/// One connection from `client` to a fresh listener of `acceptor`: how
/// the server saw its handshake.
async fn handshake_kind(
    acceptor: TlsAcceptor,
    client: &Arc<rustls::ClientConfig>,
) -> Option<HandshakeKind> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepting = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        let kind = tls.get_ref().1.handshake_kind();
        // A byte after the handshake: the client reads the ticket that
        // precedes it.
        tls.write_all(b"!").await.unwrap();
        tls.shutdown().await.unwrap();
        kind
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = TlsConnector::from(Arc::clone(client))
        .connect(name, tcp)
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    tls.read_exact(&mut byte).await.unwrap();
    accepting.await.unwrap()
}
