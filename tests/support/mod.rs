//! The end-to-end tests' shared parts are the `test-support` crate; this module adds what
//! only a test of this package can know: where Cargo built the operator binary.

pub use test_support::*;

/// The operator binary Cargo built for these tests.
pub const OPERATOR: &str = env!("CARGO_BIN_EXE_groupdocs-token-operator");
