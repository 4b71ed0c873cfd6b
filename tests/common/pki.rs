//! A test CA and the certificates it signs, for the HTTPS tests.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

/// A test CA and certificates it signs, as PEM files in a temp dir.
pub struct Pki {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut params = CertificateParams::new(Vec::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "kv-store test CA");
        let key = KeyPair::generate().expect("CA key");
        let ca = params.self_signed(&key).expect("CA certificate");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("ca.pem");
        Self {
            dir,
            issuer: Issuer::new(params, key),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The flags that serve HTTPS with `server.pem` and `server.key` (see
    /// `issue`), and with `client_ca` require client certificates this CA
    /// signed.
    #[allow(dead_code, reason = "not every test binary serves HTTPS")]
    pub fn server_flags(&self, client_ca: bool) -> Vec<String> {
        let mut flags = vec![
            "--tls-cert".to_owned(),
            path_str(&self.path("server.pem")).to_owned(),
            "--tls-key".to_owned(),
            path_str(&self.path("server.key")).to_owned(),
        ];
        if client_ca {
            flags.push("--tls-client-ca".to_owned());
            flags.push(path_str(&self.path("ca.pem")).to_owned());
        }
        flags
    }

    /// `name.pem` and `name.key`: a server certificate for 127.0.0.1 (with
    /// `common_name`), or a client one; expired if asked.
    pub fn issue(&self, name: &str, common_name: &str, client: bool, expired: bool) {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2020, 1, 2);
        }
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        std::fs::write(self.path(&format!("{name}.pem")), cert.pem()).expect("cert");
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).expect("key");
    }
}

/// A path as the `&str` a flag takes.
pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}
