//! Before it acts on its Redis, a watchdog checks that no other shard
//! claims that Redis: one started with the wrong `--shard` (a typo) would
//! make a master of another shard a replica of this one, replacing its
//! data, and its replica would then be promoted with the wrong data
//! (review: every key of that shard gone while `status` said "degraded").

use super::agent::Agent;
use super::membership::Health;
use super::session::Session;
use crate::zk::layout::{child_path, MemberData};
use crate::zk::view::claim_on;
use tracing::{error, info};
use zookeeper_client as zk;

impl Agent {
    /// True once no other shard under the cluster root claims our Redis
    /// (in its line, or as its recorded master); checked on each step
    /// until then, and not again. A claim found is logged once, and the
    /// watchdog does nothing to its Redis meanwhile: it goes on only when
    /// the claim goes (that shard's line drops the Redis and another
    /// master records itself there).
    pub(super) async fn unclaimed_elsewhere(
        &mut self,
        session: &Session,
    ) -> Result<bool, zk::Error> {
        if self.claims_cleared {
            return Ok(true);
        }
        // The Redis's run, to know it under another name (`localhost:P`
        // for `127.0.0.1:P`: review). Not up, it is not acted on anyway;
        // checked again once it is.
        let Health::Up(state) = &self.health else {
            return Ok(true);
        };
        let run_id = state.run_id.clone();
        let (redis, shard) = (&self.settings.redis, &self.settings.shard);
        let Some((root, ours)) = shard.rsplit_once('/') else {
            return Ok(self.cleared().await);
        };
        let root = if root.is_empty() { "/" } else { root };
        let names = self
            .bounded(session, session.client.list_children(root))
            .await?;
        for name in names.iter().filter(|name| *name != ours) {
            let path = child_path(root, name);
            // A znode this watchdog may not read is no shard of the
            // fleet's (review: one made by hand under the root stopped
            // every watchdog from joining its line).
            let data = match self.bounded(session, session.client.get_data(&path)).await {
                Ok((data, _)) => data,
                Err(zk::Error::NoNode | zk::Error::NoAuth) => continue,
                Err(e) => return Err(e),
            };
            let members = match self
                .bounded(session, session.client.list_children(&path))
                .await
            {
                Ok(members) => members,
                Err(zk::Error::NoNode | zk::Error::NoAuth) => continue,
                Err(e) => return Err(e),
            };
            // Each member's registered run: our Redis under another name
            // is in that line too.
            let mut seen = Vec::with_capacity(members.len());
            for member in members {
                let member_path = child_path(&path, &member);
                let run = match self
                    .bounded(session, session.client.get_data(&member_path))
                    .await
                {
                    Ok((data, _)) => MemberData::registered_run_id(&data),
                    Err(zk::Error::NoNode | zk::Error::NoAuth) => None,
                    Err(e) => return Err(e),
                };
                seen.push((member, run));
            }
            if let Some(claim) = claim_on(redis, Some(&run_id), name, &data, &seen) {
                if self.claim_logged.as_deref() != Some(claim.as_str()) {
                    error!(
                        shard = %shard,
                        redis = %redis,
                        claim = %claim,
                        "not acting on this Redis: it {claim}, and this watchdog was started for \
                         another shard (check --shard); following this shard's master would \
                         replace its data. Waiting until that shard no longer claims it"
                    );
                    self.claim_logged = Some(claim);
                }
                return Ok(false);
            }
        }
        if self.claim_logged.take().is_some() {
            info!(shard = %shard, redis = %redis, "no other shard claims this Redis any more");
        }
        Ok(self.cleared().await)
    }

    /// No other shard claims our Redis: only now is this watchdog the
    /// Redis's, named so on a new connection; false while it stands by
    /// for another that announced itself first.
    async fn cleared(&mut self) -> bool {
        self.claims_cleared = true;
        self.redis.announce();
        !self.look_for_another_watchdog().await
    }
}
