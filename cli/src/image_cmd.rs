//! The image-side commands (`check IMAGE`, `annotate IMAGE`, `match
//! IMAGE`, `select IMAGE`) live in the image crate,
//! [`hpcc_image::commands`], so the Python bindings call the same
//! functions and print the same JSON; this is their old path.

pub use hpcc_image::commands::*;
