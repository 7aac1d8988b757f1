//! The state of one client connection, which the session loop
//! ([`super::client`]), the commands answered locally and INFO share.

use crate::protocol::Proto;
use crate::proxy::pool::Pool;
use crate::proxy::pubsub::PubSub;
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
    /// The client's subscriptions; `Some` in subscribed mode.
    pub pubsub: Option<Box<PubSub>>,
}

impl Session {
    /// RESET: the state of a new connection, as Redis restores it (RESP2,
    /// no name, authenticated only if no password is set, no
    /// subscriptions: dropping them closes the subscriber connections).
    pub fn reset(&mut self) {
        self.proto = Proto::Resp2;
        self.name = None;
        self.authenticated = self.pool.redis_auth.is_none();
        self.pubsub = None;
    }
}
