//! Transactions: WATCH, MULTI, EXEC, DISCARD, UNWATCH, as Redis Cluster
//! runs them. A transaction is bound to the shard of its first key (the
//! WATCHed keys, else the first keyed command after MULTI) and runs on the
//! client's dedicated connection to that shard, where Redis itself queues
//! the commands and answers `+QUEUED`, EXEC and DISCARD. A command for a key
//! on another shard is refused inside the transaction, and EXEC then
//! answers `-EXECABORT`, like a command Redis itself refuses while queueing.
//!
//! Until the shard is known (MULTI, then keyless commands such as PING), the
//! proxy answers `+OK`/`+QUEUED` itself and keeps the commands; once bound it
//! sends MULTI and them first, and their replies are dropped (they are the
//! `+OK`/`+QUEUED` already given). A transaction that never names a key runs
//! on the shard keyless scripts run on ([`super::scripts::KEYLESS_SHARD`]).
//!
//! When the dedicated connection holding a transaction breaks (the backend
//! closed it, a failover), its WATCHes or queued commands are gone with it,
//! and the commands the client pipelined behind must not run outside the
//! transaction: the first to arrive gets the error, the rest up to EXEC are
//! dropped, and EXEC fails (see [`Transaction::lost`]).

use crate::command::{Command, Handling};
use crate::protocol::{encode_request, Proto, Request};
use crate::proxy::local;
use crate::proxy::pending::{unsupported_error, Pending};
use crate::proxy::router::{RoutingTable, ShardName};
use crate::proxy::session::{Footprint, Lane, Session};
use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

const QUEUED: &[u8] = b"+QUEUED\r\n";

impl Session {
    /// A transaction command, or any command while MULTI is open.
    pub(crate) fn transaction(
        &mut self,
        cmd: &'static Command,
        handling: Handling,
        request: Request,
    ) -> Pending {
        if let Some(why) = self.notice_lost_connection() {
            // Told once, on the command that found the loss; inside MULTI,
            // the transaction is doomed, and EXEC will say so again.
            match (cmd.name, self.in_multi()) {
                ("exec", true) => {
                    self.tx = None;
                    return self.error(&format!("EXECABORT Transaction discarded: {why}"));
                }
                ("discard", true) => {
                    self.tx = None;
                    return Pending::Ready(Bytes::from_static(b"+OK\r\n"));
                }
                ("quit", true) => {}
                (_, true) => return self.error(&format!("ERR {why}")),
                // Only WATCHes were lost: EXEC will answer as if a watched
                // key had changed, which clients retry.
                (_, false) => {}
            }
        }
        let multi = self.in_multi();
        match (cmd.name, multi) {
            ("multi", false) => self.multi(request),
            ("watch", false) => self.watch(cmd, request),
            ("unwatch", false) => {
                let bound = self.tx.take().is_some_and(|tx| tx.bound());
                if bound {
                    self.on_dedicated(request.raw)
                } else {
                    Pending::Ready(Bytes::from_static(b"+OK\r\n"))
                }
            }
            ("exec", false) => self.error("ERR EXEC without MULTI"),
            ("discard", false) => self.error("ERR DISCARD without MULTI"),
            ("exec", true) => self.exec(request),
            ("discard", true) => {
                let tx = self.tx.take().unwrap_or_default();
                if tx.bound() {
                    self.on_dedicated(request.raw)
                } else {
                    Pending::Ready(Bytes::from_static(b"+OK\r\n"))
                }
            }
            ("quit", true) => local::run(self, cmd, &request.args),
            // Inside MULTI: Redis's own answers once bound.
            ("multi", true) if !self.tx_bound() => self.error("ERR MULTI calls can not be nested"),
            // Redis answers these without dooming the transaction.
            ("watch", true) if !self.tx_bound() => {
                self.error("ERR WATCH inside MULTI is not allowed")
            }
            _ => self.queue(cmd, handling, request),
        }
    }

