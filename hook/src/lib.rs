//! `hpcc-hook`, the OCI hook: it only speaks its protocol; every decision
//! comes from `hpcc-common`. The `hpcc` command line is the `hpcc-cli`
//! crate.

pub mod cdi;
pub mod hook;
