//! Reading the cluster's shard znodes, as `init`, `status` and the
//! migration commands all need them.

use super::target::Target;
use super::AdminError;
use crate::zk::layout::child_path;
use zookeeper_client as zk;

/// One shard znode as read.
pub(crate) struct ShardZnode {
    /// The znode's name, e.g. `redis-0000`.
    pub name: String,
    pub path: String,
    /// Its data, as stored.
    pub data: Vec<u8>,
    /// Its data version, for a later conditional write.
    pub version: i32,
    /// Its member znodes (one per live Redis), unsorted.
    pub members: Vec<String>,
}

/// Every shard znode under the cluster root, in ZooKeeper's order; `None`
/// when the root does not exist. A shard deleted while being read is left
/// out.
pub(crate) async fn read_shard_znodes(
    client: &zk::Client,
    target: &Target,
) -> Result<Option<Vec<ShardZnode>>, AdminError> {
    let root = &target.cluster_root;
    let names = match client.list_children(root).await {
        Ok(names) => names,
        Err(zk::Error::NoNode) => return Ok(None),
        Err(error) => return Err(AdminError::zk_path(&target.hosts, root, error)),
    };
    let mut shards = Vec::with_capacity(names.len());
    for name in names {
        let path = child_path(root, &name);
        let error = |e| AdminError::zk_path(&target.hosts, &path, e);
        let (data, stat) = match client.get_data(&path).await {
            Ok(found) => found,
            Err(zk::Error::NoNode) => continue,
            Err(e) => return Err(error(e)),
        };
        let members = match client.list_children(&path).await {
            Ok(members) => members,
            Err(zk::Error::NoNode) => continue,
            Err(e) => return Err(error(e)),
        };
        shards.push(ShardZnode {
            name,
            path,
            data,
            version: stat.version,
            members,
        });
    }
    Ok(Some(shards))
}
