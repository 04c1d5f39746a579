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

    /// Pushes a blob to `repo` with the distribution API (POST, then PUT
    /// with its digest), as oras would; returns its descriptor fields.
    fn push_blob(&self, repo: &str, bytes: &[u8]) -> (String, usize) {
        let d = format!("sha256:{}", sha(bytes));
        let f = self.dir.join(format!("blob-{}", &d[7..19]));
        std::fs::write(&f, bytes).unwrap();
        let script = self.dir.join("push-blob.sh");
        std::fs::write(
            &script,
            format!(
                r#"set -eu
base=https://{ADDR}
loc=$(curl -sS --fail --cacert ca.crt -u {USER}:{PASS} -D - -o /dev/null -X POST \
      "$base/v2/$1/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:" {{print $2}}')
case $loc in http*) ;; *) loc=$base$loc ;; esac
case $loc in *\?*) sep='&' ;; *) sep='?' ;; esac
curl -sS --fail --cacert ca.crt -u {USER}:{PASS} -X PUT \
     -H 'Content-Type: application/octet-stream' --data-binary "@$2" "$loc${{sep}}digest=$3"
"#
            ),
        )
        .unwrap();
        sh(self
            .netns(&["timeout", "30", "sh"])
            .arg(&script)
            .arg(repo)
            .arg(&f)
            .arg(&d)
            .current_dir(&self.dir));
        (d, bytes.len())
    }

    /// Puts a manifest (or index) under `reference` (a tag or its digest).
    fn push_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) {
        let f = self.dir.join(format!("manifest-{}", &sha(bytes)[..12]));
        std::fs::write(&f, bytes).unwrap();
        sh(self
            .netns(&[
                "timeout", "30", "curl", "-sS", "--fail", "--cacert", "ca.crt", "-X", "PUT",
            ])
            .arg(format!("-u{USER}:{PASS}"))
            .arg(format!("-HContent-Type: {media_type}"))
            .arg("--data-binary")
            .arg(format!("@{}", f.display()))
            .arg(format!("https://{ADDR}/v2/{repo}/manifests/{reference}"))
            .current_dir(&self.dir));
    }

    /// Attaches an NFD image compatibility spec to the manifest `subject`
    /// of `repo` the way a client does on a registry without the referrers
    /// API (distribution 2.8): the artifact (`subject` set) by digest, and
    /// the index of referrers under the tag `sha256-<hex>`.
    fn attach_nfd(&self, repo: &str, subject: &Value, spec: &str) -> String {
        let (cd, cs) = self.push_blob(repo, b"{}");
        let (ld, ls) = self.push_blob(repo, spec.as_bytes());
        let art = json!({"schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": NFD_TYPE,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": cd, "size": cs},
            "layers": [{"mediaType": "application/vnd.nfd.image-compatibility.spec.v1alpha1+yaml",
                        "digest": ld, "size": ls}],
            "subject": {"mediaType": subject["mediaType"], "digest": subject["digest"],
                        "size": subject["size"]}})
        .to_string();
        let ad = format!("sha256:{}", sha(art.as_bytes()));
        let mt = "application/vnd.oci.image.manifest.v1+json";
        self.push_manifest(repo, &ad, mt, art.as_bytes());
        let referrers = json!({"schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": mt, "digest": ad, "size": art.len(),
                           "artifactType": NFD_TYPE}]})
        .to_string();
        let tag = subject["digest"].as_str().unwrap().replace(':', "-");
        self.push_manifest(
            repo,
            &tag,
            "application/vnd.oci.image.index.v1+json",
            referrers.as_bytes(),
        );
        ad
    }
}

const NFD_TYPE: &str = "application/vnd.nfd.image-compatibility.v1alpha1";

/// An NFD spec no node satisfies (a CPU flag that does not exist).
const NFD_IMPOSSIBLE: &str = "version: v1alpha1
compatibilities:
- description: needs a CPU flag no CPU has
  rules:
  - name: impossible
    matchFeatures:
    - feature: cpu.cpuid
      matchExpressions:
        HPCCNOSUCHFLAG: {op: Exists}
";

/// Tiny base64 (the test crate has no base64 dependency).
mod base64_lite {
    pub fn encode(s: &str) -> String {
        encode_bytes(s.as_bytes())
    }

