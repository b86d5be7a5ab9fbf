//! `--zk HOST:PORT --codis-product NAME`: the demo's backend list comes from ZooKeeper, as
//! Codis 3.x proxies publish themselves for clients (`/jodis/<product>/proxy-<n>`, JSON with
//! `addr` and `state`).
//!
//! [`discovery`] is what the pool follows. With real Codis proxies registered, that is all. To
//! run the demo's in-process backends through ZooKeeper instead, [`Registry::register`] writes
//! them there as Codis does (ephemeral nodes), and [`Registry::add`], [`Registry::set_online`] and
//! [`Registry::remove`] change them, so the pool follows its watches.
//!
//! Needs `--features zookeeper`
//! (`cargo run --release --example demo --features zookeeper -- --zk 127.0.0.1:2181 --codis-product demo`).
#![cfg(feature = "zookeeper")]

use std::collections::HashMap;
use std::time::Duration;

use connpool::discovery::ZooKeeper;
use zookeeper_client as zk;

/// The discovery for `--zk CONNECT --codis-product PRODUCT`: Codis 3.x's `/jodis/<product>`.
pub fn discovery(connect: &str, product: &str) -> ZooKeeper {
    ZooKeeper::codis3(connect, product).resync_interval(Duration::from_secs(10))
}

/// The demo's own backends, registered in ZooKeeper the way codis-proxy registers itself.
pub struct Registry {
    client: zk::Client,
    dir: String,
    /// addr -> node path.
    nodes: HashMap<String, String>,
    /// Suffix of the next node's name.
    next: usize,
}

impl Registry {
    /// Connects and registers each address as `/jodis/<product>/proxy-demo-<i>` (ephemeral:
    /// they vanish when the demo exits).
    pub async fn register(connect: &str, product: &str, addrs: &[String]) -> Result<Self, String> {
        let client = zk::Client::connect(connect)
            .await
            .map_err(|e| format!("zookeeper {connect}: {e}"))?;
        let mut r = Registry {
            client,
            dir: format!("/jodis/{product}"),
            nodes: HashMap::new(),
            next: 0,
        };
        let dir_opts = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        r.client
            .mkdir(&r.dir, &dir_opts)
            .await
            .map_err(|e| format!("mkdir {}: {e}", r.dir))?;
        for addr in addrs {
            r.add(addr).await?;
        }
        Ok(r)
    }

    /// Registers one more proxy, online.
    pub async fn add(&mut self, addr: &str) -> Result<(), String> {
        let path = format!("{}/proxy-demo-{}", self.dir, self.next);
        self.next += 1;
        let opts = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
        self.client
            .create(&path, &node_json(addr, true), &opts)
            .await
            .map_err(|e| format!("create {path}: {e}"))?;
        self.nodes.insert(addr.to_owned(), path);
        Ok(())
    }

    /// Flips a proxy's `state` in place (as Codis 2.x does; Codis 3.x deletes the node
    /// instead): offline, the pool stops dialing it and closes its idle connections.
    pub async fn set_online(&self, addr: &str, online: bool) -> Result<(), String> {
        let path = self
            .nodes
            .get(addr)
            .ok_or(format!("{addr} is not registered"))?;
        self.client
            .set_data(path, &node_json(addr, online), None)
            .await
            .map(|_| ())
            .map_err(|e| format!("set {path}: {e}"))
    }

    /// Deletes a proxy's node (what codis-proxy does on a clean shutdown).
    pub async fn remove(&mut self, addr: &str) -> Result<(), String> {
        let path = self
            .nodes
            .remove(addr)
            .ok_or(format!("{addr} is not registered"))?;
        self.client
            .delete(&path, None)
            .await
            .map_err(|e| format!("delete {path}: {e}"))
    }
}

fn node_json(addr: &str, online: bool) -> Vec<u8> {
    let state = if online { "online" } else { "offline" };
    format!(r#"{{"addr":"{addr}","proxy_addr":"{addr}","state":"{state}","token":"demo"}}"#)
        .into_bytes()
}
