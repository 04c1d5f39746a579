//! The two binaries of the `hpcc-hook` package: the OCI hook (`hpcc-hook`)
//! and the command line (`hpcc`). Both only speak their protocol; every
//! decision comes from `hpcc-common`.

pub mod cli;
pub mod hook;
pub mod image_cmd;
