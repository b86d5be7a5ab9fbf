//! `Certs`: a throw-away CA (rcgen), a server certificate it signed for `127.0.0.1` and
//! `etcd.test`, and a client certificate it signed; PEM in memory, and the server's files on
//! disk (removed when dropped), for the TLS tests of the discovery adapters.

use std::path::{Path, PathBuf};

/// A server's TLS files: its certificate, its key, and the CA its clients' certificates must
/// be signed by (`None`: no client certificates asked for).
pub struct TlsFiles<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
    pub client_ca: Option<&'a Path>,
}

/// A CA and the certificates it signed.
pub struct Certs {
    /// The CA's certificate (PEM).
    pub ca: String,
    /// A client certificate the CA signed, and its key (PEM).
    pub client_cert: String,
    pub client_key: String,
    dir: PathBuf,
}

impl Certs {
    /// A new CA (named after `name`, so that two of them differ) and its certificates.
    pub fn new(name: &str) -> Certs {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair,
        };
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("connpool test CA {name}"));
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf = |sans: Vec<String>, purpose| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(sans).unwrap();
            params.extended_key_usages = vec![purpose];
            let cert = params.signed_by(&key, &ca).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(
            vec!["127.0.0.1".into(), "etcd.test".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) =
            leaf(vec!["connpool".into()], ExtendedKeyUsagePurpose::ClientAuth);
        let dir =
            std::env::temp_dir().join(format!("connpool-test-certs-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("server.pem"), server_cert).unwrap();
        std::fs::write(dir.join("server-key.pem"), server_key).unwrap();
        Certs {
            ca: ca.pem(),
            client_cert,
            client_key,
            dir,
        }
    }

    /// The server's files; with `client_auth`, clients must present a certificate this CA
    /// signed.
    pub fn files(&self, client_auth: bool) -> (PathBuf, PathBuf, Option<PathBuf>) {
        (
            self.dir.join("server.pem"),
            self.dir.join("server-key.pem"),
            client_auth.then(|| self.dir.join("ca.pem")),
        )
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
