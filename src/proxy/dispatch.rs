//! Where each request of a session goes: the command it names, the user's
//! rights, then its handling: run here, forwarded to the shard of its keys
//! (or through a migration lane), split over shards, queued in a
//! transaction, or handed to pub/sub, keyspace and scripts.
//!
//! The session loop ([`crate::proxy::client`]) decides when a request may
//! go; this module decides where.

use crate::command::{self, Command, Handling, KeySpec};
use crate::protocol::Request;
use crate::proxy::acl;
use crate::proxy::local;
use crate::proxy::migration::{self, Moving};
use crate::proxy::pending::{unsupported_error, Pending};
use crate::proxy::pubsub;
use crate::proxy::router::{RoutingTable, ShardName};
use crate::proxy::session::{Lane, Session};
use crate::proxy::split::{self, Part, SplitReply};
use crate::proxy::{keyspace, reserved, scripts, sort};
use bytes::Bytes;
use std::sync::atomic::Ordering;

impl Session {
    /// The command a request names.
    ///
    /// # Errors
    /// Redis's text for an unknown command or a wrong argument count.
    pub(crate) fn resolve(&self, args: &[Bytes]) -> Result<&'static Command, String> {
        match command::resolve(args) {
            Ok(cmd) => Ok(cmd),
            // CLIENT SETINFO is newer than Redis 7.0's table, and clients
            // send it on connect: CLIENT is answered here in any case.
            Err(_) if args[0].eq_ignore_ascii_case(b"client") => {
                Ok(command::lookup(b"client").expect("CLIENT is in the table"))
            }
            Err(e) => Err(e),
        }
    }

    /// True when `cmd` may only be dispatched once every reply owed has been
    /// answered: it blocks, starts a transaction, or travels on the other
    /// kind of connection than the requests before it (which it could
    /// otherwise overtake).
    pub(crate) fn needs_quiet(&self, cmd: &Command, args: &[Bytes]) -> bool {
        if self.settling {
            return true;
        }
        let handling = cmd.handling_for(args);
        match handling {
            // RESET drops the dedicated connection: nothing may be in
            // flight on it.
            Handling::Local if cmd.name == "reset" => true,
            // A (un)subscription goes on the subscriber connections: it
            // must not overtake a PUBLISH (or anything) still owed, which
            // would then count it, or miss it, unlike on Redis.
            Handling::PubSub if cmd.name.ends_with("subscribe") => true,
            Handling::Blocking if !self.in_multi() => true,
            Handling::Transaction if self.tx.is_none() => !self.follows_on_held_connection(cmd),
            _ if self.binds_elsewhere(cmd, args) => true,
            _ => self.lane_for(handling) != self.lane,
        }
    }

    pub(crate) fn lane_for(&self, handling: Handling) -> Lane {
        if matches!(handling, Handling::Blocking | Handling::Transaction) || self.in_multi() {
            Lane::Dedicated
        } else {
            Lane::Shared
        }
    }

    pub(crate) fn in_multi(&self) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.multi)
    }

    /// Routes one request; returns its command, if it names one, and the
    /// reply it is owed.
    pub(crate) fn dispatch(
        &mut self,
        request: Request,
        resolved: Result<&'static Command, String>,
    ) -> (Option<&'static Command>, Pending) {
        match resolved {
            Ok(cmd) => {
                let pending = self.route(cmd, request);
                // A (un)subscription or RESET waiting for the shards'
                // confirmation holds up what follows it.
                self.settling = (cmd.name.ends_with("subscribe") || cmd.name == "reset")
                    && matches!(pending, Pending::Assembling(_));
                (Some(cmd), pending)
            }
            Err(e) => {
                let exec = request
                    .args
                    .first()
                    .is_some_and(|name| name.eq_ignore_ascii_case(b"exec"));
                // As in Redis, even outside MULTI: EXEC refused for its
                // arguments discards the transaction, WATCHes included.
                if exec {
                    return (None, self.exec_refused(&e));
                }
                // As in Redis, a command refused while queueing dooms the
                // transaction.
                if let Some(tx) = self.tx.as_mut().filter(|tx| tx.multi) {
                    tx.aborted = true;
                }
                (None, self.error(&e))
            }
        }
    }

    /// Runs or forwards a request for a known command.
    fn route(&mut self, cmd: &'static Command, request: Request) -> Pending {
        let args = &request.args;
        if !self.authenticated && !matches!(cmd.name, "auth" | "hello" | "quit" | "reset") {
            const NOAUTH: &str = "NOAUTH Authentication required.";
            // Requests in bulk without a login: closed after this refusal,
            // as Redis closes such a client once its refusals pile up
            // (CVE-2025-21605), where it went on refusing for good (review:
            // redis-cli --pipe without the password never ended).
            self.refused_unauthenticated += 1;
            if self.refused_unauthenticated == acl::MAX_UNAUTHENTICATED_REFUSALS {
                tracing::info!(
                    client = self.id,
                    refused = self.refused_unauthenticated,
                    "closing a client that sends requests without logging in"
                );
                self.closing = true;
            }
            // Redis 7 words any refusal of EXEC as the transaction's end.
            if cmd.name == "exec" {
                return self.exec_refused(NOAUTH);
            }
            return self.error(NOAUTH);
        }
        // After the login: the refusal names another proxy's host and pid,
        // not for a client that has not logged in (review).
        let refused = self.authenticated && cmd.name != "quit";
        if let Some(refusal) = self.pool.zk_status.refusal().filter(|_| refused) {
            return self.error(&refusal);
        }
        // The user's rights, then what belongs to the proxies, before any
        // handling (as Redis checks ACL before the pub/sub context), so that
        // no path around them exists.
        let pool = &self.pool;
        let migrating = || pool.router.load().migration.is_some();
        let refused = match &self.user {
            Some(user) => acl::check(user, cmd, args),
            None => Ok(()),
        }
        .and_then(|()| reserved::check(cmd, args, migrating));
        if let Err(e) = refused {
            // As in Redis, a refusal while queueing a transaction dooms it.
            if let Some(tx) = self.tx.as_mut().filter(|tx| tx.multi) {
                tx.aborted = true;
            }
            return self.error(&e);
        }
        if let Some(refusal) = pubsub::refusal(self.pubsub.is_some(), self.proto, cmd) {
            return self.error(&refusal);
        }
        let handling = cmd.handling_for(args);
        self.lane = self.lane_for(handling);
        if (handling == Handling::Transaction || self.in_multi()) && cmd.name != "reset" {
            return self.transaction(cmd, handling, request);
        }
        match handling {
            Handling::Local => local::run(self, cmd, args),
            Handling::Unsupported => self.error(&unsupported_error(cmd, args)),
            Handling::Forward => self.forward(cmd, request),
            Handling::Split(kind) => self.split(cmd, kind, request),
            Handling::Blocking => self.blocking(cmd, request),
            Handling::Transaction => unreachable!("handled above"),
            Handling::AnyBackend => {
                let table = self.take_table();
                let shard = &table.shards[self.id as usize % table.shards.len()];
                self.send(shard, request.raw)
            }
            Handling::PubSub => {
                let client = pubsub::Client {
                    pool: &self.pool,
                    proto: self.proto,
                    id: self.id,
                    affinity: self.affinity,
                    subscriptions: &mut self.pubsub,
                };
                pubsub::run(client, cmd, args, request.raw.clone())
            }
            Handling::FanOut => {
                let table = self.take_table();
                Pending::split(
                    split::fan_out(&table, self.proto, self.affinity, &request.args),
                    self.pool.clone(),
                )
            }
            Handling::Keyspace(op) => keyspace::run(self, op, cmd, &request.args, request.raw),
            Handling::Scripts(op) => scripts::run(self, op, cmd, request.raw),
        }
    }

    /// The shard that owns every key of a request: `Ok(None)` for a request
    /// without keys.
    ///
    /// # Errors
    /// The error reply text: a malformed key layout, keys on several
    /// shards, or SORT patterns that may read another shard's keys.
    pub(crate) fn shard_of_keys(
        &self,
        table: &RoutingTable,
        cmd: &Command,
        args: &[Bytes],
    ) -> Result<Option<usize>, String> {
        let shard = shard_of_named_keys(table, cmd, args)?;
        if let Some(shard) = shard.filter(|_| matches!(cmd.name, "sort" | "sort_ro")) {
            sort::check_patterns(table, args, shard)?;
        }
        Ok(shard)
    }

    /// [`Self::shard_of_keys`] for a request bound for the dedicated
    /// connection (blocking commands, transactions), which cannot go
    /// through a migration lane: keys of a moving range are refused.
    pub(crate) fn dedicated_shard_of_keys(
        &self,
        table: &RoutingTable,
        cmd: &Command,
        args: &[Bytes],
    ) -> Result<Option<usize>, String> {
        let shard = self.shard_of_keys(table, cmd, args)?;
        if shard.is_some() && table.migration.is_some() {
            let keys = cmd.key_indexes(args).unwrap_or_default();
            if migration::moving(table, keys.iter().map(|&k| &args[k][..])) != Moving::No {
                return Err(migration::TRYAGAIN_DEDICATED.into());
            }
        }
        Ok(shard)
    }

    /// A single-backend command: every key must live on the same shard.
    fn forward(&mut self, cmd: &'static Command, request: Request) -> Pending {
        let table = self.take_table();
        let shard = match self.shard_of_keys(&table, cmd, &request.args) {
            Ok(Some(shard)) => shard,
            Ok(None) if scripts::runs_keyless(cmd) => scripts::KEYLESS_SHARD,
            Ok(None) => {
                return self.error(&format!(
                    "ERR '{}' without a key cannot be routed by shardproxy",
                    cmd.name
                ))
            }
            Err(e) => return self.error(&e),
        };
        self.last_shard = table.shards[shard].name;
        scripts::share(self, &table, cmd, &request.args);
        if table.migration.is_some() {
            // Only the keys of a moving range are copied out for the lane;
            // the check itself reads the request in place.
            let positions = match single_key_index(cmd, &request.args) {
                Some(i) => vec![i],
                None => cmd.key_indexes(&request.args).unwrap_or_default(),
            };
            let keys = positions.iter().map(|&k| &request.args[k][..]);
            match migration::moving(&table, keys) {
                Moving::No => {}
                Moving::All => {
                    self.last_shard = moving_target(&table);
                    let keys = positions.iter().map(|&k| request.args[k].clone());
                    return self.through_migration(
                        moving_source(&table),
                        keys.collect(),
                        request.raw,
                    );
                }
                Moving::Mixed => return self.error(migration::TRYAGAIN_MIXED),
            }
        }
        self.send(&table.shards[shard], request.raw)
    }

    /// MGET, MSET, DEL, UNLINK, EXISTS, TOUCH: one sub-request per shard.
    fn split(
        &mut self,
        cmd: &'static Command,
        kind: command::SplitKind,
        request: Request,
    ) -> Pending {
        let table = self.take_table();
        let keys = match cmd.key_indexes(&request.args) {
            Ok(keys) => keys,
            Err(e) => return self.error(&e),
        };
        match split::plan(&table, kind, &request.args, &keys) {
            // All keys on one shard: forward the request untouched.
            split::Plan::Single(shard) if shard == table.shards.len() => {
                self.last_shard = moving_target(&table);
                let source = moving_source(&table);
                let keys = keys.iter().map(|&k| request.args[k].clone()).collect();
                self.through_migration(source, keys, request.raw)
            }
            split::Plan::Single(shard) => {
                self.last_shard = table.shards[shard].name;
                self.send(&table.shards[shard], request.raw)
            }
            split::Plan::Parts(parts) => {
                let fragments = parts.len() as u64;
                self.pool
                    .stats
                    .fragments
                    .fetch_add(fragments, Ordering::Relaxed);
                let mut sent = Vec::with_capacity(parts.len());
                for (shard, sub_request, positions) in parts {
                    let (reply, shard) = if shard == table.shards.len() {
                        let source = moving_source(&table);
                        let keys = positions
                            .iter()
                            .map(|&p| request.args[keys[p]].clone())
                            .collect();
                        match self.through_migration(source, keys, sub_request) {
                            Pending::Forward { reply, shard } => (reply, shard),
                            _ => unreachable!("the lane forwards"),
                        }
                    } else {
                        let shard = &table.shards[shard];
                        let reply = self.forward_to(shard, sub_request);
                        (reply, shard.name)
                    };
                    sent.push(Part {
                        reply,
                        shard,
                        positions,
                    });
                }
                let parts = sent;
                Pending::split(
                    SplitReply::new(cmd.name, kind, keys.len(), parts, self.proto),
                    self.pool.clone(),
                )
            }
        }
    }

    fn send(&self, shard: &crate::proxy::router::Shard, raw: Bytes) -> Pending {
        Pending::Forward {
            reply: self.forward_to(shard, raw),
            shard: shard.name,
        }
    }
}

