//! `--etcd HOST:PORT --prefix P`: the demo's backend list comes from etcd (v3 API): every key
//! under the prefix holds a backend, as JSON (`{"addr": "host:port", "state": "online"}`) or
//! plain `host:port`.
//!
//! [`discovery`] is what the pool follows. With backends already registered under the prefix,
//! that is all. To run the demo's in-process backends through etcd instead,
//! [`Registry::register`] writes them there under a lease (like an ephemeral registration:
//! the keys vanish about 10 s after the demo exits), and [`Registry::set_online`] /
//! [`Registry::remove`] change them, so the pool follows its watch.
//!
//! [`Access`] is how both reach etcd: `--auth USER:PASSWORD` (an etcd user, as in Codis'
//! `coordinator_auth`) and, with `--features etcd-tls`, `--etcd-ca FILE` (TLS, verified
//! against that CA), `--etcd-cert FILE --etcd-key FILE` (a client certificate, for etcd's
//! `--client-cert-auth`) and `--etcd-domain NAME` (the name the server's certificate must be
//! valid for, when it is not the endpoint's host).
//!
//! Needs `--features etcd` (and `protoc` to build):
//! `cargo run --release --example demo --features etcd -- --etcd 127.0.0.1:2379 --prefix /demo/`.
#![cfg(feature = "etcd")]

use std::collections::HashMap;

use connpool::discovery::Etcd;
use etcd_client::{Client, ConnectOptions, PutOptions};

/// How the demo's discovery and registry reach etcd (both use the same). No `Debug`: it holds
/// a password and a private key.
#[derive(Clone, Default)]
pub struct Access {
    /// `--auth USER:PASSWORD`.
    pub auth: Option<(String, String)>,
    /// `--etcd-ca`: the CA's PEM (TLS on).
    pub ca_pem: Option<Vec<u8>>,
    /// `--etcd-cert` and `--etcd-key`: the client certificate's and its key's PEM.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// `--etcd-domain`.
    pub domain: Option<String>,
}

impl Access {
    /// etcd-client's options for the registry: the same user and TLS as the discovery's.
    fn connect_options(&self) -> Option<ConnectOptions> {
        let mut o = ConnectOptions::new();
        if let Some((user, password)) = &self.auth {
            // The token expires (5 minutes by default); renewed, a long run keeps its lease.
            o = o
                .with_user(user.as_str(), password.as_str())
                .with_auto_token_refresh(true);
        }
        #[cfg(feature = "etcd-tls")]
        if let Some(ca) = &self.ca_pem {
            use etcd_client::{Certificate, Identity, TlsOptions};
            let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(ca));
            if let Some((cert, key)) = &self.identity {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            if let Some(name) = &self.domain {
                tls = tls.domain_name(name.as_str());
            }
            o = o.with_tls(tls);
        }
        let plain = self.auth.is_none() && self.ca_pem.is_none();
        (!plain).then_some(o)
    }
}

/// The lease TTL of the demo's registrations, in seconds.
const TTL: i64 = 10;

/// The discovery for `--etcd HOST:PORT --prefix P`: every key under `P`, reached as `access`
/// says.
pub fn discovery(endpoint: &str, prefix: &str, access: &Access) -> Etcd {
    let mut d = Etcd::prefix(&[endpoint], prefix);
    if let Some((user, password)) = &access.auth {
        d = d.credentials(user, password);
    }
    #[cfg(feature = "etcd-tls")]
    if let Some(ca) = &access.ca_pem {
        d = d.tls(ca);
        if let Some((cert, key)) = &access.identity {
            d = d.tls_identity(cert, key);
        }
        if let Some(name) = &access.domain {
            d = d.tls_domain(name);
        }
    }
    d
}

/// The demo's own backends, registered in etcd under one lease kept alive by a task.
pub struct Registry {
    client: Client,
    dir: String,
    lease: i64,
    /// addr -> key.
    keys: HashMap<String, String>,
    next: usize,
    keeper: tokio::task::JoinHandle<()>,
}

impl Registry {
    /// Connects (as `access` says), takes a lease, and registers each address as
    /// `<prefix>proxy-demo-<i>`.
    pub async fn register(
        endpoint: &str,
        prefix: &str,
        addrs: &[String],
        access: &Access,
    ) -> Result<Self, String> {
        let mut client = Client::connect([endpoint], access.connect_options())
            .await
            .map_err(|e| format!("etcd {endpoint}: {e}"))?;
        let lease = client
            .lease_grant(TTL, None)
            .await
            .map_err(|e| format!("etcd {endpoint}: lease: {e}"))?
            .id();
        let (mut keeper, mut acks) = client
            .lease_keep_alive(lease)
            .await
            .map_err(|e| format!("etcd {endpoint}: keep-alive: {e}"))?;
        let keeper = tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs((TTL / 3) as u64)).await;
                if keeper.keep_alive().await.is_err() {
                    return;
                }
                match acks.message().await {
                    Ok(Some(_)) => {}
                    _ => return,
                }
            }
        });
        let dir = if prefix.ends_with('/') {
            prefix.to_owned()
        } else {
            format!("{prefix}/")
        };
        let mut r = Registry {
            client,
            dir,
            lease,
            keys: HashMap::new(),
            next: 0,
            keeper,
        };
        for addr in addrs {
            r.add(addr).await?;
        }
        Ok(r)
    }

    /// Registers one more backend, online.
    pub async fn add(&mut self, addr: &str) -> Result<(), String> {
        let key = format!("{}proxy-demo-{}", self.dir, self.next);
        self.next += 1;
        self.put(&key, addr, true).await?;
        self.keys.insert(addr.to_owned(), key);
        Ok(())
    }

    /// Flips a backend's `state` in place.
    pub async fn set_online(&mut self, addr: &str, online: bool) -> Result<(), String> {
        let key = self
            .keys
            .get(addr)
            .cloned()
            .ok_or(format!("{addr} is not registered"))?;
        self.put(&key, addr, online).await
    }

    /// Deletes a backend's key.
    pub async fn remove(&mut self, addr: &str) -> Result<(), String> {
        let key = self
            .keys
            .remove(addr)
            .ok_or(format!("{addr} is not registered"))?;
        self.client
            .delete(key.as_str(), None)
            .await
            .map(|_| ())
            .map_err(|e| format!("delete {key}: {e}"))
    }

    async fn put(&mut self, key: &str, addr: &str, online: bool) -> Result<(), String> {
        let state = if online { "online" } else { "offline" };
        let value = format!(r#"{{"addr":"{addr}","state":"{state}"}}"#);
        self.client
            .put(key, value, Some(PutOptions::new().with_lease(self.lease)))
            .await
            .map(|_| ())
            .map_err(|e| format!("put {key}: {e}"))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // The lease then expires within TTL seconds and etcd deletes the keys.
        self.keeper.abort();
    }
}
