//! `--zk HOST:PORT --codis-product NAME`: the demo's backend list comes from ZooKeeper, as
//! Codis 3.x proxies publish themselves for clients (`/jodis/<product>/proxy-<n>`, JSON with
//! `addr` and `state`).
//!
//! [`discovery`] is what the pool follows. With real Codis proxies registered, that is all. To
//! run the demo's in-process backends through ZooKeeper instead, [`Registry::register`] writes
//! them there as Codis does (ephemeral nodes), and [`Registry::add`], [`Registry::set_online`] and
//! [`Registry::remove`] change them, so the pool follows its watches.
//!
//! `--auth USER:PASSWORD` (Codis' `coordinator_auth`) makes both use ZooKeeper's `digest`
//! scheme: the registry's nodes are then readable by that identity alone (`creator_all`), as
//! a protected Codis coordinator's are, and the discovery reads them with the same identity.
//!
//! Needs `--features zookeeper`
//! (`cargo run --release --example demo --features zookeeper -- --zk 127.0.0.1:2181 --codis-product demo`).
#![cfg(feature = "zookeeper")]

use std::collections::HashMap;
use std::time::Duration;

use connpool::discovery::ZooKeeper;
use zookeeper_client as zk;

/// The discovery for `--zk CONNECT --codis-product PRODUCT`: Codis 3.x's `/jodis/<product>`,
/// read as `auth`'s digest identity if given.
pub fn discovery(connect: &str, product: &str, auth: Option<&(String, String)>) -> ZooKeeper {
    let d = ZooKeeper::codis3(connect, product).resync_interval(Duration::from_secs(10));
    match auth {
        Some((user, password)) => d.digest(user, password),
        None => d,
    }
}

/// The demo's own backends, registered in ZooKeeper the way codis-proxy registers itself.
pub struct Registry {
    client: zk::Client,
    dir: String,
    /// addr -> node path.
    nodes: HashMap<String, String>,
    /// Suffix of the next node's name.
    next: usize,
    /// The ACL of the product's directory and nodes.
    acls: zk::Acls<'static>,
}

impl Registry {
    /// Connects and registers each address as `/jodis/<product>/proxy-demo-<i>` (ephemeral:
    /// they vanish when the demo exits). With `auth`, as that digest identity, and the product's
    /// directory and nodes are created readable by it alone (`/jodis` stays open to all, as
    /// Codis leaves it; a product directory that exists already keeps its ACL).
    pub async fn register(
        connect: &str,
        product: &str,
        addrs: &[String],
        auth: Option<&(String, String)>,
    ) -> Result<Self, String> {
        let mut connector = zk::Client::connector();
        if let Some((user, password)) = auth {
            connector = connector.with_auth("digest", format!("{user}:{password}").as_bytes());
        }
        let client = connector
            .connect(connect)
            .await
            .map_err(|e| format!("zookeeper {connect}: {e}"))?;
        let mut r = Registry {
            client,
            dir: format!("/jodis/{product}"),
            nodes: HashMap::new(),
            next: 0,
            acls: if auth.is_some() {
                zk::Acls::creator_all()
            } else {
                zk::Acls::anyone_all()
            },
        };
        let open = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        r.client
            .mkdir("/jodis", &open)
            .await
            .map_err(|e| format!("mkdir /jodis: {e}"))?;
        match r
            .client
            .create(&r.dir, &[], &zk::CreateMode::Persistent.with_acls(r.acls))
            .await
        {
            Ok(_) | Err(zk::Error::NodeExists) => {}
            Err(e) => return Err(format!("create {}: {e}", r.dir)),
        }
        for addr in addrs {
            r.add(addr).await?;
        }
        Ok(r)
    }

    /// Registers one more proxy, online.
    pub async fn add(&mut self, addr: &str) -> Result<(), String> {
        let path = format!("{}/proxy-demo-{}", self.dir, self.next);
        self.next += 1;
        let opts = zk::CreateMode::Ephemeral.with_acls(self.acls);
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