/// The name of the shard a table's active migration moves from.
fn moving_source(table: &RoutingTable) -> ShardName {
    table
        .migration
        .as_ref()
        .map_or("migration", |m| m.source_name)
}

/// The shard a moving range goes to: what the lane runs its requests on,
/// so what a WAIT after one of them must ask (review: it asked the
/// source's replicas, which never see those writes, and answered at once).
fn moving_target(table: &RoutingTable) -> ShardName {
    table
        .migration
        .as_ref()
        .map_or("migration", |m| m.target_name)
}

/// The shard of the keys a request names (see [`Session::shard_of_keys`]).
fn shard_of_named_keys(
    table: &RoutingTable,
    cmd: &Command,
    args: &[Bytes],
) -> Result<Option<usize>, String> {
    if let Some(key) = single_key(cmd, args) {
        return Ok(Some(table.shard_of(key)));
    }
    let keys = cmd.key_indexes(args)?;
    let Some((&first, rest)) = keys.split_first() else {
        return Ok(None);
    };
    let shard = table.shard_of(&args[first]);
    if rest.iter().any(|&k| table.shard_of(&args[k]) != shard) {
        return Err(across_shards(cmd, args).into());
    }
    Ok(Some(shard))
}

/// What a request whose keys are on several shards gets: the error Redis
/// gives such a request before it looks at any key, so a typo is named as
/// one; else CROSSSLOT.
fn across_shards(cmd: &Command, args: &[Bytes]) -> &'static str {
    if cmd.name == "bitop" {
        let op = args.get(1).map_or(&b""[..], |op| &op[..]);
        let known = [&b"and"[..], b"or", b"xor", b"not"];
        if !known.iter().any(|name| op.eq_ignore_ascii_case(name)) {
            return "ERR syntax error";
        }
        if op.eq_ignore_ascii_case(b"not") && args.len() != 4 {
            return "ERR BITOP NOT must be called with a single source key.";
        }
    }
    "CROSSSLOT Keys in request don't hash to the same server"
}

/// The key of a command with exactly one key at a fixed position, found
/// without allocating: the common case on the hot path.
fn single_key<'a>(cmd: &Command, args: &'a [Bytes]) -> Option<&'a [u8]> {
    single_key_index(cmd, args).map(|i| &args[i][..])
}

/// Where the one key of a single-key command is, without a key list.
fn single_key_index(cmd: &Command, args: &[Bytes]) -> Option<usize> {
    match cmd.keys {
        KeySpec::Range { first, last, .. }
            if (last == first as isize || (last == -1 && args.len() == first + 1))
                && first < args.len() =>
        {
            Some(first)
        }
        _ => None,
    }
}
