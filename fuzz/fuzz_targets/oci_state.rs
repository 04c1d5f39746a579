//! What a runtime hands the hook: the OCI state on stdin and the bundle's
//! `config.json` (both carry the image's annotations and environment).
//! Input: the state, a NUL byte, the config. Properties: never a panic,
//! bounded; a state and config that parse make a launch context whose
//! image facts can be read.

#![no_main]

use hpcc_common::launch;
use hpcc_common::oci::{read_config, read_state, LaunchContext};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (state, config) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let state = read_state(state);
    let config = read_config(config, "config.json");
    if let (Ok(state), Ok(config)) = (state, config) {
        let ctx = LaunchContext::new(&state, &config);
        let _ = launch::image_spec(&ctx);
        let _ = ctx.env("NVIDIA_VISIBLE_DEVICES");
    }
});
