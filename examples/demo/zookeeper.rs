//! `--zk HOST:PORT --codis-product NAME`: the demo's backend list comes from ZooKeeper, as
//! Codis 3.x proxies publish themselves for clients (`/jodis/<product>/proxy-<n>`, JSON with
//! `addr` and `state`).
//!
//! [`discovery`] is what the pool follows. With real Codis proxies registered, that is all. To
//! run the demo's in-process backends through ZooKeeper instead, [`Registry::register`] writes
//! them there as Codis does (ephemeral nodes), and [`Registry::add`], [`Registry::set_online`] and
//! [`Registry::remove`] change them, so the pool follows its watches.
//!
//! [`Access`] is how both reach ZooKeeper: `--auth USER:PASSWORD` (Codis' `coordinator_auth`)
//! makes both use ZooKeeper's `digest` scheme: the registry's nodes are then readable by that
//! identity alone (`creator_all`), as a protected Codis coordinator's are, and the discovery
//! reads them with the same identity. With `--features zookeeper-tls`, `--zk-ca FILE` makes
//! both speak TLS to the server's `secureClientPort` (verified against that CA) and `--zk-cert
//! FILE --zk-key FILE` presents a client certificate (for `ssl.clientAuth=need`).
//!
//! Needs `--features zookeeper`
//! (`cargo run --release --example demo --features zookeeper -- --zk 127.0.0.1:2181 --codis-product demo`).
#![cfg(feature = "zookeeper")]

use std::collections::HashMap;
use std::time::Duration;

use connpool::discovery::ZooKeeper;
use zookeeper_client as zk;

/// How the demo's discovery and registry reach ZooKeeper (both use the same). No `Debug`: it
/// holds a password and a private key.
#[derive(Clone, Default)]
pub struct Access {
    /// `--auth USER:PASSWORD`: the `digest` identity.
    pub auth: Option<(String, String)>,
    /// `--zk-ca`: the CA's PEM (TLS on; feature `zookeeper-tls`).
    pub ca_pem: Option<Vec<u8>>,
    /// `--zk-cert` and `--zk-key`: the client certificate's and its key's PEM.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// The discovery for `--zk CONNECT --codis-product PRODUCT`: Codis 3.x's `/jodis/<product>`,
/// reached as `access` says.
pub fn discovery(connect: &str, product: &str, access: &Access) -> ZooKeeper {
    let mut d = ZooKeeper::codis3(connect, product).resync_interval(Duration::from_secs(10));
    if let Some((user, password)) = &access.auth {
        d = d.digest(user, password);
    }
    #[cfg(feature = "zookeeper-tls")]
    if let Some(ca) = &access.ca_pem {
        d = d.tls(ca);
        if let Some((cert, key)) = &access.identity {
            d = d.tls_identity(cert, key);
        }
    }
    d
}

/// zookeeper-client's TLS options for the registry: the same CA and client certificate as the
/// discovery's (which checks the same PEM the same way, and names what is wrong).
#[cfg(feature = "zookeeper-tls")]
fn tls_options(access: &Access) -> Result<Option<zk::TlsOptions>, String> {
    let Some(ca) = &access.ca_pem else {
        return Ok(None);
    };
    let text = |what: &str, pem: &[u8]| {
        String::from_utf8(pem.to_vec()).map_err(|_| format!("{what}: not UTF-8 PEM"))
    };
    let mut options = zk::TlsOptions::new()
        .with_pem_ca(&text("--zk-ca", ca)?)
        .map_err(|e| format!("--zk-ca: {e}"))?;
    if let Some((cert, key)) = &access.identity {
        options = options
            .with_pem_identity(&text("--zk-cert", cert)?, &text("--zk-key", key)?)
            .map_err(|e| format!("--zk-cert and --zk-key: {e}"))?;
    }
    // zookeeper-client's rustls needs the process's crypto provider (see the adapter's
    // `ZooKeeper::tls`): ring, unless one was chosen already.
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    Ok(Some(options))
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
    /// they vanish when the demo exits). With `access.auth`, as that digest identity, and the
    /// product's directory and nodes are created readable by it alone (`/jodis` stays open to
    /// all, as Codis leaves it; a product directory that exists already keeps its ACL); with
    /// `access.ca_pem`, over TLS.
    pub async fn register(
        connect: &str,
        product: &str,
        addrs: &[String],
        access: &Access,
    ) -> Result<Self, String> {
        let mut connector = zk::Client::connector();
        if let Some((user, password)) = &access.auth {
            connector = connector.with_auth("digest", format!("{user}:{password}").as_bytes());
        }
        #[cfg(feature = "zookeeper-tls")]
        let connected = match tls_options(access)? {
            Some(options) => connector.with_tls(options).secure_connect(connect).await,
            None => connector.connect(connect).await,
        };
        #[cfg(not(feature = "zookeeper-tls"))]
        let connected = if access.ca_pem.is_some() || access.identity.is_some() {
            return Err("TLS to ZooKeeper needs the `zookeeper-tls` feature".into());
        } else {
            connector.connect(connect).await
        };
        let client = connected.map_err(|e| format!("zookeeper {connect}: {e}"))?;
        let mut r = Registry {
            client,
            dir: format!("/jodis/{product}"),
            nodes: HashMap::new(),
            next: 0,
            acls: if access.auth.is_some() {
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
