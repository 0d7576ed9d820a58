//! Certificates: the development CA and master certificate that
//! `outpost certs init` (and a master on a fresh checkout) creates, and PEM
//! loading for the link's TLS configuration.
//!
//! Development certificates are exactly that: a CA whose key sits next to
//! it on disk. Production deployments bring their own CA and point
//! `ca_cert`, `tls_cert` and `tls_key` at it.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// File names inside the certificate directory.
pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const MASTER_CERT: &str = "master.pem";
pub const MASTER_KEY: &str = "master-key.pem";

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path} already exists (use --force to overwrite)")]
    Exists { path: PathBuf },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("certificate generation failed")]
    Generate(#[from] rcgen::Error),
    #[error("'{0}' is not a valid host name or IP address")]
    Host(String),
}

/// Paths of a development certificate set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevCerts {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl DevCerts {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join(CA_CERT),
            ca_key: dir.join(CA_KEY),
            cert: dir.join(MASTER_CERT),
            key: dir.join(MASTER_KEY),
        }
    }

    fn all(&self) -> [&PathBuf; 4] {
        [&self.ca_cert, &self.ca_key, &self.cert, &self.key]
    }
}

/// Installs rustls's ring crypto provider for the process (idempotent).
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Writes a development CA and a master server certificate for `hosts`
/// (DNS names or IP addresses) into `dir`. Refuses to overwrite any existing
/// file unless `force`.
pub fn init_dev(dir: &Path, hosts: &[String], force: bool) -> Result<DevCerts, CertError> {
    let paths = DevCerts::in_dir(dir);
    if !force && let Some(existing) = paths.all().into_iter().find(|p| p.exists()) {
        return Err(CertError::Exists {
            path: existing.clone(),
        });
    }
    std::fs::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.to_owned(),
        source,
    })?;

    let ca_key = KeyPair::generate()?;
    let ca_params = dev_ca_params()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let leaf_key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Outpost master");
    leaf.distinguished_name = dn;
    leaf.subject_alt_names = hosts
        .iter()
        .map(|h| san(h))
        .collect::<Result<Vec<_>, _>>()?;
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;

    write_file(&paths.ca_cert, ca_cert.pem().as_bytes(), false)?;
    write_file(&paths.ca_key, ca_key.serialize_pem().as_bytes(), true)?;
    write_file(&paths.cert, leaf_cert.pem().as_bytes(), false)?;
    write_file(&paths.key, leaf_key.serialize_pem().as_bytes(), true)?;
    Ok(paths)
}

/// The development CA's parameters. A certificate signed later by the CA's
/// key under these parameters chains to the CA written by [`init_dev`]: the
/// issuer name is the same and the signature is the CA key's.
fn dev_ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Outpost development CA");
    dn.push(DnType::OrganizationName, "Outpost (development only)");
    ca_params.distinguished_name = dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(ca_params)
}

/// Writes `edge-<id>.pem` and `edge-<id>-key.pem` into `dir`: a client
/// certificate for the edge's mutual TLS (common name: the edge id), signed
/// by the development CA of `dir` (from `outpost certs init`). Refuses to
/// overwrite unless `force`.
pub fn issue_edge(
    dir: &Path,
    edge_id: uuid::Uuid,
    force: bool,
) -> Result<(PathBuf, PathBuf), CertError> {
    let cert_path = dir.join(format!("edge-{edge_id}.pem"));
    let key_path = dir.join(format!("edge-{edge_id}-key.pem"));
    if !force && let Some(existing) = [&cert_path, &key_path].into_iter().find(|p| p.exists()) {
        return Err(CertError::Exists {
            path: existing.clone(),
        });
    }
    let ca_key_path = dir.join(CA_KEY);
    let ca_pem = std::fs::read_to_string(&ca_key_path).map_err(|e| CertError::Read {
        path: ca_key_path.clone(),
        reason: format!("{e} (run `outpost certs init` first)"),
    })?;
    let ca_key = KeyPair::from_pem(&ca_pem).map_err(|e| CertError::Read {
        path: ca_key_path,
        reason: e.to_string(),
    })?;
    let issuer = Issuer::new(dev_ca_params()?, &ca_key);
    let key = KeyPair::generate()?;
    // The master checks that a client certificate names the edge id it
    // authenticates (`link::tls::names_edge`).
    let mut params = CertificateParams::new(vec![edge_dns_name(edge_id)])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, edge_id.to_string());
    dn.push(DnType::OrganizationName, "Outpost edge");
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params.signed_by(&key, &issuer)?;
    write_file(&cert_path, cert.pem().as_bytes(), false)?;
    write_file(&key_path, key.serialize_pem().as_bytes(), true)?;
    Ok((cert_path, key_path))
}