    pub(crate) fn tx_bound(&self) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.bound())
    }

    fn tx_lost(&self) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.lost)
    }

    /// Why the bound transaction's state is gone since the last command:
    /// its dedicated connection broke, or a range moved to or from its
    /// shard (its keys may now live elsewhere, and the writes queued on the
    /// old server would be lost there). The transaction is then marked
    /// lost (and aborted inside MULTI) and unbound, its connection closed.
    fn notice_lost_connection(&mut self) -> Option<String> {
        if !self.tx_bound() {
            return None;
        }
        let conn = self.dedicated.as_ref()?;
        let shard = conn.shard;
        let why = if conn.is_broken() {
            lost_connection_text(shard)
        } else if let Some(change) = self.routing_moved(shard) {
            format!(
                "shard '{shard}': {change} while the transaction was open; the transaction \
                 and its WATCHes were discarded"
            )
        } else {
            return None;
        };
        self.forget_transaction_connection();
        self.dedicated = None;
        Some(why)
    }

    /// What changed in the routing of `shard` since the transaction was
    /// bound, if anything (one version read when nothing changed): a range
    /// moved, or its server is now reached another way (a reload of
    /// `redis_db`, the login or TLS: review, EXEC ran on the old database).
    fn routing_moved(&mut self, shard: ShardName) -> Option<&'static str> {
        let version = self.pool.router.version();
        let (bound_version, footprint) = self.tx.as_mut()?.bound_at.as_mut()?;
        if *bound_version == version {
            return None;
        }
        let table = self.pool.router.load();
        if Footprint::of(&table, shard) != *footprint {
            return Some("a range moved to or from the shard");
        }
        // Another shard's change, or settings that do not matter to it
        // (`timeout`): nothing to check again until the next.
        *bound_version = table.version;
        let conn = self.dedicated.as_ref()?;
        let reached = table
            .shards
            .iter()
            .filter(|s| s.name == shard)
            .all(|s| conn.reaches(&s.backend));
        (!reached).then_some("its server's database, login or TLS settings changed (a reload)")
    }

    /// Marks the transaction bound to `shard` of `table`.
    fn mark_bound(&mut self, table: &RoutingTable, shard: usize) {
        let tx = self.tx.get_or_insert_with(Box::default);
        let name = table.shards[shard].name;
        tx.bound_at = Some((table.version, Footprint::of(table, name)));
    }

    /// The dedicated connection a bound transaction lives on is going
    /// away: the transaction is marked lost (and aborted inside MULTI).
    pub(crate) fn forget_transaction_connection(&mut self) {
        if let Some(tx) = self.tx.as_mut().filter(|tx| tx.bound()) {
            tx.bound_at = None;
            tx.lost = true;
            tx.aborted |= tx.multi;
            tx.waiting.clear();
        }
    }

    fn multi(&mut self, request: Request) -> Pending {
        let tx = self.tx.get_or_insert_with(Box::default);
        tx.multi = true;
        if tx.bound() {
            self.on_dedicated(request.raw)
        } else {
            Pending::Ready(Bytes::from_static(b"+OK\r\n"))
        }
    }

    /// WATCH outside MULTI binds the transaction to its keys' shard.
    fn watch(&mut self, cmd: &'static Command, request: Request) -> Pending {
        if self.tx_lost() {
            // EXEC fails in any case: nothing to watch for.
            return Pending::Ready(Bytes::from_static(b"+OK\r\n"));
        }
        let table = self.take_table();
        let shard = match self.dedicated_shard_of_keys(&table, cmd, &request.args) {
            Ok(Some(shard)) => shard,
            Ok(None) => unreachable!("WATCH's arity requires a key"),
            Err(e) => return self.error(&e),
        };
        let bound = self.tx_bound();
        if bound {
            let same = self
                .dedicated
                .as_ref()
                .is_some_and(|conn| conn.serves(&table.shards[shard].backend, self.proto));
            if !same {
                return self.error(
                    "CROSSSLOT Keys in request don't hash to the same server as the keys already watched",
                );
            }
        } else if let Err(e) = self.dedicated_to(&table, shard) {
            return self.error(&e);
        }
        self.mark_bound(&table, shard);
        self.on_dedicated(request.raw)
    }

    fn exec(&mut self, request: Request) -> Pending {
        let tx = self.tx.take().unwrap_or_default();
        if tx.aborted {
            if tx.bound() {
                // Redis holds the queued commands: drop them there.
                self.discard_on_backend("DISCARD");
            }
            return self.error("EXECABORT Transaction discarded because of previous errors.");
        }
        if tx.lost {
            return Pending::Ready(Bytes::from_static(match self.proto {
                Proto::Resp2 => b"*-1\r\n",
                Proto::Resp3 => b"_\r\n",
            }));
        }
        if tx.bound() {
            return self.on_dedicated(request.raw);
        }
        if tx.waiting.is_empty() {
            return Pending::Ready(Bytes::from_static(b"*0\r\n"));
        }
        let table = self.take_table();
        // Where keyless scripts run outside a transaction too.
        let shard = crate::proxy::scripts::KEYLESS_SHARD;
        self.tx = Some(tx);
        if let Err(e) = self.bind(&table, shard) {
            self.tx = None;
            return self.error(&e);
        }
        self.tx = None;
        self.on_dedicated(request.raw)
    }

    /// A command inside MULTI: forwarded to the bound shard to be queued
    /// there, kept until the shard is known, or refused.
    fn queue(&mut self, cmd: &'static Command, handling: Handling, request: Request) -> Pending {
        if self.tx_lost() {
            // EXEC fails in any case: the command is dropped.
            return Pending::Ready(Bytes::from_static(QUEUED));
        }
        // A channel's messages go out from its home shard (subscribers of
        // patterns are on every shard), so PUBLISH runs there like a
        // command on a key: "write and notify" in one transaction.
        let publish = matches!(cmd.name, "publish" | "spublish");
        let keyless_allowed = match handling {
            Handling::Forward | Handling::Split(_) | Handling::Blocking | Handling::AnyBackend => {
                true
            }
            Handling::Transaction => true,
            Handling::Local => matches!(cmd.name, "ping" | "echo"),
            Handling::PubSub => publish,
            // Fan-outs reach every shard; the transaction runs on one.
            Handling::FanOut
            | Handling::Keyspace(_)
            | Handling::Scripts(_)
            | Handling::Unsupported => false,
        };
        if !keyless_allowed {
            let refusal = if handling == Handling::Local {
                format!(
                    "ERR '{}' inside MULTI is not supported through shardproxy",
                    String::from_utf8_lossy(&request.args[0])
                )
            } else {
                unsupported_error(cmd, &request.args)
            };
            return self.refuse_in_multi(&refusal);
        }
        let table = self.take_table();
        let shard = match self.queued_shard(&table, cmd, handling, &request.args) {
            Ok(shard) => shard,
            Err(e) => return self.refuse_in_multi(&e),
        };
        // Cached on every shard as outside MULTI: the client's EVALSHA
        // after EXEC may name a key of another shard.
        crate::proxy::scripts::share(self, &table, cmd, &request.args);
        if self.tx_bound() {
            if let Some(shard) = shard {
                let same = self
                    .dedicated
                    .as_ref()
                    .is_some_and(|conn| conn.serves(&table.shards[shard].backend, self.proto));
                if !same {
                    return self.refuse_in_multi(
                        "CROSSSLOT Keys in request don't hash to the same server as the transaction",
                    );
                }
            }
            return self.on_dedicated(request.raw);
        }
        match shard {
            None => {
                if let Some(tx) = self.tx.as_mut() {
                    tx.waiting.push(request.raw);
                }
                Pending::Ready(Bytes::from_static(QUEUED))
            }
            Some(shard) => match self.bind(&table, shard) {
                Ok(()) => {
                    self.last_shard = table.shards[shard].name;
                    self.on_dedicated(request.raw)
                }
                Err(e) => self.refuse_in_multi(&e),
            },
        }
    }

    /// The shard a command inside MULTI runs on, `None` when it names
    /// none (it is kept until one does).
    ///
    /// # Errors
    /// The refusal text: keys on several shards, or in a moving range.
    fn queued_shard(
        &self,
        table: &RoutingTable,
        cmd: &Command,
        handling: Handling,
        args: &[Bytes],
    ) -> Result<Option<usize>, String> {
        match handling {
            Handling::Forward | Handling::Split(_) | Handling::Blocking => {
                match self.dedicated_shard_of_keys(table, cmd, args) {
                    Ok(shard) => Ok(shard),
                    // Redis reads a command's keys when it runs it: one
                    // whose key layout is malformed (`numkeys` not a
                    // number) is queued and fails alone at EXEC (review:
                    // the proxy's refusal discarded the whole transaction).
                    Err(_) if cmd.key_indexes(args).is_err() => Ok(None),
                    Err(e) => Err(e),
                }
            }
            Handling::PubSub => Ok(args.get(1).map(|channel| {
                crate::proxy::pubsub::home_shard(table, channel, cmd.name == "spublish")
            })),
            _ => Ok(None),
        }
    }

    /// True when a transaction may start (MULTI) before the replies owed
    /// are in: they are all owed on the dedicated connection the session
    /// still holds (the last transaction's EXEC), where the new one will
    /// queue behind them in order. Transactions pipelined back to back
    /// then cost no round trip each (review: 18x slower than direct).
    /// Should the new one bind elsewhere, its first command waits instead
    /// ([`Self::binds_elsewhere`]).
    pub(crate) fn follows_on_held_connection(&self, cmd: &Command) -> bool {
        cmd.name == "multi"
            && self.tx.is_none()
            && self.lane == Lane::Dedicated
            && self.side.is_none()
            && !self.blocked
            && self
                .dedicated
                .as_ref()
                .is_some_and(|conn| !conn.is_broken())
    }

    /// True when a command inside a MULTI not bound yet would bind it to
    /// another connection than the dedicated one the session holds: that
    /// one is closed on the switch, so the command waits until the replies
    /// owed on it are in (see [`Self::follows_on_held_connection`]).
    pub(crate) fn binds_elsewhere(&self, cmd: &Command, args: &[Bytes]) -> bool {
        let Some(conn) = self.dedicated.as_ref() else {
            return false;
        };
        if !self.in_multi() || self.tx_bound() {
            return false;
        }
        let table = self.pool.router.load();
        let shard = if cmd.name == "exec" {
            let waiting = self.tx.as_ref().is_some_and(|tx| !tx.waiting.is_empty());
            waiting.then_some(crate::proxy::scripts::KEYLESS_SHARD)
        } else {
            let handling = cmd.handling_for(args);
            self.queued_shard(&table, cmd, handling, args)
                .ok()
                .flatten()
        };
        shard.is_some_and(|shard| !conn.serves(&table.shards[shard].backend, self.proto))
    }

    /// Binds the open transaction to `shard`: opens the dedicated
    /// connection, sends MULTI and the commands kept so far (their replies
    /// were given already).
    fn bind(&mut self, table: &RoutingTable, shard: usize) -> Result<(), String> {
        let deadline = self.deadline(table, shard);
        let waiting = self
            .tx
            .as_mut()
            .map(|tx| std::mem::take(&mut tx.waiting))
            .unwrap_or_default();
        let conn = self.dedicated_to(table, shard)?;
        let mut batch = BytesMut::new();
        encode_request(&[&b"MULTI"[..]], &mut batch);
        drop(conn.send(batch.freeze(), deadline));
        for raw in waiting {
            drop(conn.send(raw, deadline));
        }
        if self.tx.is_some() {
            self.mark_bound(table, shard);
        }
        Ok(())
    }

    /// Forwards a request on the dedicated connection the transaction is
    /// bound to, with the pool's timeout.
    fn on_dedicated(&mut self, raw: Bytes) -> Pending {
        let Some(conn) = self.dedicated.as_ref() else {
            return self.error("ERR shardproxy: the transaction's connection is gone");
        };
        if conn.is_broken() {
            // Broke since `transaction` looked (another thread sets the
            // flag): a bound transaction is kept, lost, as there.
            let shard = conn.shard;
            if self.tx_bound() {
                self.forget_transaction_connection();
            } else {
                self.tx = None;
            }
            self.dedicated = None;
            return self.error(&format!("ERR {}", lost_connection_text(shard)));
        }
        let deadline = conn.timeout().map(|t| Instant::now() + t);
        let reply = conn.send(raw, deadline);
        Pending::Forward {
            reply,
            shard: conn.shard,
        }
    }

    /// EXEC itself refused (its arity) inside MULTI: as in Redis, the
    /// transaction ends, discarded, with the refusal in the EXECABORT.
    pub(crate) fn exec_refused(&mut self, error: &str) -> Pending {
        if let Some(tx) = self.tx.take().filter(|tx| tx.bound()) {
            // DISCARD ends a MULTI and its WATCHes; WATCHes alone need
            // UNWATCH (DISCARD without MULTI is refused and keeps them).
            self.discard_on_backend(if tx.multi { "DISCARD" } else { "UNWATCH" });
        }
        let error = error.strip_prefix("ERR ").unwrap_or(error);
        self.error(&format!(
            "EXECABORT Transaction discarded because of: {error}"
        ))
    }

    /// Sends `command` (DISCARD or UNWATCH) on the dedicated connection;
    /// its reply is not owed to the client.
    fn discard_on_backend(&mut self, command: &str) {
        if let Some(conn) = self.dedicated.as_ref() {
            let mut discard = BytesMut::new();
            encode_request(&[command.as_bytes()], &mut discard);
            let deadline = conn.timeout().map(|t| Instant::now() + t);
            drop(conn.send(discard.freeze(), deadline));
        }
    }

    /// Refuses a command inside MULTI; EXEC will discard the transaction.
    fn refuse_in_multi(&mut self, msg: &str) -> Pending {
        if let Some(tx) = self.tx.as_mut() {
            tx.aborted = true;
        }
        self.error(msg)
    }

    fn deadline(&self, table: &RoutingTable, shard: usize) -> Option<Instant> {
        table.shards[shard]
            .backend
            .timeout()
            .map(|t| Instant::now() + t)
    }
}

/// What a client is told when the connection holding its transaction broke.
fn lost_connection_text(shard: &str) -> String {
    format!(
        "shard '{shard}': the connection holding this client's transaction was lost; \
         the transaction and its WATCHes were discarded"
    )
}
