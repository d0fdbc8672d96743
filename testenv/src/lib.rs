//! A real, local Kubernetes control plane: etcd, kube-apiserver and kube-controller-manager
//! built from their Go modules by `make testbins`, started on free loopback ports; and, on
//! request, a real node beside it ([`node`]: containerd, the kubelet, kube-scheduler and
//! kube-proxy) that runs pods from locally built images.
//!
//! The same code backs `make cluster` (detached processes that outlive the launcher) and the
//! Rust end-to-end tests ([`shared`]: one control plane per test binary, stopped when the test
//! binary exits, even when it is killed).
//!
//! By concern: [`process`] (lifetimes, stopping, free ports), [`control_plane`] (start, stop,
//! `make cluster`'s detached mode), [`shared`] (one per test binary), [`node`] and [`pki`]
//! (the node beside it and the certificates of both), [`kubectl`]; here, where the pinned
//! binaries and images are.

use std::fs;
use std::path::{Path, PathBuf};

pub mod control_plane;
pub mod kubectl;
pub mod node;
pub mod pki;
pub mod process;
pub mod shared;

pub use control_plane::{ControlPlane, Options, stop_detached};
pub use process::Lifetime;
pub use shared::{SharedControlPlane, shared, shared_with, with_shared};

/// Versions pinned for the whole test environment; `make testbins` builds exactly these.
const VERSIONS: &str = include_str!("../../hack/testbins.env");

/// Opt-in to run the end-to-end tests against the cluster in `$KUBECONFIG` instead.
pub const EXISTING_CLUSTER_ENV: &str = "GDTO_E2E_EXISTING_CLUSTER";

pub type Result<T> = std::result::Result<T, String>;

/// The Kubernetes version the environment is pinned to, e.g. `v1.36.3`.
pub fn kubernetes_version() -> &'static str {
    VERSIONS.lines().find_map(|l| l.strip_prefix("K8S_VERSION=")).expect("hack/testbins.env names K8S_VERSION").trim()
}

/// Where `make testbins` puts the binaries (`$TESTBINS_DIR` overrides).
pub fn testbins_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TESTBINS_DIR") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
    cache.join("groupdocs-token-operator/testbins").join(kubernetes_version())
}

/// Path of one test binary, or an error that says how to build it.
pub fn testbin(name: &str) -> Result<PathBuf> {
    let path = testbins_dir().join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: run `make testbins` (or set {EXISTING_CLUSTER_ENV}=1 with KUBECONFIG for an existing cluster)",
            path.display()
        ))
    }
}

/// Where `make image` leaves the OCI image tarballs (`$GDTO_IMAGE_DIR` overrides).
pub fn image_dir() -> PathBuf {
    std::env::var_os("GDTO_IMAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/image"))
}

/// The image tarballs a node loads: every `*.oci.tar` of [`image_dir`], the sandbox image's
/// `pause.oci.tar` required.
pub fn node_images() -> Result<Vec<PathBuf>> {
    let dir = image_dir();
    let mut images: Vec<PathBuf> = fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}: run `make image`", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".oci.tar"))
        .collect();
    images.sort();
    if !images.iter().any(|p| p.ends_with("pause.oci.tar")) {
        return Err(format!("{}/pause.oci.tar is missing: run `make image`", dir.display()));
    }
    Ok(images)
}
