//! TLS for the agent's TCP listener (rustls with the `ring` provider) and certificate pinning
//! for its clients.
//!
//! - A `--listen` address that is not loopback must use TLS: the agent refuses to start a plain
//!   listener there. A loopback listener is plain HTTP unless `--tls` or `--tls-cert/--tls-key`
//!   are given.
//! - Without `--tls-cert/--tls-key` the agent generates, at its first TLS start, a self-signed
//!   certificate (ECDSA P-256, `rcgen`) into `ROOT/agent/tls/cert.pem` and `key.pem` (directory
//!   0700, files 0600, created exclusively, never through a symlink) and reuses it afterwards.
//!   Its SHA-256 fingerprint (of the DER certificate, 64 hex digits) is logged at every start.
//! - Clients do not use a CA: they pin the agent's certificate, by its fingerprint
//!   (`--agent-fingerprint HEX`) or by the certificate file (`--agent-cert FILE`); root's CLI
//!   reads `ROOT/agent/tls/cert.pem` by itself. The pin replaces name and expiry checks (a pinned
//!   self-signed certificate has neither meaning); the server's handshake signature is still
//!   verified against the pinned certificate's key. A different certificate fails the
//!   handshake, naming both fingerprints.

use crate::daemon::AgentPaths;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use stasis_image::safefs::{Dir, PRIVATE_DIR, PRIVATE_FILE};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Errors setting up TLS or a pin.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file operation failed.
    #[error("{what} {path}")]
    Io {
        /// What.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A PEM file does not parse.
    #[error("{path} is not a usable PEM {what}")]
    Pem {
        /// What was expected.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Cause.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// No certificate in the file.
    #[error("{0} holds no certificate")]
    NoCertificate(PathBuf),
    /// Generating the self-signed certificate failed.
    #[error("generating the agent's self-signed certificate")]
    Generate(#[source] rcgen::Error),
    /// rustls refused the configuration (e.g. a key that does not match the certificate).
    #[error("the TLS configuration is unusable")]
    Config(#[source] rustls::Error),
    /// A fingerprint that is not 32 bytes of hex.
    #[error(
        "bad certificate fingerprint {0:?}: give the 64 hex digits of its SHA-256 (colons allowed)"
    )]
    BadFingerprint(String),
}

/// The `ring` crypto provider. rustls deprecates it because it has no post-quantum key
/// exchange; its alternative, aws-lc-rs, needs cmake and clang to build, which the build hosts
/// of this project do not have. Switching is a one-line change here (and the feature in the
/// workspace manifest).
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// SHA-256 of a DER certificate.
pub fn fingerprint_of(der: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A fingerprint as 64 lower-case hex digits.
pub fn fingerprint_hex(fp: &[u8; 32]) -> String {
    fp.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parse a fingerprint: 64 hex digits, colons and a `sha256:` prefix allowed, any case.
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], TlsError> {
    let t = s.trim();
    let t = t
        .strip_prefix("sha256:")
        .or_else(|| t.strip_prefix("SHA256:"))
        .unwrap_or(t);
    let digits: String = t.chars().filter(|c| *c != ':').collect();
    let bad = || TlsError::BadFingerprint(s.to_string());
    if digits.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(digits.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(out)
}

fn certs_from(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |source| TlsError::Pem {
        what: "certificate",
        path: path.to_path_buf(),
        source,
    };
    let bytes = std::fs::read(path).map_err(|source| TlsError::Io {
        what: "reading",
        path: path.to_path_buf(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

/// The fingerprint of the first certificate in a PEM file (`--agent-cert FILE`).
pub fn cert_file_fingerprint(path: &Path) -> Result<[u8; 32], TlsError> {
    Ok(fingerprint_of(&certs_from(path)?[0]))
}

/// The agent's TLS side, ready to serve.
pub struct ServerTls {
    /// The rustls configuration.
    pub config: Arc<rustls::ServerConfig>,
    /// The certificate file in use.
    pub cert: PathBuf,
    /// Its fingerprint.
    pub fingerprint: [u8; 32],
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert", &self.cert)
            .field("fingerprint", &fingerprint_hex(&self.fingerprint))
            .finish()
    }
}

/// `ROOT/agent/tls/cert.pem` and `key.pem`, generated (self-signed for `names`) if missing.
pub fn ensure_self_signed(paths: &AgentPaths, names: Vec<String>) -> Result<(), TlsError> {
    let dir_path = paths.tls_dir();
    let io_err = |what, path: PathBuf| move |source| TlsError::Io { what, path, source };
    let dir =
        Dir::create_all(&dir_path, PRIVATE_DIR).map_err(io_err("creating", dir_path.clone()))?;
    let have = |n: &str| {
        dir.exists(n)
            .map_err(io_err("looking for", dir.child_path(n)))
    };
    if have("cert.pem")? && have("key.pem")? {
        return Ok(());
    }
    let ck = rcgen::generate_simple_self_signed(names).map_err(TlsError::Generate)?;
    // The key first: a certificate file never exists without its key.
    dir.write_atomic(
        "key.pem",
        ck.signing_key.serialize_pem().as_bytes(),
        PRIVATE_FILE,
    )
    .map_err(io_err("writing", dir.child_path("key.pem")))?;
    dir.write_atomic("cert.pem", ck.cert.pem().as_bytes(), PRIVATE_FILE)
        .map_err(io_err("writing", dir.child_path("cert.pem")))?;
    tracing::info!(dir = %dir_path.display(), "generated a self-signed TLS certificate");
    Ok(())
}

/// The server configuration from a certificate chain and key (PEM files).
pub fn server(cert: &Path, key: &Path) -> Result<ServerTls, TlsError> {
    let chain = certs_from(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Pem {
        what: "private key",
        path: key.to_path_buf(),
        source,
    })?;
    let fingerprint = fingerprint_of(&chain[0]);
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ServerTls {
        config: Arc::new(config),
        cert: cert.to_path_buf(),
        fingerprint,
    })
}

/// A client configuration that trusts only the certificate with SHA-256 `pin`.
pub fn pinned_client(pin: [u8; 32]) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    recording_client(Some(pin), Seen::default())
}

/// The certificate a [`recording_client`] was shown (its SHA-256), once the handshake ran.
#[derive(Clone, Debug, Default)]
pub struct Seen(Arc<std::sync::Mutex<Option<[u8; 32]>>>);

impl Seen {
    /// The fingerprint seen, if a handshake got that far.
    pub fn get(&self) -> Option<[u8; 32]> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Accepts exactly the certificate whose SHA-256 is pinned, or any certificate when none is
/// (trust on first use, for `node trust`), and records what it was shown. The handshake signature is verified either way.
#[derive(Debug)]
struct Recording {
    pin: Option<[u8; 32]>,
    seen: Seen,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = fingerprint_of(end_entity);
        match self.pin {
            Some(pin) if got != pin => {
                return Err(rustls::Error::General(format!(
                    "the agent's certificate has SHA-256 {}, not the pinned {}",
                    fingerprint_hex(&got),
                    fingerprint_hex(&pin)
                )))
            }
            _ => {}
        }
        *self.seen.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(got);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// A client configuration for `node trust`: pins `pin` if given, else the first certificate
/// shown; `seen` receives the fingerprint.
pub fn recording_client(
    pin: Option<[u8; 32]>,
    seen: Seen,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let p = provider();
    let verifier = Recording {
        pin,
        seen,
        algs: p.signature_verification_algorithms,
    };
    let mut config = rustls::ClientConfig::builder_with_provider(p)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_their_usual_spellings() {
        let fp = [0xabu8; 32];
        let hex = fingerprint_hex(&fp);
        assert_eq!(parse_fingerprint(&hex).unwrap(), fp);
        assert_eq!(parse_fingerprint(&hex.to_uppercase()).unwrap(), fp);
        let colons: Vec<String> = fp.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(
            parse_fingerprint(&format!("sha256:{}", colons.join(":"))).unwrap(),
            fp
        );
        assert!(parse_fingerprint("abc").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn generated_certificate_is_private_and_reused() {
        let t = tempfile::tempdir().unwrap();
        let paths = AgentPaths::new(t.path());
        ensure_self_signed(&paths, vec!["localhost".into()]).unwrap();
        let cert = paths.tls_dir().join("cert.pem");
        let key = paths.tls_dir().join("key.pem");
        let a = server(&cert, &key).unwrap();
        ensure_self_signed(&paths, vec!["localhost".into()]).unwrap();
        let b = server(&cert, &key).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(cert_file_fingerprint(&cert).unwrap(), a.fingerprint);
        use std::os::unix::fs::PermissionsExt;
        for p in [&cert, &key] {
            let m = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(m, 0o600, "{}", p.display());
        }
    }
}
