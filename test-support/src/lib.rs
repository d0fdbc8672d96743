//! What the end-to-end tests (`tests/`) and the benchmark (`bench/`) share, by concern:
//!
//! - [`operator`]: the operator as a subprocess ([`Launch`], [`Operator`]) and its reconcile
//!   counter;
//! - [`env`]: one test's world ([`Env`]: namespace, token server, operator) on the test
//!   binary's control plane, and helm;
//! - [`kubeconfig`]: a ServiceAccount's kubeconfig, kube clients;
//! - [`kubectl`]: kubectl against the test binary's control plane;
//! - [`metrics`]: Prometheus text (samples, sums by name and label);
//! - [`objects`]: namespaces, client Secrets and credentials;
//! - [`process`]: a process's memory and CPU time;
//! - [`wait`]: polling with a deadline.
//!
//! The control plane itself, and starting and stopping processes, are [`testenv`]'s.

pub mod env;
pub mod kubeconfig;
pub mod kubectl;
pub mod metrics;
pub mod objects;
pub mod operator;
pub mod process;
pub mod wait;

pub use env::{Env, client, control_plane, helm, install_crd, service_account_kubeconfig};
pub use kubectl::{kubectl, kubectl_as, kubectl_ok, kubectl_with_input};
pub use operator::{
    Launch, Operator, reconciles, reconciles_in, reconciles_where, tail, wait_reconciles, wait_reconciles_where,
};
pub use wait::wait_for;
