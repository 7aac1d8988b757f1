//! The TLS keys of a pool: `tls_cert`, `tls_key`, `tls_ca` for the
//! listener, `server_tls` and `server_tls_ca`, `server_tls_cert`,
//! `server_tls_key` for the connections to the Redis servers. The files are
//! read here, so a missing or malformed one rejects the pool file (at
//! start-up, and on a reload, which then changes nothing).

use crate::tls::{ListenTls, ServerTls};

/// The TLS keys as written.
pub(super) struct RawTls {
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub tls_ca: Option<String>,
    pub server_tls: Option<bool>,
    pub server_tls_ca: Option<String>,
    pub server_tls_cert: Option<String>,
    pub server_tls_key: Option<String>,
}

/// The listener's TLS, if `tls_cert` and `tls_key` are set.
///
/// # Errors
/// The key at fault and the message.
pub(super) fn listen_tls(raw: &RawTls) -> Result<Option<ListenTls>, (&'static str, String)> {
    let cert = raw.tls_cert.as_deref().filter(|s| !s.is_empty());
    let key = raw.tls_key.as_deref().filter(|s| !s.is_empty());
    let ca = raw.tls_ca.as_deref().filter(|s| !s.is_empty());
    match (cert, key) {
        (Some(cert), Some(key)) => ListenTls::load(cert, key, ca)
            .map(Some)
            .map_err(|e| ("tls_cert", e)),
        (None, None) if ca.is_some() => Err((
            "tls_ca",
            "'tls_ca' needs 'tls_cert' and 'tls_key': it asks TLS clients for certificates".into(),
        )),
        (None, None) => Ok(None),
        (Some(_), None) => Err(("tls_cert", "'tls_cert' needs 'tls_key'".into())),
        (None, Some(_)) => Err(("tls_key", "'tls_key' needs 'tls_cert'".into())),
    }
}

/// The servers' TLS, if `server_tls` is true.
///
/// # Errors
/// The key at fault and the message.
pub(super) fn server_tls(raw: &RawTls) -> Result<Option<ServerTls>, (&'static str, String)> {
    let ca = raw.server_tls_ca.as_deref().filter(|s| !s.is_empty());
    let cert = raw.server_tls_cert.as_deref().filter(|s| !s.is_empty());
    let key = raw.server_tls_key.as_deref().filter(|s| !s.is_empty());
    if raw.server_tls != Some(true) {
        if ca.is_some() || cert.is_some() || key.is_some() {
            return Err((
                "server_tls",
                "'server_tls_ca', 'server_tls_cert' and 'server_tls_key' need 'server_tls: true'"
                    .into(),
            ));
        }
        return Ok(None);
    }
    // No system trust store: a Redis fleet's certificates come from the
    // operator's own CA, which must be named.
    let Some(ca) = ca else {
        return Err((
            "server_tls_ca",
            "'server_tls: true' needs 'server_tls_ca', the CA that signed the Redis servers' \
             certificates"
                .into(),
        ));
    };
    ServerTls::load(
        ca,
        cert,
        key,
        ["server_tls_ca", "server_tls_cert", "server_tls_key"],
    )
    .map(Some)
    .map_err(|e| ("server_tls_ca", e))
}