/// The DNS name a client certificate issued for `edge_id` carries in its
/// subject alternative names; the master refuses a certificate that does
/// not name the edge id the peer claims.
pub fn edge_dns_name(edge_id: uuid::Uuid) -> String {
    format!("{edge_id}.edge.outpost")
}

fn san(host: &str) -> Result<SanType, CertError> {
    let host = host.trim();
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '*');
    if !valid {
        return Err(CertError::Host(host.to_owned()));
    }
    Ok(SanType::DnsName(
        host.to_owned()
            .try_into()
            .map_err(|_| CertError::Host(host.to_owned()))?,
    ))
}

/// Writes a file; private keys get mode 0600 from the moment they exist.
fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), CertError> {
    let err = |source| CertError::Write {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let mut file = options.open(path).map_err(err)?;
    #[cfg(unix)]
    if private {
        // An existing file keeps its old mode on open: tighten it explicitly.
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(err)?;
    }
    file.write_all(contents).map_err(err)?;
    file.sync_all().map_err(err)
}

/// Reads every certificate in a PEM file (a chain: leaf first).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let read_err = |reason: String| CertError::Read {
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(read_err("no certificate in the file".into()));
    }
    Ok(certs)
}

/// Reads the first private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| CertError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier as _;

    #[test]
    fn init_writes_a_verifiable_chain_and_private_keys() {
        install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let paths = init_dev(dir.path(), &["localhost".into(), "127.0.0.1".into()], false).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            for key in [&paths.ca_key, &paths.key] {
                let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", key.display());
            }
        }
        let ca = load_certs(&paths.ca_cert).unwrap();
        let leaf = load_certs(&paths.cert).unwrap();
        load_key(&paths.key).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca[0].clone()).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder(roots.into())
            .build()
            .unwrap();
        for name in ["localhost", "127.0.0.1"] {
            verifier
                .verify_server_cert(
                    &leaf[0],
                    &[],
                    &rustls_pki_types::ServerName::try_from(name).unwrap(),
                    &[],
                    rustls_pki_types::UnixTime::now(),
                )
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert!(matches!(
            init_dev(dir.path(), &["localhost".into()], false),
            Err(CertError::Exists { .. })
        ));
        init_dev(dir.path(), &["localhost".into()], true).unwrap();
    }

    #[test]
    fn an_issued_edge_certificate_is_accepted_by_a_verifier_of_the_dev_ca() {
        install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let paths = init_dev(dir.path(), &["localhost".into()], false).unwrap();
        let edge = uuid::Uuid::now_v7();
        let (cert, key) = issue_edge(dir.path(), edge, false).unwrap();
        load_key(&key).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(load_certs(&paths.ca_cert).unwrap()[0].clone())
            .unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder(roots.into())
            .build()
            .unwrap();
        verifier
            .verify_client_cert(
                &load_certs(&cert).unwrap()[0],
                &[],
                rustls_pki_types::UnixTime::now(),
            )
            .unwrap();
        assert!(matches!(
            issue_edge(dir.path(), edge, false),
            Err(CertError::Exists { .. })
        ));
        let other = tempfile::tempdir().unwrap();
        let err = issue_edge(other.path(), edge, false).unwrap_err();
        assert!(err.to_string().contains("ca-key.pem"), "{err}");
    }

    #[test]
    fn bad_hosts_and_missing_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            init_dev(dir.path(), &["bad host".into()], false),
            Err(CertError::Host(_))
        ));
        let err = load_certs(&dir.path().join("missing.pem")).unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
    }
}
