//! TLS 1.3 configurations (rustls with the ring provider only).
//!
//! The master presents `tls_cert`/`tls_key`; the edge verifies it against
//! `ca_cert`. Mutual TLS is optional: when the master is given a client CA,
//! edges must present a certificate it signed (off by default; the HMAC
//! handshake authenticates edges either way).

use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::LinkError;
use crate::certs;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(e: impl std::fmt::Display) -> LinkError {
    LinkError::Tls(e.to_string())
}

fn roots(ca: &Path) -> Result<RootCertStore, LinkError> {
    let mut roots = RootCertStore::empty();
    for c in certs::load_certs(ca)? {
        roots.add(c).map_err(tls_err)?;
    }
    Ok(roots)
}

/// The master's server configuration. `client_ca`: require client
/// certificates signed by it (mutual TLS).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, LinkError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca)?),
                provider(),
            )
            .build()
            .map_err(tls_err)?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs::load_certs(cert)?, certs::load_key(key)?)
        .map_err(tls_err)?;
    // Every edge can resume its session after a blip: a resumed handshake
    // skips the certificate signature and its verification, most of a
    // reconnect storm's cost. Tickets are stateless (encrypted with a key
    // this process rotates every 6 hours), so the master holds nothing per
    // edge for them: a cache of sessions has a size, and once more edges
    // than it holds reconnect at once, each resumption's new ticket evicts
    // one that an edge still waiting would have used. One ticket per
    // handshake: an edge holds one connection at a time.
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(tls_err)?;
    config.send_tls13_tickets = 1;
    Ok(Arc::new(config))
}

/// `config` with tickets sealed by keys derived from `secret`: every
/// master holding it (the same one restarted, the other nodes of its
/// cluster) resumes the sessions the others issued.
pub fn with_shared_tickets(
    config: &Arc<ServerConfig>,
    secret: &crate::secret::TicketSecret,
) -> Arc<ServerConfig> {
    let mut shared = ServerConfig::clone(config);
    shared.ticketer = Arc::new(super::tickets::SharedTickets::new(secret));
    Arc::new(shared)
}

/// The edge's client configuration: trust `ca`, optionally present a
/// client certificate (`cert`, `key`) for mutual TLS.
pub fn client_config(
    ca: &Path,
    client_cert: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, LinkError> {
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots(ca)?),
        provider(),
    )
    .build()
    .map_err(tls_err)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Naming(webpki)));
    let config = match client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(certs::load_certs(cert)?, certs::load_key(key)?)
            .map_err(tls_err)?,
    };
    Ok(Arc::new(config))
}

/// Label of the TLS exporter value both handshake MACs cover (RFC 8446
/// §7.5): it binds the authentication to this TLS session.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-outpost-link-v1";

/// The exporter value of an established connection.
pub fn exporter<D>(conn: &rustls::ConnectionCommon<D>) -> Result<[u8; 32], LinkError> {
    let mut out = [0u8; 32];
    conn.export_keying_material(&mut out[..], EXPORTER_LABEL, None)
        .map_err(tls_err)?;
    Ok(out)
}

/// Whether the (already verified) client certificate `cert` names `edge_id`.
pub fn names_edge(cert: &rustls_pki_types::CertificateDer<'_>, edge_id: uuid::Uuid) -> bool {
    let Ok(name) = rustls_pki_types::ServerName::try_from(crate::certs::edge_dns_name(edge_id))
    else {
        return false;
    };
    webpki::EndEntityCert::try_from(cert)
        .is_ok_and(|c| c.verify_is_valid_for_subject_name(&name).is_ok())
}

/// The webpki verifier, unchanged in what it accepts, whose refusal names
/// the certificate the master presented (subject and issuer): what an
/// edge's operator can compare with `ca_cert` when the link fails.
#[derive(Debug)]
struct Naming(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for Naming {
    fn verify_server_cert(
        &self,
        end_entity: &rustls_pki_types::CertificateDer<'_>,
        intermediates: &[rustls_pki_types::CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|e| {
                let Some((subject, issuer)) = subject_and_issuer(end_entity) else {
                    return e;
                };
                rustls::Error::General(format!(
                    "{e}; the master presented a certificate for \"{subject}\" issued by \"{issuer}\""
                ))
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The subject and issuer of a DER certificate (RFC 5280 §4.1), each as
/// `CN=…, O=…`. Only these two names are read, so a few lines of DER
/// walking do instead of an X.509 parser; `None` for anything malformed.
pub fn subject_and_issuer(der: &[u8]) -> Option<(String, String)> {
    let (certificate, _) = tlv(der, 0x30)?;
    let (tbs, _) = tlv(certificate, 0x30)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = skip(rest)?; // version
    }
    let rest = skip(skip(rest)?)?; // serial number, signature algorithm
    let (issuer, rest) = tlv(rest, 0x30)?;
    let rest = skip(rest)?; // validity
    let (subject, _) = tlv(rest, 0x30)?;
    Some((name(subject), name(issuer)))
}

/// One DER element tagged `tag`: its content, and what follows it.
fn tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        let len = bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, rest)
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

fn skip(input: &[u8]) -> Option<&[u8]> {
    tlv(input, *input.first()?).map(|(_, rest)| rest)
}

/// A distinguished name's common attributes, in order.
fn name(mut rdns: &[u8]) -> String {
    let mut parts = Vec::new();
    while let Some((set, rest)) = tlv(rdns, 0x31) {
        rdns = rest;
        let Some((oid, value)) = tlv(set, 0x30).and_then(|(atv, _)| tlv(atv, 0x06)) else {
            continue;
        };
        let label = match oid {
            [0x55, 4, 3] => "CN",
            [0x55, 4, 6] => "C",
            [0x55, 4, 7] => "L",
            [0x55, 4, 8] => "ST",
            [0x55, 4, 10] => "O",
            [0x55, 4, 11] => "OU",
            _ => continue,
        };
        if let Some((text, _)) = value.first().and_then(|&tag| tlv(value, tag)) {
            parts.push(format!("{label}={}", String::from_utf8_lossy(text)));
        }
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_names_its_subject_and_issuer() {
        crate::certs::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        crate::certs::init_dev(dir.path(), &["localhost".into()], false).unwrap();
        let master = certs::load_certs(&dir.path().join("master.pem")).unwrap();
        let (subject, issuer) = subject_and_issuer(&master[0]).unwrap();
        assert_eq!(subject, "CN=Outpost master");
        assert_eq!(
            issuer,
            "CN=Outpost development CA, O=Outpost (development only)"
        );
        let ca = certs::load_certs(&dir.path().join("ca.pem")).unwrap();
        let (subject, issuer) = subject_and_issuer(&ca[0]).unwrap();
        assert_eq!(subject, issuer, "self-signed");
        for cut in [0, 1, 5, 40, master[0].len() / 2] {
            assert_eq!(subject_and_issuer(&master[0][..cut]), None, "cut at {cut}");
        }
        assert_eq!(subject_and_issuer(b"\x30\x84\xff\xff\xff\xff"), None);
    }
}
