//! Upgrades across one protocol version (README.md, "Upgrades"): a master
//! of this build accepts an edge of the previous version, which insists on
//! hearing its own version back, and both sides speak the lower version.
//!
//! The previous-version edge here is written out by hand from the version-1
//! wire format (preface, JSON handshake, HMAC inputs, envelope), not built
//! from this crate's handshake code, so a change of ours that a landed edge
//! would not understand fails this test.

use outpost::link::handshake::{self, Hello, read_msg, write_msg};
use outpost::proto::handshake::Bytes32;
use outpost::proto::{Handshake, PROTOCOL_VERSION, Preface};
use ring::hmac;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use uuid::Uuid;

use crate::adversarial::{exporter, read_frame, send_raw, tls_connect};
use crate::support::*;

/// The version-1 MAC: context, version, edge id, both nonces, exporter.
fn v1_mac(
    key: &hmac::Key,
    context: &[u8],
    edge: Uuid,
    n_e: &[u8; 32],
    n_m: &[u8; 32],
    ex: &[u8; 32],
) -> [u8; 32] {
    let mut m = context.to_vec();
    m.extend_from_slice(&1u16.to_be_bytes());
    m.extend_from_slice(edge.as_bytes());
    m.extend_from_slice(n_e);
    m.extend_from_slice(n_m);
    m.extend_from_slice(ex);
    let mut out = [0u8; 32];
    out.copy_from_slice(hmac::sign(key, &m).as_ref());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_accepts_an_edge_of_the_previous_version() {
    assert_eq!(PROTOCOL_VERSION, 2, "update this test's previous version");
    let certs = dev_certs();
    let id = EdgeIdentity::new();
    let mut m = start_master(&certs, MasterOpts::new(keys(&[&id]))).await;
    let mut s = tls_connect(&certs, m.addr).await;
    let ex = exporter(&s);

    // A version-1 edge writes its preface and accepts only version 1 back.
    s.write_all(&Preface { version: 1 }.encode()).await.unwrap();
    s.flush().await.unwrap();
    let mut theirs = [0u8; 10];
    within("the master's preface", s.read_exact(&mut theirs))
        .await
        .unwrap();
    assert_eq!(Preface::decode(&theirs).unwrap().version, 1);

    let key = id.key().hmac_key();
    let nonce_e = [7u8; 32];
    let hello = Handshake::Hello {
        edge_id: id.id,
        nonce: Bytes32(nonce_e),
        boot_id: Uuid::now_v7(),
        commit: Some("landed".into()),
        max_in_flight: 8,
    };
    write_msg(&mut s, &hello).await.unwrap();
    let Handshake::Challenge { nonce } = read_msg(&mut s).await.unwrap() else {
        panic!("expected a challenge");
    };
    let proof = v1_mac(
        &key,
        b"outpost link edge proof v1\0",
        id.id,
        &nonce_e,
        &nonce.0,
        &ex,
    );
    write_msg(
        &mut s,
        &Handshake::Proof {
            mac: Bytes32(proof),
        },
    )
    .await
    .unwrap();
    let Handshake::Welcome { mac, .. } = read_msg(&mut s).await.unwrap() else {
        panic!("expected a welcome");
    };
    let expected = v1_mac(
        &key,
        b"outpost link master proof v1\0",
        id.id,
        &nonce_e,
        &nonce.0,
        &ex,
    );
    assert_eq!(mac.0, expected, "the master proves itself in version 1");

    let (_, _, peer) = m.next_up().await;
    assert_eq!(peer.meta().version, 1, "the link speaks the lower version");

    // A version-1 request in the version-1 envelope is served.
    send_raw(
        &mut s,
        br#"{"Request":{"id":1,"deadline_ms":5000,"body":{"kind":"exec","module":"echo","method":"x","args":5}}}"#,
    )
    .await;
    let f = read_frame(&mut s).await;
    assert_eq!(f["Response"]["id"], json!(1), "{f}");
    assert_eq!(f["Response"]["result"]["Ok"]["value"], json!(5), "{f}");
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_of_this_version_speak_it_and_accept_a_master_one_ahead() {
    let certs = dev_certs();
    let id = EdgeIdentity::new();
    let mut m = start_master(&certs, MasterOpts::new(keys(&[&id]))).await;
    let mut e = start_edge(
        edge_config(&certs, &id, vec![m.addr.to_string()]),
        TestHandler::default(),
    );
    let p = e.connected().await;
    assert_eq!(p.meta().version, PROTOCOL_VERSION);
    let (_, _, mp) = m.next_up().await;
    assert_eq!(mp.meta().version, PROTOCOL_VERSION);
    e.stop().await;
    m.stop().await;

    // A master one version ahead that writes its own version (as masters
    // of version 1 did) is accepted: the handshake goes on past the
    // preface to the hello, here answered by a denial.
    let (mut a, mut b) = tokio::io::duplex(4096);
    let newer = tokio::spawn(async move {
        b.write_all(
            &Preface {
                version: PROTOCOL_VERSION + 1,
            }
            .encode(),
        )
        .await
        .unwrap();
        let mut x = [0u8; 10];
        b.read_exact(&mut x).await.unwrap();
        let hello = read_msg(&mut b).await.unwrap();
        write_msg(
            &mut b,
            &Handshake::Denied {
                reason: None,
                store_id: None,
            },
        )
        .await
        .unwrap();
        (Preface::decode(&x).unwrap().version, hello)
    });
    let hello = Hello {
        edge_id: id.id,
        boot_id: Uuid::now_v7(),
        commit: None,
        max_in_flight: 1,
    };
    let err = within(
        "the handshake",
        handshake::connect(&mut a, [0; 32], &id.key(), &hello),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, handshake::HandshakeError::Denied { .. }),
        "{err}"
    );
    let (announced, sent) = newer.await.unwrap();
    assert_eq!(announced, PROTOCOL_VERSION);
    assert!(matches!(sent, Handshake::Hello { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_edge_of_the_previous_version_gets_a_bare_denial() {
    let certs = dev_certs();
    let id = EdgeIdentity::new();
    let mut m = start_master(&certs, MasterOpts::new(keys(&[&id]))).await;
    let mut s = tls_connect(&certs, m.addr).await;
    s.write_all(&Preface { version: 1 }.encode()).await.unwrap();
    s.flush().await.unwrap();
    let mut theirs = [0u8; 10];
    within("the master's preface", s.read_exact(&mut theirs))
        .await
        .unwrap();
    let hello = Handshake::Hello {
        edge_id: id.id,
        nonce: Bytes32([7u8; 32]),
        boot_id: Uuid::now_v7(),
        commit: None,
        max_in_flight: 8,
    };
    write_msg(&mut s, &hello).await.unwrap();
    let Handshake::Challenge { .. } = read_msg(&mut s).await.unwrap() else {
        panic!("expected a challenge");
    };
    write_msg(
        &mut s,
        &Handshake::Proof {
            mac: Bytes32([0; 32]),
        },
    )
    .await
    .unwrap();
    // Exactly what a version-1 edge parses: no reason, no store id.
    assert_eq!(
        read_msg(&mut s).await.unwrap(),
        Handshake::Denied {
            reason: None,
            store_id: None
        }
    );
    let (_, reason) = m.next_auth_failure().await;
    assert!(reason.contains("wrong edge proof"), "{reason}");
    m.stop().await;
}
