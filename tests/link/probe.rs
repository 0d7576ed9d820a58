//! A master node of a cluster probing another over its link listener
//! (`cluster_failsafe`): answered by a cluster member, with the nonce
//! echoed; refused by a master alone; and never answered to an asker that
//! cannot verify the answerer's certificate.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use outpost::link::handshake::HandshakeError;
use outpost::link::probe::{ProbeError, ask};
use outpost::link::{ProbeResponder, ProbeStatus, tls};

use crate::support::{MasterOpts, dev_certs, start_master, within};

#[derive(Default)]
struct Counting(AtomicUsize);

impl ProbeResponder for Counting {
    fn answer(&self) -> ProbeStatus {
        self.0.fetch_add(1, Ordering::SeqCst);
        ProbeStatus {
            node_id: "m2".into(),
            state: "STANDBY".into(),
            reaches_database: false,
        }
    }
}

#[tokio::test]
async fn a_cluster_member_answers_a_probe_and_a_master_alone_refuses_it() {
    let certs = dev_certs();
    let responder = Arc::new(Counting::default());
    let mut opts = MasterOpts::new(Default::default());
    opts.probe = Some(responder.clone());
    let member = start_master(&certs, opts).await;
    let client = tls::client_config(&certs.paths.ca_cert, None).unwrap();
    let link = format!("127.0.0.1:{}", member.addr.port());
    let answer = within("a probe answer", ask(client.clone(), &link))
        .await
        .unwrap();
    assert_eq!(
        answer,
        ProbeStatus {
            node_id: "m2".into(),
            state: "STANDBY".into(),
            reaches_database: false,
        }
    );
    assert_eq!(responder.0.load(Ordering::SeqCst), 1);
    // Probes are no failures: the same address is answered again at once.
    for _ in 0..5 {
        within("another probe answer", ask(client.clone(), &link))
            .await
            .unwrap();
    }
    assert_eq!(responder.0.load(Ordering::SeqCst), 6);

    let alone = start_master(&certs, MasterOpts::new(Default::default())).await;
    let refused = within(
        "a refusal",
        ask(client, &format!("127.0.0.1:{}", alone.addr.port())),
    )
    .await;
    assert!(
        matches!(refused, Err(ProbeError::Handshake(HandshakeError::Io(_)))),
        "{refused:?}"
    );
    member.stop().await;
    alone.stop().await;
}

#[tokio::test]
async fn a_probe_is_not_answered_to_an_asker_that_does_not_trust_the_answerer() {
    let certs = dev_certs();
    let responder = Arc::new(Counting::default());
    let mut opts = MasterOpts::new(Default::default());
    opts.probe = Some(responder.clone());
    let member = start_master(&certs, opts).await;
    // Another cluster's CA: the answerer's certificate does not verify.
    let other = dev_certs();
    let client = tls::client_config(&other.paths.ca_cert, None).unwrap();
    let refused = within(
        "a TLS failure",
        ask(client, &format!("127.0.0.1:{}", member.addr.port())),
    )
    .await;
    assert!(matches!(refused, Err(ProbeError::Tls(_))), "{refused:?}");
    assert_eq!(responder.0.load(Ordering::SeqCst), 0);
    member.stop().await;
}
