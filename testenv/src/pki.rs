//! Certificates and keys for a throw-away control plane: a CA, the API server's serving
//! certificate, an admin client certificate (group `system:masters`), the service-account
//! signing key, and for a node the kubelet's identity (`system:node:<name>`) and the API
//! server's client certificate for kubelets.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

pub struct Pki {
    pub dir: PathBuf,
    ca_pem: String,
    admin_crt: String,
    admin_key: String,
}

/// `extra_ips`: more addresses the API server answers on (the node bridge's gateway).
pub fn write(dir: &Path, extra_ips: &[String]) -> io::Result<Pki> {
    fs::create_dir_all(dir)?;
    let err = |e: rcgen::Error| io::Error::other(e.to_string());

    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "groupdocs-testenv-ca");
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;
    let ca = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().map_err(err)?;
    let mut server = CertificateParams::new(
        [
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "10.0.0.1".to_string(),
            "kubernetes".to_string(),
            "kubernetes.default".to_string(),
            "kubernetes.default.svc".to_string(),
            "kubernetes.default.svc.cluster.local".to_string(),
        ]
        .into_iter()
        .chain(extra_ips.iter().cloned())
        .collect::<Vec<_>>(),
    )
    .map_err(err)?;
    server.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server.signed_by(&server_key, &ca).map_err(err)?;

    let admin_key = KeyPair::generate().map_err(err)?;
    let mut admin = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    admin.distinguished_name.push(DnType::CommonName, "testenv-admin");
    admin.distinguished_name.push(DnType::OrganizationName, "system:masters");
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let admin_cert = admin.signed_by(&admin_key, &ca).map_err(err)?;

    let sa_key = KeyPair::generate().map_err(err)?;

    // The kubelet's identity, authorised by the Node authorizer, and the certificate the API
    // server presents to kubelets (for logs and exec), authorised by their webhook.
    let client_cert = |cn: &str, org: &str, name: &str| -> io::Result<()> {
        let key = KeyPair::generate().map_err(err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.distinguished_name.push(DnType::OrganizationName, org);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &ca).map_err(err)?;
        fs::write(dir.join(format!("{name}.crt")), cert.pem())?;
        fs::write(dir.join(format!("{name}.key")), key.serialize_pem())
    };
    client_cert(&format!("system:node:{}", crate::node::NODE_NAME), "system:nodes", "kubelet")?;
    client_cert("kube-apiserver-kubelet-client", "system:masters", "apiserver-kubelet-client")?;

    let pki = Pki {
        dir: dir.to_path_buf(),
        ca_pem: ca_cert.pem(),
        admin_crt: admin_cert.pem(),
        admin_key: admin_key.serialize_pem(),
    };
    fs::write(dir.join("ca.crt"), &pki.ca_pem)?;
    fs::write(dir.join("apiserver.crt"), server_cert.pem())?;
    fs::write(dir.join("apiserver.key"), server_key.serialize_pem())?;
    fs::write(dir.join("admin.crt"), &pki.admin_crt)?;
    fs::write(dir.join("admin.key"), &pki.admin_key)?;
    fs::write(dir.join("sa.key"), sa_key.serialize_pem())?;
    fs::write(dir.join("sa.pub"), sa_key.public_key_pem())?;
    Ok(pki)
}

/// A kubeconfig for the client certificate `name` (written by [`write`]), files inline.
pub fn kubeconfig_for(pki: &Pki, server: &str, name: &str) -> io::Result<String> {
    let crt = fs::read_to_string(pki.dir.join(format!("{name}.crt")))?;
    let key = fs::read_to_string(pki.dir.join(format!("{name}.key")))?;
    Ok(render_kubeconfig(&pki.ca_pem, server, &crt, &key))
}

/// A self-signed CA and a serving certificate for `names` (IP addresses or DNS names), as
/// PEM: `(ca, cert, key)`. For test servers such as the development token server over TLS.
pub fn serving_cert(names: &[String]) -> Result<(String, String, String), String> {
    let err = |e: rcgen::Error| e.to_string();
    let ca_key = KeyPair::generate().map_err(err)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "groupdocs-testenv-serving-ca");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;
    let ca = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::new(names.to_vec()).map_err(err)?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca).map_err(err)?;
    Ok((ca_cert.pem(), cert.pem(), key.serialize_pem()))
}

/// An admin kubeconfig with the certificates inline, so it can be copied anywhere.
pub fn kubeconfig(pki: &Pki, server: &str) -> String {
    render_kubeconfig(&pki.ca_pem, server, &pki.admin_crt, &pki.admin_key)
}

fn render_kubeconfig(ca_pem: &str, server: &str, crt: &str, key: &str) -> String {
    use base64::Engine as _;
    use std::fmt::Write;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut out = String::new();
    let _ = write!(
        out,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: testenv\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\nusers:\n- name: testenv-admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: testenv\n  context:\n    cluster: testenv\n    user: testenv-admin\n    namespace: default\ncurrent-context: testenv\n",
        b64(ca_pem),
        b64(crt),
        b64(key)
    );
    out
}
