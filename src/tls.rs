//! TLS settings shared by the proxy, the watchdog and the admin tool, built
//! on rustls with the ring provider (no C toolchain beyond ring's, no
//! aws-lc).
//!
//! Two kinds of settings, each loaded and checked when the pool file (or the
//! command line) is read, so a missing or malformed file is a start-up error
//! and a reload that names one changes nothing:
//! - [`ListenTls`]: a pool's `listen` speaks TLS only (`tls_cert`,
//!   `tls_key`, and with `tls_ca` client certificates are required).
//! - [`ServerTls`]: connections to Redis servers speak TLS and verify the
//!   server's certificate against `server_tls_ca` (`server_tls_cert` and
//!   `server_tls_key` answer Redis's `tls-auth-clients`).

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A TLS stream to a Redis server.
pub type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;
/// A TLS stream from a client.
pub type ServerStream = tokio_rustls::server::TlsStream<TcpStream>;

/// How long a client has to complete its TLS handshake: a connection that
/// opens and says nothing holds a task and a descriptor no longer than this.
pub const ACCEPT_HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// A pool's listener TLS: the files as named in the pool file, and the
/// acceptor built from them.
#[derive(Clone)]
pub struct ListenTls {
    pub cert: String,
    pub key: String,
    /// Clients must present a certificate signed by this CA.
    pub ca: Option<String>,
    pub acceptor: TlsAcceptor,
    /// What the files held when loaded ([`Digest`]).
    material: u64,
}

impl ListenTls {
    /// Loads the certificate chain, the key and the optional client CA.
    ///
    /// # Errors
    /// What is wrong, naming the pool key and file.
    pub fn load(cert: &str, key: &str, ca: Option<&str>) -> Result<ListenTls, String> {
        let mut read = Digest::default();
        let chain = load_certs("tls_cert", cert, &mut read)?;
        let private = load_key("tls_key", key, &mut read)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let builder = match ca {
            Some(ca) => {
                let roots = load_roots("tls_ca", ca, &mut read)?;
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                    .build()
                    .map_err(|e| format!("'tls_ca' {ca}: {e}"))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(chain, private)
            .map_err(|e| format!("'tls_cert' {cert} and 'tls_key' {key} do not fit: {e}"))?;
        Ok(ListenTls {
            cert: cert.to_string(),
            key: key.to_string(),
            ca: ca.map(str::to_string),
            acceptor: TlsAcceptor::from(Arc::new(config)),
            material: read.finish(),
        })
    }
}

/// Equal when the same files are named and held the same when loaded: a
/// certificate replaced in place is a change a reload applies (review: it
/// was taken for no change, and the old certificate went on being served
/// with nothing said).
impl PartialEq for ListenTls {
    fn eq(&self, other: &Self) -> bool {
        (&self.cert, &self.key, &self.ca, self.material)
            == (&other.cert, &other.key, &other.ca, other.material)
    }
}

impl fmt::Debug for ListenTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenTls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

/// TLS to Redis servers: the files as named, and the connector built from
/// them.
#[derive(Clone)]
pub struct ServerTls {
    pub ca: String,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub connector: TlsConnector,
    /// What the files held when loaded ([`Digest`]).
    material: u64,
}

impl ServerTls {
    /// Loads the CA that signed the servers' certificates and the optional
    /// client certificate and key. `keys` names the settings in errors
    /// (pool keys or command-line flags).
    ///
    /// # Errors
    /// What is wrong, naming the setting and file.
    pub fn load(
        ca: &str,
        cert: Option<&str>,
        key: Option<&str>,
        keys: [&str; 3],
    ) -> Result<ServerTls, String> {
        let [ca_key, cert_key, key_key] = keys;
        let mut read = Digest::default();
        let roots = load_roots(ca_key, ca, &mut read)?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots);
        let config = match (cert, key) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(
                    load_certs(cert_key, cert, &mut read)?,
                    load_key(key_key, key, &mut read)?,
                )
                .map_err(|e| {
                    format!("'{cert_key}' {cert} and '{key_key}' {key} do not fit: {e}")
                })?,
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(format!("'{cert_key}' and '{key_key}' go together")),
        };
        Ok(ServerTls {
            ca: ca.to_string(),
            cert: cert.map(str::to_string),
            key: key.map(str::to_string),
            connector: TlsConnector::from(Arc::new(config)),
            material: read.finish(),
        })
    }

    /// Runs the TLS handshake on `tcp`, checking the certificate against
    /// the host part of `addr` (an IP address must be among the
    /// certificate's IP SANs, a name among its DNS SANs).
    ///
    /// # Errors
    /// The handshake failure, as text for the client's error reply.
    pub async fn connect(&self, addr: &str, tcp: TcpStream) -> Result<ClientStream, String> {
        let name = server_name(addr)?;
        self.connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))
    }
}

/// As [`ListenTls`]: the files named, and what they held.
impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        (&self.ca, &self.cert, &self.key, self.material)
            == (&other.ca, &other.cert, &other.key, other.material)
    }
}

