//! The policy file (`/etc/hpcc/hook.toml`): TOML parsing and validation.
//! The admin writes it, but a broken one must fail closed with a message,
//! never panic, and what parses must print and parse again to the same
//! policy (`hpcc policy show`).

#![no_main]

use hpcc_config::Policy;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/etc/hpcc/hook.toml");
    match Policy::parse(text, path) {
        Ok(p) => {
            let shown = toml::to_string_pretty(&p).expect("a valid policy prints");
            let again = Policy::parse(&shown, path).expect("a printed policy parses");
            assert_eq!(again, p, "round trip changed the policy:\n{shown}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
