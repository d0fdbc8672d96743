//! Kubeconfigs and clients: a ServiceAccount's kubeconfig (the same cluster, only its token),
//! and a kube client from a kubeconfig file.

use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// Writes a kubeconfig for ServiceAccount `account` of `namespace` into `dir`: the cluster
/// of `admin` with a `kubectl create token` token that lives `duration` (e.g. `1h`).
pub fn service_account(admin: &Path, namespace: &str, account: &str, duration: &str, dir: &Path) -> PathBuf {
    let kubectl = |args: &[&str]| testenv::kubectl::run(admin, args).unwrap_or_else(|e| panic!("{e}"));
    let token = kubectl(&["create", "token", account, "-n", namespace, &format!("--duration={duration}")]);
    let kubeconfig = dir.join(format!("kubeconfig-{namespace}-{account}"));
    std::fs::write(&kubeconfig, kubectl(&["config", "view", "--raw", "--minify"])).expect("write the kubeconfig");
    let path = kubeconfig.to_str().expect("a UTF-8 path");
    kubectl(&["--kubeconfig", path, "config", "set-credentials", account, "--token", token.trim()]);
    kubectl(&["--kubeconfig", path, "config", "set-context", "--current", "--user", account]);
    kubeconfig
}

/// The client configuration of a kubeconfig file (its current context).
pub async fn config(kubeconfig: &Path) -> Config {
    groupdocs_token_operator::install_crypto_provider();
    let kc = Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("kubeconfig")
}

/// A client for a kubeconfig file.
pub async fn client(kubeconfig: &Path) -> Client {
    Client::try_from(config(kubeconfig).await).expect("client")
}