impl Eq for ServerTls {}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// The TLS flags of the watchdog and the admin tool, for Redis servers
/// that speak TLS only (`--port 0 --tls-port ...`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// Speak TLS to the Redis servers (implied by --tls-ca, which it needs).
    #[arg(long = "tls")]
    pub tls: bool,
    /// The CA that signed the Redis servers' certificates, PEM.
    #[arg(long = "tls-ca", value_name = "FILE")]
    pub tls_ca: Option<String>,
    /// A client certificate for Redis's `tls-auth-clients`, PEM (with
    /// --tls-key).
    #[arg(long = "tls-cert", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<String>,
    /// The client certificate's key, PEM.
    #[arg(long = "tls-key", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<String>,
}

impl TlsArgs {
    /// The settings the flags ask for; `None` without --tls or --tls-ca.
    ///
    /// # Errors
    /// --tls or a certificate without --tls-ca, or a file that does not
    /// load.
    pub fn load(&self) -> Result<Option<ServerTls>, String> {
        let Some(ca) = &self.tls_ca else {
            if self.tls || self.tls_cert.is_some() {
                return Err(
                    "--tls and --tls-cert need --tls-ca, the CA that signed the \
                            Redis servers' certificates"
                        .into(),
                );
            }
            return Ok(None);
        };
        ServerTls::load(
            ca,
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            ["--tls-ca", "--tls-cert", "--tls-key"],
        )
        .map(Some)
    }
}

/// The TLS settings of the control connections of a watchdog or admin
/// process ([`crate::redis_client`]): one process talks to one fleet, whose
/// servers share their TLS settings, so they are set once at start-up
/// instead of being handed down every probe and failover step.
static CONTROL_TLS: OnceLock<ServerTls> = OnceLock::new();

/// Sets the control connections' TLS; the first call wins.
pub fn set_control_tls(tls: ServerTls) {
    let _ = CONTROL_TLS.set(tls);
}

/// The control connections' TLS, if set.
pub fn control_tls() -> Option<&'static ServerTls> {
    CONTROL_TLS.get()
}

/// The name a server's certificate must carry: the host part of
/// `host:port` (`[v6]:port` too).
fn server_name(addr: &str) -> Result<ServerName<'static>, String> {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|e| format!("'{host}' cannot name a TLS server: {e}"))
}

/// A digest of the bytes of the files a load read, in the order it read
/// them, so that a reload can tell a file replaced in place. Fed by the
/// one read each file gets, so it is of what was parsed. Not a security
/// check: only a comparison with the last load.
#[derive(Default)]
struct Digest(std::collections::hash_map::DefaultHasher);

impl Digest {
    /// Reads `path` once, into the digest.
    fn read(&mut self, setting: &str, path: &str) -> Result<Vec<u8>, String> {
        use std::hash::Hash;
        let bytes = std::fs::read(path).map_err(|e| format!("'{setting}' {path}: {e}"))?;
        bytes.hash(&mut self.0);
        Ok(bytes)
    }

    fn finish(&self) -> u64 {
        std::hash::Hasher::finish(&self.0)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A PEM error as text: the markers it names are bytes, which its own
/// text shows as numbers (review: `missing section end marker: [67, 69,
/// ...]`), named here in words.
fn pem_error(setting: &str, path: &str, error: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    let text = match error {
        Error::MissingSectionEnd { end_marker } => format!(
            "no '-----END {}-----' line: the file is cut short",
            String::from_utf8_lossy(end_marker)
        ),
        Error::IllegalSectionStart { line } => {
            format!("illegal section start: {}", String::from_utf8_lossy(line))
        }
        other => other.to_string(),
    };
    format!("'{setting}' {path}: {text}")
}

fn load_certs(
    setting: &str,
    path: &str,
    read: &mut Digest,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read.read(setting, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(setting, path, &e))?;
    if certs.is_empty() {
        return Err(format!(
            "'{setting}' {path}: no PEM certificate in the file"
        ));
    }
    Ok(certs)
}

fn load_key(
    setting: &str,
    path: &str,
    read: &mut Digest,
) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read.read(setting, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| pem_error(setting, path, &e))
}

fn load_roots(setting: &str, path: &str, read: &mut Digest) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(setting, path, read)? {
        roots
            .add(cert)
            .map_err(|e| format!("'{setting}' {path}: {e}"))?;
    }
    Ok(Arc::new(roots))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_host_part() {
        assert!(matches!(
            server_name("127.0.0.1:6379").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]:6379").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("redis-1.example:6379").unwrap(),
            ServerName::DnsName(_)
        ));
    }

    #[test]
    fn missing_files_are_named() {
        let e = ListenTls::load("/nonexistent/cert.pem", "/nonexistent/key.pem", None)
            .err()
            .unwrap();
        assert!(e.contains("'tls_cert' /nonexistent/cert.pem"), "{e}");
        let e = ServerTls::load(
            "/nonexistent/ca.pem",
            None,
            None,
            ["server_tls_ca", "server_tls_cert", "server_tls_key"],
        )
        .err()
        .unwrap();
        assert!(e.contains("'server_tls_ca' /nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn a_cut_pem_file_is_named_in_words() {
        let dir = std::env::temp_dir().join(format!("shardproxy-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cut.pem");
        std::fs::write(&path, "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();
        let path = path.to_str().unwrap();
        let e = load_certs("tls_cert", path, &mut Digest::default()).unwrap_err();
        assert!(
            e.ends_with("no '-----END CERTIFICATE-----' line: the file is cut short"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