    pub fn encode_bytes(b: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
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

    // An NFD spec attached (a referrer, through the tag schema since 2.8
    // has no referrers API) to the x86_64_v4 variant, in its own
    // repository: read from the registry and scored. A cascadelake node
    // (which gets the v4 build of hpc/app above) now gets the v2 one.
    rig.push(&format!("oci:{}:multi", layout.display()), "hpc/nfd:multi");
    let art = rig.attach_nfd("hpc/nfd", &entries[1], NFD_IMPOSSIBLE);
    let short = |i: usize| entries[i]["digest"].as_str().unwrap()[..19].to_owned();
    let cascade = fingerprint_of(&rig.dir, "cascadelake", "GenuineIntel");
    let (code, out, err, _) = rig.hpcc(&[
        "select",
        "--why",
        "--authfile",
        &auth,
        "--fingerprint",
        cascade.to_str().unwrap(),
        &format!("docker://{ADDR}/hpc/nfd:multi"),
    ]);
    assert!(code == 0 || code == 1, "select with NFD ({code}): {err}");
    assert_eq!(
        out.trim(),
        format!("{ADDR}/hpc/nfd@{}", entries[0]["digest"].as_str().unwrap()),
        "{err}"
    );
    let line = err
        .lines()
        .find(|l| l.contains(&short(1)))
        .unwrap_or_else(|| panic!("no --why line for the v4 variant: {err}"));
    assert!(line.contains("red"), "{line}");
    let v4 = |repo: &str| {
        format!(
            "docker://{ADDR}/{repo}@{}",
            entries[1]["digest"].as_str().unwrap()
        )
    };
    let (code, out, err, _) = rig.hpcc(&[
        "match",
        "--authfile",
        &auth,
        "--fingerprint",
        cascade.to_str().unwrap(),
        &v4("hpc/nfd"),
    ]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains("nfd spec: NFD spec sha256:"), "{out}");
    // The same manifest without the referrer (hpc/app) is green there.
    let (code, out, err, _) = rig.hpcc(&[
        "match",
        "--authfile",
        &auth,
        "--fingerprint",
        cascade.to_str().unwrap(),
        &v4("hpc/app"),
    ]);
    assert!(code <= 1 && !out.contains("nfd spec"), "{code} {out}{err}");
    let log = rig.log();
    assert!(
        log.contains(&format!("/v2/hpc/nfd/manifests/{art}")),
        "the artifact was not read: {log}"
    );

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
    assert!(err.contains(ADDR) && err.contains("401"), "{err}");
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
    // annotate reads layers: refused without --pull-layers, and with it
    // the layers are fetched (the log shows the layer blob) and scanned.
    let v2 = format!("docker://{ADDR}/hpc/app:v2");
    let (code, _, err, _) = rig.hpcc(&["annotate", "--authfile", &auth, &v2]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("--pull-layers"), "{err}");
    let layer_get = format!("\"GET /v2/hpc/app/blobs/{layer}");
    assert!(!rig.log().contains(&layer_get));
    let (code, out, err, _) = rig.hpcc(&[
        "annotate",
        "--pull-layers",
        "--format",
        "json",
        "--authfile",
        &auth,
        &v2,
    ]);
    assert_eq!(code, 0, "annotate --pull-layers: {err}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["image"], json!(v2), "{out}");
    assert_eq!(v["stats"]["layers"], json!(1), "{out}");
    assert!(v["stats"]["entries"].as_u64() > Some(0), "{out}");
    assert!(
        rig.log().contains(&layer_get),
        "no layer GET with --pull-layers"
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

    // A registry that answers 2 GiB: once with no length (an endless
    // stream), once announcing it. hpcc stops at its 4 MiB bound, quickly,
    // without buffering it (peak RSS measured by GNU time).
    std::fs::write(rig.dir.join("hostile.py"), HOSTILE_PY).unwrap();
    rig.others.push(
        rig.netns(&["timeout", "120", "python3"])
            .arg(rig.dir.join("hostile.py"))
            .arg(rig.dir.join("server.crt"))
            .arg(rig.dir.join("server.key"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(&rig, 5002);
    for repo in ["hostile/endless", "hostile/announced"] {
        let t0 = Instant::now();
        let out = rig
            .netns(&["timeout", "60", "/usr/bin/time", "-f", "maxrss_kib=%M"])
            .arg(bin("hpcc"))
            .args(["match", "--ca-file"])
            .arg(rig.dir.join("ca.crt"))
            .arg(format!("docker://127.0.0.1:5002/{repo}:x"))
            .env("HPCC_CONFIG", rig.dir.join("no-policy.toml"))
            .output()
            .unwrap();
        let t = t0.elapsed();
        let err = String::from_utf8_lossy(&out.stderr);
        // GNU time exits with the command's status.
        assert_eq!(out.status.code(), Some(3), "{repo}: {err}");
        assert!(
            err.contains("127.0.0.1:5002") && err.contains("larger than 4194304 bytes"),
            "{repo}: {err}"
        );
        assert!(t < Duration::from_secs(15), "{repo}: took {t:?}");
        let rss: u64 = err
            .lines()
            .find_map(|l| l.strip_prefix("maxrss_kib="))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no maxrss: {err}"));
        assert!(rss < 128 * 1024, "{repo}: peak RSS {rss} KiB");
        eprintln!(
            "{repo}: refused in {t:?}, peak RSS {rss} KiB: {}",
            err.lines().next().unwrap_or("")
        );
    }

    // Bearer-token auth (distribution's `auth: token`) whose token server
    // hands out a token that expired an hour ago.
    token_registry(&mut rig);
    let (code, _, err, t) = rig.hpcc(&[
        "match",
        "--authfile",
        &auth,
        "docker://127.0.0.1:5003/hpc/app:v2",
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("127.0.0.1:5003") && err.contains("401") && err.contains("expired"),
        "{err}"
    );
    eprintln!("expired token: {}", err.trim());
    assert!(t < Duration::from_secs(30));
}

/// Waits for a TCP port of the namespace to accept connections.
fn wait_port(rig: &Rig, port: u16) {
    let t0 = Instant::now();
    loop {
        let ok = rig
            .netns(&["timeout", "2", "sh", "-c"])
            .arg(format!("exec 3<>/dev/tcp/127.0.0.1/{port}"))
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        // sh may be dash (no /dev/tcp): fall back to python.
        let ok = ok
            || rig
                .netns(&["timeout", "2", "python3", "-c"])
                .arg(format!(
                    "import socket;socket.create_connection(('127.0.0.1',{port}),1)"
                ))
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        if ok {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "port {port} never opened"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A TLS endpoint that answers `/v2/` and then 2 GiB to any request:
/// `announced` repositories with a Content-Length, others endlessly.
const HOSTILE_PY: &str = r#"
import socket, ssl, sys, threading
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', 5002))
s.listen(16)
chunk = b'{' + b' ' * (1 << 20)
def serve(c):
    try:
        c = ctx.wrap_socket(c, server_side=True)
        while True:
            req = b''
            while b'\r\n\r\n' not in req:
                d = c.recv(4096)
                if not d:
                    return
                req += d
            path = req.split(b' ')[1]
            if path == b'/v2/':
                c.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n')
                continue
            head = b'HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n'
            if b'announced' in path:
                head += b'Content-Length: 2147483648\r\n\r\n'
            else:
                head += b'Connection: close\r\n\r\n'
            c.sendall(head)
            for _ in range(2048):
                c.sendall(chunk)
            return
    except Exception:
        pass
    finally:
        c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// Serves one fixed token to any request (the token server of a registry
/// with `auth: token`).
const TOKEN_PY: &str = r#"
import http.server, ssl, sys
tok = open(sys.argv[3]).read().strip()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b = ('{"token":"%s","access_token":"%s","expires_in":300}' % (tok, tok)).encode()
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass
srv = http.server.ThreadingHTTPServer(('127.0.0.1', 5004), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#;

fn b64url(b: &[u8]) -> String {
    base64_lite::encode_bytes(b)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

/// A second docker-registry on 127.0.0.1:5003 over the same storage, with
/// `auth: token` (realm: a token server on :5004, tokens verified against
/// the test CA, which signs them), and a token that expired an hour ago:
/// a JWT (RS256, `x5c` = the CA) signed here with openssl.
fn token_registry(rig: &mut Rig) {
    let d = rig.dir.display().to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let pem = std::fs::read_to_string(rig.dir.join("ca.crt")).unwrap();
    let der_b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let header = json!({"alg": "RS256", "typ": "JWT", "x5c": [der_b64]}).to_string();
    let claims = json!({"iss": "hpcc-test-issuer", "sub": USER, "aud": "hpcc-test",
        "exp": now - 3600, "nbf": now - 7200, "iat": now - 7200, "jti": "hpcc-1",
        "access": [{"type": "repository", "name": "hpc/app", "actions": ["pull"]}]})
    .to_string();
    let input = format!(
        "{}.{}",
        b64url(header.as_bytes()),
        b64url(claims.as_bytes())
    );
    std::fs::write(rig.dir.join("jwt.in"), &input).unwrap();
    sh(Command::new("timeout")
        .args(["30", "openssl", "dgst", "-sha256", "-sign"])
        .arg(rig.dir.join("ca.key"))
        .arg("-out")
        .arg(rig.dir.join("jwt.sig"))
        .arg(rig.dir.join("jwt.in")));
    let sig = std::fs::read(rig.dir.join("jwt.sig")).unwrap();
    std::fs::write(rig.dir.join("token"), format!("{input}.{}", b64url(&sig))).unwrap();
    std::fs::write(
        rig.dir.join("token.yml"),
        format!(
            "version: 0.1\nlog: {{level: info, formatter: text}}\nstorage:\n  filesystem: {{rootdirectory: {d}/data}}\n  maintenance: {{uploadpurging: {{enabled: false}}}}\nhttp:\n  addr: 127.0.0.1:5003\n  tls: {{certificate: {d}/server.crt, key: {d}/server.key}}\nauth:\n  token: {{realm: \"https://127.0.0.1:5004/token\", service: hpcc-test, issuer: hpcc-test-issuer, rootcertbundle: {d}/ca.crt}}\n"
        ),
    )
    .unwrap();
    std::fs::write(rig.dir.join("token.py"), TOKEN_PY).unwrap();
    let log = std::fs::File::create(rig.dir.join("token-registry.log")).unwrap();
    let reg = rig
        .netns(&["timeout", "120", "docker-registry", "serve"])
        .arg(rig.dir.join("token.yml"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("docker-registry starts");
    rig.others.push(reg);
    let srv = rig
        .netns(&["timeout", "120", "python3"])
        .arg(rig.dir.join("token.py"))
        .arg(rig.dir.join("server.crt"))
        .arg(rig.dir.join("server.key"))
        .arg(rig.dir.join("token"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    rig.others.push(srv);
    wait_port(rig, 5003);
    wait_port(rig, 5004);
}
