//! The state of one client connection, which the session loop
//! ([`super::client`]), the commands answered locally and INFO share.

use crate::protocol::Proto;
use crate::proxy::pool::Pool;
use bytes::Bytes;
use std::sync::Arc;

/// The Redis version the proxy reports (HELLO, INFO): the command set it
/// implements.
pub const REDIS_VERSION: &str = "7.0.0";

/// The state of one client connection.
pub struct Session {
    pub pool: Arc<Pool>,
    pub id: u64,
    pub proto: Proto,
    pub name: Option<Bytes>,
    pub authenticated: bool,
    /// Set by QUIT: close after this batch's replies.
    pub closing: bool,
}
