//! Moving one hash slot from its master to another while clients use it, as
//! `redis-cli --cluster reshard` does: the slot is marked importing and migrating, its keys
//! move one `MIGRATE` at a time (clients get `ASK` for a key already moved, `TRYAGAIN` for a
//! command over keys split between the two), and then every node is told its new owner
//! (clients then get `MOVED`).

use anyhow::{Context as _, ensure};

use super::RedisCluster;
use super::nodes::request;

/// Keys moved per `MIGRATE`.
const KEYS_PER_MIGRATE: usize = 10;

impl RedisCluster {
    /// Moves `slot` and its keys to the master on port `to`, and waits until every running
    /// node agrees on the new owner. Nothing happens when `to` serves it already.
    ///
    /// # Errors
    /// When no master serves the slot, `to` is not a master, or a step fails (with the
    /// node's reply).
    pub async fn move_slot(&self, slot: u16, to: u16) -> anyhow::Result<()> {
        let from = self
            .master_of_slot(slot)
            .with_context(|| format!("no master serves slot {slot}"))?;
        if from == to {
            return Ok(());
        }
        ensure!(
            self.masters().contains(&to),
            "node {to} is not a master serving slots"
        );
        let id = |port: u16| {
            request(port, &["CLUSTER", "MYID"]).map_err(|e| anyhow::anyhow!("node {port}: {e}"))
        };
        let (from_id, to_id) = (id(from)?, id(to)?);
        let slot_text = slot.to_string();
        let step = |port: u16, args: &[&str]| {
            request(port, args).map_err(|e| anyhow::anyhow!("node {port} {args:?}: {e}"))
        };
        step(
            to,
            &["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", &from_id],
        )?;
        step(
            from,
            &["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", &to_id],
        )?;
        loop {
            let keys = self
                .cli(from, &["CLUSTER", "GETKEYSINSLOT", &slot_text, "100"])
                .await?;
            let keys: Vec<&str> = keys
                .lines()
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .collect();
            if keys.is_empty() {
                break;
            }
            for chunk in keys.chunks(KEYS_PER_MIGRATE) {
                let port = to.to_string();
                let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "10000", "KEYS"];
                args.extend(chunk);
                self.cli(from, &args).await?;
            }
        }
        // The new owner first, then the old one and the others, as redis-cli does.
        step(to, &["CLUSTER", "SETSLOT", &slot_text, "NODE", &to_id])?;
        step(from, &["CLUSTER", "SETSLOT", &slot_text, "NODE", &to_id])?;
        for port in self.running() {
            if port != to && port != from {
                // A replica may refuse; the cluster's gossip tells it anyway.
                let _ = request(port, &["CLUSTER", "SETSLOT", &slot_text, "NODE", &to_id]);
            }
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.master_of_slot(slot) != Some(to) {
            ensure!(
                tokio::time::Instant::now() < deadline,
                "the nodes did not agree within 30 s that node {to} serves slot {slot}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Ok(())
    }
}
