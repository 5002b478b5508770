//! TLS for `meshguard serve --tls-cert FILE --tls-key FILE` (rustls, PEM). The certificate is
//! re-read when either file changes (checked every second) or on SIGHUP, without dropping a
//! connection: new handshakes get the new certificate, connections already open keep theirs. A
//! reload that fails (a half-written file, a key that does not match) is logged and the previous
//! certificate stays in force.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

/// The certificate chain and key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the certificate, then its intermediates.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why the certificate cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read or holds no usable PEM.
    #[error("{file}: {message}")]
    File {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the key or the configuration.
    #[error("TLS: {0}")]
    Rustls(String),
}

fn file_error(file: &Path, message: impl Into<String>) -> TlsError {
    TlsError::File {
        file: file.to_owned(),
        message: message.into(),
    }
}

/// Reads and checks the chain and key.
pub fn load(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| file_error(&files.cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(&files.cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_error(&files.cert, "no PEM certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| file_error(&files.key, format!("no usable PEM private key: {e}")))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| TlsError::Rustls(format!("the key does not fit the certificate: {e}")))?;
    Ok(certified)
}

/// The certificate in force, swapped in place by reloads.
#[derive(Debug)]
pub struct ReloadingCert {
    files: TlsFiles,
    current: ArcSwap<CertifiedKey>,
    seen: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl ReloadingCert {
    /// Loads the files once; an error here refuses the start.
    pub fn new(files: TlsFiles) -> Result<ReloadingCert, TlsError> {
        let current = load(&files)?;
        let seen = (modified(&files.cert), modified(&files.key));
        Ok(ReloadingCert {
            files,
            current: ArcSwap::from_pointee(current),
            seen: Mutex::new(seen),
        })
    }

    /// Re-reads the files; on failure the certificate in force stays and the error is returned.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = load(&self.files)?;
        self.current.store(Arc::new(fresh));
        Ok(())
    }

    /// Whether either file changed since the last look.
    fn changed(&self) -> bool {
        let now = (modified(&self.files.cert), modified(&self.files.key));
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if *seen == now {
            return false;
        }
        *seen = now;
        true
    }
}

/// The acceptor of `serve`, and the certificate it serves (for the reloader).
pub fn acceptor(
    files: TlsFiles,
) -> Result<(tokio_rustls::TlsAcceptor, Arc<ReloadingCert>), TlsError> {
    let cert = Arc::new(ReloadingCert::new(files)?);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(&cert) as Arc<dyn ResolvesServerCert>);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((tokio_rustls::TlsAcceptor::from(Arc::new(config)), cert))
}

/// Reloads `cert` when its files change (looked at every second) or on SIGHUP, until `stop`.
pub fn spawn_reloader(
    cert: Arc<ReloadingCert>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        loop {
            let signalled = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            let asked = tokio::select! {
                _ = ticker.tick() => false,
                _ = signalled => true,
                _ = stop.changed() => break,
            };
            if !asked && !cert.changed() {
                continue;
            }
            match cert.reload() {
                Ok(()) => {
                    tracing::info!(cert = %cert.files.cert.display(), "TLS certificate reloaded")
                }
                Err(err) => {
                    tracing::error!(error = %err, "TLS certificate not reloaded; the previous one stays in force")
                }
            }
        }
    })
}
