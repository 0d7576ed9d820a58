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
    // Room to resume every edge's session after a master-side blip: a
    // resumed handshake skips the certificate signature and verification,
    // which is most of a reconnect storm's cost. A few hundred bytes each.
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
    Ok(Arc::new(config))
}

/// TLS sessions the master keeps for resumption.
pub const SESSION_CACHE: usize = 16_384;

/// The edge's client configuration: trust `ca`, optionally present a
/// client certificate (`cert`, `key`) for mutual TLS.
pub fn client_config(
    ca: &Path,
    client_cert: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, LinkError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_root_certificates(roots(ca)?);
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
