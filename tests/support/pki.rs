//! Certificates for the TLS tests: a CA, server certificates for 127.0.0.1 and
//! `localhost`, and client certificates whose one URI SAN is a SPIFFE ID
//! (X.509-SVIDs), written as PEM files.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The PEM certificate.
    pub cert: PathBuf,
    /// The PEM private key (PKCS#8).
    pub key: PathBuf,
}

/// A certificate authority whose files live in a directory.
pub struct Ca {
    dir: PathBuf,
    name: String,
    issuer: Issuer<'static, KeyPair>,
    /// The CA's PEM certificate (the bundle peers verify against).
    pub cert: PathBuf,
}

impl Ca {
    /// A new CA named `name`, its certificate written to `dir/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("CA certificate");
        let path = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&path, cert.pem()).expect("write CA");
        Ca {
            dir: dir.to_path_buf(),
            name: name.to_owned(),
            issuer: Issuer::new(params, key),
            cert: path,
        }
    }

    fn leaf(&self, file: &str, sans: Vec<SanType>, usage: ExtendedKeyUsagePurpose) -> Pair {
        self.leaf_with(file, sans, vec![usage])
    }

    fn leaf_with(
        &self,
        file: &str,
        sans: Vec<SanType>,
        usages: Vec<ExtendedKeyUsagePurpose>,
    ) -> Pair {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
        params.subject_alt_names = sans;
        params.distinguished_name.push(DnType::CommonName, file);
        params.extended_key_usages = usages;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        let pair = Pair {
            cert: self.dir.join(format!("{}-{file}.pem", self.name)),
            key: self.dir.join(format!("{}-{file}-key.pem", self.name)),
        };
        std::fs::write(&pair.cert, cert.pem()).expect("write certificate");
        std::fs::write(&pair.key, key.serialize_pem()).expect("write key");
        pair
    }

    /// A server certificate for `localhost` and 127.0.0.1, files named after `file`.
    pub fn server(&self, file: &str) -> Pair {
        self.leaf(
            file,
            vec![
                SanType::DnsName("localhost".try_into().expect("dns name")),
                SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A workload's certificate (an X.509-SVID for server and client use): the
    /// SPIFFE ID `spiffe_id` as its one URI SAN, `dns` names, `localhost` and 127.0.0.1.
    pub fn workload(&self, file: &str, spiffe_id: &str, dns: &[&str]) -> Pair {
        let mut sans = vec![SanType::URI(spiffe_id.try_into().expect("uri"))];
        sans.extend(
            dns.iter()
                .chain(&["localhost"])
                .map(|d| SanType::DnsName((*d).try_into().expect("dns name"))),
        );
        sans.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        self.leaf_with(
            file,
            sans,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    /// A client certificate with `uris` as its URI SANs (one SPIFFE ID for an
    /// X.509-SVID), files named after `file`.
    pub fn client(&self, file: &str, uris: &[&str]) -> Pair {
        let sans = uris
            .iter()
            .map(|u| SanType::URI((*u).try_into().expect("uri")))
            .collect();
        self.leaf(file, sans, ExtendedKeyUsagePurpose::ClientAuth)
    }
}
