//! TLS for the etcd adapter (feature `etcd-tls`): the PEM a user gave, checked once per
//! [`Discovery::run`](super::Discovery::run) into a rustls client configuration (ring, the
//! provider etcd-client's tonic uses too), which the v2 long-poll wraps its sockets in; v3
//! hands the same PEM to etcd-client.

use std::fmt;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// What [`Etcd::tls`](super::Etcd::tls) and its siblings were given.
#[derive(Clone, Default)]
pub(super) struct TlsSettings {
    /// PEM: the certificates that may sign the members' certificates.
    pub(super) ca_pem: Vec<u8>,
    /// PEM: the client certificate chain and its private key (for `--client-cert-auth`).
    pub(super) identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name to verify the members' certificates against, instead of each endpoint's host.
    pub(super) domain: Option<String>,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Sizes and names only: a private key has no place in logs.
        f.debug_struct("TlsSettings")
            .field("ca_pem_bytes", &self.ca_pem.len())
            .field("client_certificate", &self.identity.is_some())
            .field("domain", &self.domain)
            .finish()
    }
}

/// Checked settings, ready to connect with.
pub(super) struct Tls {
    settings: TlsSettings,
    connector: TlsConnector,
    domain: Option<ServerName<'static>>,
}

impl TlsSettings {
    /// Parses and checks everything once, so that a bad certificate, key or name is reported
    /// by what it is, before anything is connected.
    pub(super) fn prepare(&self) -> Result<Tls, String> {
        if self.ca_pem.is_empty() {
            return Err("etcd: tls: no CA certificates given (Etcd::tls)".into());
        }
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&self.ca_pem) {
            let cert = cert.map_err(|e| format!("etcd: tls: the CA certificates: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("etcd: tls: the CA certificates: {e}"))?;
        }
        if roots.is_empty() {
            return Err("etcd: tls: no certificate in the CA certificates' PEM".into());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("etcd: tls: {e}"))?
            .with_root_certificates(roots);
        let config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some((cert_pem, key_pem)) => {
                let chain = CertificateDer::pem_slice_iter(cert_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("etcd: tls: the client certificate: {e}"))?;
                if chain.is_empty() {
                    return Err("etcd: tls: no certificate in the client certificate's PEM".into());
                }
                let key = PrivateKeyDer::from_pem_slice(key_pem)
                    .map_err(|e| format!("etcd: tls: the client key: {e}"))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("etcd: tls: the client certificate and key: {e}"))?
            }
        };
        let domain = match &self.domain {
            None => None,
            Some(d) => Some(
                ServerName::try_from(d.clone())
                    .map_err(|e| format!("etcd: tls: domain {d:?}: {e}"))?,
            ),
        };
        Ok(Tls {
            settings: self.clone(),
            connector: TlsConnector::from(Arc::new(config)),
            domain,
        })
    }
}

impl Tls {
    /// etcd-client's TLS options (v3): the same PEM, the same name.
    pub(super) fn v3_options(&self) -> etcd_client::TlsOptions {
        let s = &self.settings;
        let mut options = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(&s.ca_pem));
        if let Some((cert, key)) = &s.identity {
            options = options.identity(etcd_client::Identity::from_pem(cert, key));
        }
        if let Some(d) = &s.domain {
            options = options.domain_name(d.clone());
        }
        options
    }

    /// The TLS handshake on `tcp`, to `host_port`'s host (or the configured domain).
    pub(super) async fn connect(
        &self,
        host_port: &str,
        tcp: TcpStream,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let name = match &self.domain {
            Some(d) => d.clone(),
            None => ServerName::try_from(host_of(host_port).to_owned()).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("tls: {host_port}: {e}"),
                )
            })?,
        };
        self.connector.connect(name, tcp).await
    }
}

/// The host of `host:port` (`[v6]:port` without its brackets).
fn host_of(host_port: &str) -> &str {
    let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_endpoints() {
        assert_eq!(host_of("127.0.0.1:2379"), "127.0.0.1");
        assert_eq!(host_of("[::1]:2379"), "::1");
        assert_eq!(host_of("etcd.example:2379"), "etcd.example");
        assert_eq!(host_of("etcd.example"), "etcd.example");
    }

    #[test]
    fn bad_pem_is_named() {
        let none = TlsSettings {
            ca_pem: b"not a certificate".to_vec(),
            ..TlsSettings::default()
        };
        let e = none.prepare().err().unwrap();
        assert!(e.contains("no certificate in the CA"), "{e}");
        let garbled = TlsSettings {
            ca_pem: b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n".to_vec(),
            ..TlsSettings::default()
        };
        let e = garbled.prepare().err().unwrap();
        assert!(e.contains("the CA certificates"), "{e}");
    }
}
