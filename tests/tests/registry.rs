//! hpcc against a real registry: Debian's `docker-registry` (distribution
//! 2.8) on 127.0.0.1 inside a network namespace made here, with htpasswd
//! (bcrypt) auth and TLS from a test CA (given to hpcc with `--ca-file`).
//! Images and a multi-variant index are pushed with skopeo; `hpcc select`
//! must pick the right digest for this node and for saved fingerprints of
//! other nodes, the registry's access log must show no layer blob fetched,
//! and each failure (wrong password, unknown tag, untrusted certificate, a
//! registry that never answers) must give a clear error within its bound.
//! Every child runs under `timeout`; the namespace is removed on drop.

use hpcc_e2e::{bin, node_cpu, require, require_root, scratch};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const ADDR: &str = "127.0.0.1:5000";
const USER: &str = "alice";
const PASS: &str = "s3cret-pw";

/// The namespace and the registry in it; both go away on drop, even when
/// an assertion failed.
struct Rig {
    ns: String,
    dir: PathBuf,
    registry: Option<Child>,
    others: Vec<Child>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        for c in self.registry.iter_mut().chain(self.others.iter_mut()) {
            // SIGTERM, not kill(): the child is `timeout`, which forwards
            // SIGTERM to what it runs but dies alone on SIGKILL.
            // SAFETY: kill(2) on a child we spawned and have not reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

fn sh(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Rig {
    fn start() -> Rig {
        require_root();
        for t in [
            "ip",
            "timeout",
            "openssl",
            "htpasswd",
            "docker-registry",
            "skopeo",
            "python3",
        ] {
            require(t);
        }
        let dir = scratch("registry");
        let ns = format!("hpcc-reg-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &ns])
            .stderr(Stdio::null())
            .status();
        sh(Command::new("ip").args(["netns", "add", &ns]));
        let mut rig = Rig {
            ns,
            dir: dir.clone(),
            registry: None,
            others: vec![],
        };
        sh(Command::new("ip").args(["-n", &rig.ns, "link", "set", "lo", "up"]));
        let d = dir.display();
        sh(Command::new("timeout").args(["60", "sh", "-ec", &format!(
            "cd {d}
             openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=hpcc-test-ca -keyout ca.key -out ca.crt 2>/dev/null
             openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr 2>/dev/null
             printf 'subjectAltName=IP:127.0.0.1\\n' > ext
             openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile ext -out server.crt 2>/dev/null
             mkdir -p certs && cp ca.crt certs/ca.crt
             htpasswd -Bbn {USER} {PASS} > htpasswd"
        )]));
        std::fs::write(
            dir.join("config.yml"),
            format!(
                "version: 0.1\nlog: {{level: info, formatter: text}}\nstorage:\n  filesystem: {{rootdirectory: {d}/data}}\nhttp:\n  addr: {ADDR}\n  tls: {{certificate: {d}/server.crt, key: {d}/server.key}}\nauth:\n  htpasswd: {{realm: hpcc, path: {d}/htpasswd}}\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        rig.registry = Some(
            rig.netns(&["timeout", "600", "docker-registry", "serve"])
                .arg(dir.join("config.yml"))
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("docker-registry starts"),
        );
        let t0 = Instant::now();
        while !rig.log().contains("listening on") {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "docker-registry did not start: {}",
                rig.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let auth = |p: &str| {
            use base64_lite::encode;
            json!({"auths": {ADDR: {"auth": encode(&format!("{USER}:{p}"))}}}).to_string()
        };
        std::fs::write(dir.join("auth.json"), auth(PASS)).unwrap();
        std::fs::write(dir.join("wrong.json"), auth("not-the-password")).unwrap();
        rig
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// A command run inside the namespace.
    fn netns(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).args(argv);
        c
    }

    fn push(&self, src: &str, dest: &str) {
        sh(self
            .netns(&[
                "timeout",
                "120",
                "skopeo",
                "copy",
                "--all",
                "--preserve-digests",
            ])
            .arg(format!("--dest-creds={USER}:{PASS}"))
            .arg(format!(
                "--dest-cert-dir={}",
                self.dir.join("certs").display()
            ))
            .arg(src)
            .arg(format!("docker://{ADDR}/{dest}")));
    }

    /// `hpcc ARGS` in the namespace, with the test CA and credentials.
    fn hpcc(&self, args: &[&str]) -> (i32, String, String, Duration) {
        let t0 = Instant::now();
        let out = self
            .netns(&["timeout", "60"])
            .arg(bin("hpcc"))
            .args(args)
            .arg("--ca-file")
            .arg(self.dir.join("ca.crt"))
            .env("HPCC_CONFIG", self.dir.join("no-policy.toml"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            t0.elapsed(),
        )
    }

    fn authfile(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

/// Tiny base64 (the test crate has no base64 dependency).
mod base64_lite {
    pub fn encode(s: &str) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let b = s.as_bytes();
        let mut out = String::new();
        for c in b.chunks(3) {
            let n = (c[0] as u32) << 16
                | (*c.get(1).unwrap_or(&0) as u32) << 8
                | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                if i <= c.len() {
                    out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn put_blob(layout: &Path, bytes: &[u8]) -> (String, usize) {
    let h = sha(bytes);
    std::fs::write(layout.join("blobs/sha256").join(&h), bytes).unwrap();
    (format!("sha256:{h}"), bytes.len())
}

/// One variant: (platform, config labels). Returns its index entry.
fn variant(layout: &Path, layer: &Value, platform: Value, labels: Value) -> Value {
    let arch = platform["architecture"].clone();
    let config = json!({"architecture": arch, "os": "linux",
        "config": {"Labels": labels},
        "rootfs": {"type": "layers", "diff_ids": []}});
    let (cd, cs) = put_blob(layout, config.to_string().as_bytes());
    let manifest = json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [layer]});
    let (md, ms) = put_blob(layout, manifest.to_string().as_bytes());
    json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": md, "size": ms, "platform": platform})
}

/// An OCI layout whose tag `multi` is an index of x86_64_v2, x86_64_v4,
/// a64fx (labels) and zen3 (a platform feature only), with the busybox
/// layer of the fixtures; returns (layout, layer digest, entries).
fn build_layout(dir: &Path) -> (PathBuf, String, Vec<Value>) {
    let fixtures = hpcc_e2e::work_dir().join("oci");
    let src_index: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("index.json")).unwrap())
            .unwrap();
    let first = &src_index["manifests"][0]["digest"];
    let m: Value = serde_json::from_slice(
        &std::fs::read(
            fixtures
                .join("blobs/sha256")
                .join(first.as_str().unwrap().trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let layer = m["layers"][0].clone();
    let layout = dir.join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let ld = layer["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    std::fs::copy(
        fixtures.join("blobs/sha256").join(&ld),
        layout.join("blobs/sha256").join(&ld),
    )
    .unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let cpu = "org.supercontainers.hardware.cpu.optimized.version";
    let entries = vec![
        variant(
            &layout,
            &layer,
            json!({"architecture": "amd64", "os": "linux"}),
            json!({cpu: "x86_64_v2"}),
        ),
        variant(
            &layout,
            &layer,
            json!({"architecture": "amd64", "os": "linux", "variant": "v4"}),
            json!({}),
        ),
        variant(
            &layout,
            &layer,
            json!({"architecture": "arm64", "os": "linux", "variant": "v8"}),
            json!({cpu: "a64fx"}),
        ),
        variant(
            &layout,
            &layer,
            json!({"architecture": "amd64", "os": "linux", "features": ["cpu:zen3"]}),
            json!({}),
        ),
    ];
    let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries});
    let (idd, ids) = put_blob(&layout, index.to_string().as_bytes());
    let top = json!({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": idd, "size": ids,
         "annotations": {"org.opencontainers.image.ref.name": "multi"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json",
         "digest": entries[0]["digest"], "size": entries[0]["size"],
         "annotations": {"org.opencontainers.image.ref.name": "v2"}}]});
    std::fs::write(layout.join("index.json"), top.to_string()).unwrap();
    (layout, format!("sha256:{ld}"), entries)
}

/// A saved fingerprint of another node: this node's, with the CPU of
/// archspec's `target` (its features as flags).
fn fingerprint_of(dir: &Path, target: &str, vendor: &str) -> PathBuf {
    let out = sh(Command::new("timeout")
        .arg("60")
        .arg(bin("hpcc"))
        .args(["fingerprint", "--json"]));
    let mut fp: Value = serde_json::from_slice(&out.stdout).unwrap();
    let known = archspec::cpu::Microarchitecture::known_targets();
    let t = known.get(target).expect("archspec knows the target");
    let mut flags: Vec<String> = t.all_features().into_iter().collect();
    flags.sort();
    fp["cpu"]["platform"] = json!(t.family().name());
    fp["cpu"]["microarchitecture"] = json!(target);
    fp["cpu"]["vendor"] = json!(vendor);
    fp["cpu"]["flags"] = json!(flags);
    let p = dir.join(format!("{target}.json"));
    std::fs::write(&p, fp.to_string()).unwrap();
    p
}

/// Which variant this node should get, from its own CPU (never assumed).
fn expected_here(entries: &[Value]) -> Option<String> {
    let d = |i: usize| entries[i]["digest"].as_str().unwrap().to_owned();
    if node_cpu::can_run("zen3") {
        Some(d(3))
    } else if node_cpu::can_run("x86_64_v4") {
        Some(d(1))
    } else if node_cpu::can_run("x86_64_v2") {
        Some(d(0))
    } else if node_cpu::can_run("a64fx") {
        Some(d(2))
    } else {
        None
    }
}

#[test]
fn select_match_and_errors_against_a_real_registry() {
    let rig = Rig::start();
    std::fs::write(rig.dir.join("no-policy.toml"), "").unwrap();
    let (layout, layer, entries) = build_layout(&rig.dir);
    rig.push(&format!("oci:{}:multi", layout.display()), "hpc/app:multi");
    rig.push(&format!("oci:{}:v2", layout.display()), "hpc/app:v2");
    let auth = rig.authfile("auth.json");
    let image = format!("docker://{ADDR}/hpc/app:multi");
    let pull = |i: usize| format!("{ADDR}/hpc/app@{}", entries[i]["digest"].as_str().unwrap());

    // This node.
    let (code, out, err, _) = rig.hpcc(&["select", "--why", "--authfile", &auth, &image]);
    match expected_here(&entries) {
        Some(d) => {
            assert!(code == 0 || code == 1, "select failed ({code}): {err}");
            assert_eq!(out.trim(), format!("{ADDR}/hpc/app@{d}"), "{err}");
        }
        None => assert_eq!(code, 2, "{out}{err}"),
    }
    assert_eq!(
        err.lines().filter(|l| l.contains("sha256:")).count(),
        4,
        "--why: {err}"
    );

    // Saved fingerprints of other nodes.
    for (target, vendor, want) in [
        ("zen3", "AuthenticAMD", 3),
        ("skylake", "GenuineIntel", 0),
        ("cascadelake", "GenuineIntel", 1),
        ("a64fx", "Fujitsu", 2),
    ] {
        let fp = fingerprint_of(&rig.dir, target, vendor);
        let (code, out, err, _) = rig.hpcc(&[
            "select",
            "--why",
            "--authfile",
            &auth,
            "--fingerprint",
            fp.to_str().unwrap(),
            &image,
        ]);
        assert!(
            code == 0 || code == 1,
            "{target}: select failed ({code}): {err}"
        );
        assert_eq!(out.trim(), pull(want), "{target}: {err}");
    }

    // The same choice from the OCI layout, with no network.
    let fp = fingerprint_of(&rig.dir, "zen3", "AuthenticAMD");
    let (code, out, err, _) = rig.hpcc(&[
        "select",
        "--fingerprint",
        fp.to_str().unwrap(),
        &format!("{}:multi", layout.display()),
    ]);
    assert!(code == 0 || code == 1, "{err}");
    assert!(
        out.trim().ends_with(entries[3]["digest"].as_str().unwrap()),
        "{out}{err}"
    );

    // hpcc match and check on a plain tag.
    let (code, out, err, _) = rig.hpcc(&[
        "match",
        "--authfile",
        &auth,
        &format!("docker://{ADDR}/hpc/app:v2"),
    ]);
    assert!(code <= 2 && out.contains("x86_64_v2"), "{code} {out}{err}");
    let (code, _, err, _) = rig.hpcc(&[
        "check",
        "--authfile",
        &auth,
        &format!("docker://{ADDR}/hpc/app:v2"),
    ]);
    assert!(code != 3, "check: {err}");

    // No layer blob was ever asked for; configs were (so the log is read).
    let log = rig.log();
    let gets: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"GET /v2/hpc/app/blobs/"))
        .collect();
    assert!(!gets.is_empty(), "no blob GET in the registry log: {log}");
    assert!(
        !gets.iter().any(|l| l.contains(&layer)),
        "a layer was fetched: {gets:#?}"
    );

    // Failures, each named and bounded.
    let (code, _, err, t) = rig.hpcc(&["match", "--authfile", &rig.authfile("wrong.json"), &image]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(ADDR) && err.contains("Not authorized"),
        "{err}"
    );
    assert!(t < Duration::from_secs(30));
    let (code, _, err, _) = rig.hpcc(&[
        "match",
        "--authfile",
        &auth,
        &format!("docker://{ADDR}/hpc/app:nope"),
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(ADDR) && err.contains("manifest unknown"),
        "{err}"
    );
    let out = rig
        .netns(&["timeout", "60"])
        .arg(bin("hpcc"))
        .args(["match", "--authfile", &auth, &image])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("certificate verify failed"),
        "untrusted CA: {err}"
    );

    // A registry that accepts the connection and never answers.
    let mut rig = rig;
    rig.others.push(
        rig.netns(&["timeout", "60", "python3", "-c",
            "import socket,time\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('127.0.0.1',5001));s.listen(8)\nc=[]\nwhile True: c.append(s.accept())"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let (code, _, err, t) = rig.hpcc(&[
        "match",
        "--registry-timeout",
        "3",
        "--authfile",
        &auth,
        "docker://127.0.0.1:5001/hpc/app:multi",
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("127.0.0.1:5001"), "{err}");
    assert!(t < Duration::from_secs(15), "took {t:?}: {err}");
}
