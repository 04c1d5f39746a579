//! The client, on a current-thread runtime, one per command.
//!
//! `oci-client` does the authentication (the `WWW-Authenticate` challenge
//! and the token request with the user's credentials). The reads of the
//! distribution API (manifests, referrers, blobs) go through one `reqwest`
//! client here, because `oci-client` reads a whole response body (a
//! manifest, an error answer) before its caller can bound it: a registry
//! that answers with 2 GiB would be buffered whole. Here a body is refused
//! at its bound as it arrives: `Content-Length` first, then the bytes
//! counted, and a blob is never read past its descriptor's size. Every
//! request is also bounded in time, and every body's digest is checked.

use super::{auth, RegistryError, RegistryOptions, RegistryRef};
use crate::layout::{media, Descriptor, Digest};
use base64::Engine;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use std::future::Future;
use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

/// Every manifest media type asked for: OCI and Docker v2.2, never schema 1.
const ACCEPTED: [&str; 4] = [
    media::INDEX,
    media::MANIFEST,
    media::DOCKER_LIST,
    media::DOCKER_MANIFEST,
];

/// Most bytes of an error answer read (its text goes in the message).
const MAX_ERROR_BYTES: u64 = 64 << 10;

/// A manifest or index as the registry sent it.
#[derive(Debug)]
pub struct RawManifest {
    /// Its bytes (digest verified).
    pub bytes: Vec<u8>,
    /// Its digest.
    pub digest: Digest,
    /// Its media type (from the document; OCI requires it in an index and
    /// a manifest pushed by skopeo, podman or docker carries it).
    pub media_type: String,
}

impl RawManifest {
    /// The descriptor of this manifest as fetched (no index entry named
    /// it: its own media type, digest and size, nothing else).
    pub fn descriptor(&self) -> crate::layout::Descriptor {
        crate::layout::Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.bytes.len() as u64,
            annotations: None,
            platform: None,
            artifact_type: None,
        }
    }
}

/// A connection to one repository of one registry.
pub struct Session {
    rt: tokio::runtime::Runtime,
    client: Client,
    http: reqwest::Client,
    auth: RegistryAuth,
    /// The reference the session was opened for (its repository).
    repo: Reference,
    /// `host[:port]`, for messages.
    registry: String,
    /// `https://host[:port]`.
    base: String,
    opts: RegistryOptions,
    max_bytes: u64,
    /// The `Authorization` header, once known (`None`: anonymous).
    authorization: OnceLock<Option<String>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("registry", &self.registry)
            .field("repository", &self.repo.repository())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A client for `r`'s registry; answers over `max_bytes` are refused.
    pub fn new(r: &RegistryRef, max_bytes: u64) -> Result<Session, RegistryError> {
        let opts = r.options.clone();
        let registry = r.reference.registry().to_owned();
        let mut extra = Vec::new();
        let mut http = reqwest::Client::builder()
            .danger_accept_invalid_certs(!opts.tls_verify)
            .connect_timeout(opts.timeout)
            .read_timeout(opts.timeout)
            .user_agent(concat!("hpcc/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &opts.ca_file {
            let ca_err = |reason: String| RegistryError::Ca {
                path: ca.clone(),
                reason,
            };
            let data = hpcc_common::io::read_file_bounded(ca, 1 << 20)
                .map_err(|e| ca_err(e.to_string()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&data)
                .map_err(|e| ca_err(format!("not PEM certificates: {e}")))?;
            if certs.is_empty() {
                return Err(ca_err("no PEM certificate in it".into()));
            }
            http = http.tls_certs_merge(certs);
            extra.push(oci_client::client::Certificate {
                encoding: oci_client::client::CertificateEncoding::Pem,
                data,
            });
        }
        let http = http.build().map_err(|e| RegistryError::Answer {
            registry: registry.clone(),
            what: "client".into(),
            reason: e.to_string(),
        })?;
        let config = ClientConfig {
            protocol: ClientProtocol::Https,
            accept_invalid_certificates: !opts.tls_verify,
            extra_root_certificates: extra,
            platform_resolver: None,
            connect_timeout: Some(opts.timeout),
            read_timeout: Some(opts.timeout),
            ..Default::default()
        };
        let files = auth::auth_files(opts.auth_file.as_deref());
        let auth = auth::lookup(r.reference.registry(), &files)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Session {
            rt,
            client: Client::new(config),
            http,
            auth,
            base: format!("https://{}", r.reference.resolve_registry()),
            repo: r.reference.clone(),
            registry,
            opts,
            max_bytes,
            authorization: OnceLock::new(),
        })
    }

    /// The registry, `host[:port]`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The manifest `digest` of the session's repository.
    pub fn reference_at(&self, digest: &Digest) -> Reference {
        Reference::with_digest(
            self.repo.registry().to_owned(),
            self.repo.repository().to_owned(),
            digest.to_string(),
        )
    }

    fn answer(&self, what: &str, e: impl std::fmt::Display) -> RegistryError {
        RegistryError::Answer {
            registry: self.registry.clone(),
            what: what.to_owned(),
            reason: hpcc_common::text::escape(&shorten(&e.to_string())),
        }
    }

    fn too_large(&self, what: &str, limit: u64) -> RegistryError {
        RegistryError::TooLarge {
            registry: self.registry.clone(),
            what: what.to_owned(),
            limit,
        }
    }

    /// [`Self::answer`] with the causes (a TLS or connection failure is
    /// only named by them: "error sending request" alone says nothing).
    fn failed(&self, what: &str, e: &(dyn std::error::Error + 'static)) -> RegistryError {
        let mut text = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        self.answer(what, text)
    }

    /// Runs `fut` within `bound`.
    fn within<T>(
        &self,
        what: &str,
        bound: Duration,
        fut: impl Future<Output = T>,
    ) -> Result<T, RegistryError> {
        self.rt
            .block_on(async { tokio::time::timeout(bound, fut).await })
            .map_err(|_| RegistryError::Timeout {
                registry: self.registry.clone(),
                what: what.to_owned(),
                secs: bound.as_secs(),
            })
    }

    /// Runs `fut` within the time bound of one request.
    fn bounded<T>(&self, what: &str, fut: impl Future<Output = T>) -> Result<T, RegistryError> {
        self.within(what, self.opts.timeout, fut)
    }

    /// The `Authorization` header for pulls from the repository: a bearer
    /// token `oci-client` obtained (with the user's credentials when the
    /// registry asks for a token), else the user's basic credentials.
    fn authorization(&self) -> Result<Option<&str>, RegistryError> {
        if let Some(a) = self.authorization.get() {
            return Ok(a.as_deref());
        }
        let what = "authentication";
        let token = self
            .bounded(
                what,
                self.client
                    .auth(&self.repo, &self.auth, RegistryOperation::Pull),
            )?
            .map_err(|e| self.failed(what, &e))?;
        let header = match (token, &self.auth) {
            (Some(t), _) => Some(format!("Bearer {t}")),
            (None, RegistryAuth::Basic(u, p)) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )),
            _ => None,
        };
        Ok(self.authorization.get_or_init(|| header).as_deref())
    }

    /// `GET {base}/v2/{repository}/{path}`.
    async fn get(
        &self,
        path: &str,
        accept: &str,
        authz: Option<&str>,
        what: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let url = format!("{}/v2/{}/{path}", self.base, self.repo.repository());
        let mut req = self.http.get(&url);
        if !accept.is_empty() {
            req = req.header(reqwest::header::ACCEPT, accept);
        }
        if let Some(a) = authz {
            req = req.header(reqwest::header::AUTHORIZATION, a);
        }
        req.send().await.map_err(|e| self.failed(what, &e))
    }

    /// A response's body, refused as soon as it is over `limit` bytes.
    async fn body(
        &self,
        mut resp: reqwest::Response,
        limit: u64,
        what: &str,
    ) -> Result<Vec<u8>, RegistryError> {
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(self.too_large(what, limit));
        }
        let mut buf = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.failed(what, &e))? {
            if (buf.len() + chunk.len()) as u64 > limit {
                return Err(self.too_large(what, limit));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf)
    }

    /// What an error answer says: its status, the registry's error codes
    /// and messages (the distribution API's `errors` list), the token
    /// error of its challenge, and whether the token sent had expired.
    async fn refusal(
        &self,
        resp: reqwest::Response,
        authz: Option<&str>,
        what: &str,
    ) -> RegistryError {
        let status = resp.status();
        let challenge = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut reason = status.to_string();
        match self.body(resp, MAX_ERROR_BYTES, what).await {
            Ok(body) => {
                let said = registry_errors(&body);
                if !said.is_empty() {
                    reason.push_str(": ");
                    reason.push_str(&said);
                }
            }
            Err(_) => reason.push_str(&format!(" (answer over {MAX_ERROR_BYTES} bytes not read)")),
        }
        if status == reqwest::StatusCode::UNAUTHORIZED {
            if let Some(e) = challenge.as_deref().and_then(challenge_error) {
                reason.push_str(&format!(" ({e})"));
            }
            if let Some(exp) = authz.and_then(expired_token) {
                reason.push_str(&format!(
                    "; the bearer token expired {exp} s ago (its \"exp\")"
                ));
            }
        }
        self.answer(what, reason)
    }

    /// The manifest or index `r` names (a tag or a digest).
    pub fn manifest(&self, r: &Reference) -> Result<RawManifest, RegistryError> {
        let what = format!("manifest {}", hpcc_common::text::escape(&r.whole()));
        self.fetch_manifest(r, &what, false)?
            .ok_or_else(|| self.answer(&what, "404 Not Found"))
    }

    /// The manifest `r` names; `None` on 404 when `missing_ok`.
    fn fetch_manifest(
        &self,
        r: &Reference,
        what: &str,
        missing_ok: bool,
    ) -> Result<Option<RawManifest>, RegistryError> {
        let name = r.digest().or(r.tag()).unwrap_or("latest");
        let authz = self.authorization()?;
        let got = self.bounded(what, async {
            let resp = self
                .get(
                    &format!("manifests/{name}"),
                    &ACCEPTED.join(", "),
                    authz,
                    what,
                )
                .await?;
            if missing_ok && resp.status() == reqwest::StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !resp.status().is_success() {
                return Err(self.refusal(resp, authz, what).await);
            }
            let header = resp
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            Ok(Some((self.body(resp, self.max_bytes, what).await?, header)))
        })??;
        let Some((bytes, header)) = got else {
            return Ok(None);
        };
        // The digest asked for, else the one the registry announced, must
        // be the body's; without either, the body's own.
        let claimed = r.digest().map(str::to_owned).or(header);
        let digest = match claimed {
            Some(c) => {
                let d = Digest::parse(&c).map_err(|e| self.answer(what, e))?;
                check(&d, &bytes).map_err(|reason| self.answer(what, reason))?;
                d
            }
            None => Digest::parse(&format!("sha256:{}", sha256_hex(&bytes)))
                .map_err(|e| self.answer(what, e))?,
        };
        let doc: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| self.answer(what, e))?;
        let media_type = match doc.get("mediaType").and_then(|v| v.as_str()) {
            Some(t) => t.to_owned(),
            None if doc.get("manifests").is_some() => media::INDEX.to_owned(),
            None if doc.get("config").is_some() => media::MANIFEST.to_owned(),
            None => String::new(),
        };
        if !ACCEPTED.contains(&media_type.as_str()) {
            return Err(RegistryError::NotOci {
                registry: self.registry.clone(),
                what: what.to_owned(),
                media_type: format!("{:?}", hpcc_common::text::escape(&media_type)),
            });
        }
        Ok(Some(RawManifest {
            bytes,
            digest,
            media_type,
        }))
    }

    /// The descriptors of the manifests that refer to `subject` with
    /// `artifact_type`: OCI 1.1's referrers API, else (a 404: the
    /// registry has no such API, as distribution 2.8) the referrers tag
    /// schema, the index tagged `<alg>-<hex>` that clients push for such
    /// registries. At most 64 are kept.
    pub fn referrers(
        &self,
        subject: &Digest,
        artifact_type: &str,
    ) -> Result<Vec<Descriptor>, RegistryError> {
        let what = format!("referrers of {}", subject.short());
        let authz = self.authorization()?;
        let filter: String = artifact_type
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let native = self.bounded(&what, async {
            let resp = self
                .get(
                    &format!("referrers/{subject}?artifactType={filter}"),
                    media::INDEX,
                    authz,
                    &what,
                )
                .await?;
            if resp.status() == reqwest::StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !resp.status().is_success() {
                return Err(self.refusal(resp, authz, &what).await);
            }
            Ok(Some(self.body(resp, self.max_bytes, &what).await?))
        })??;
        let bytes = match native {
            Some(b) => b,
            None => {
                let tag = subject.to_string().replace(':', "-");
                let r = Reference::with_tag(
                    self.repo.registry().to_owned(),
                    self.repo.repository().to_owned(),
                    tag,
                );
                let what = format!("{what} (tag schema)");
                match self.fetch_manifest(&r, &what, true)? {
                    Some(m) if m.media_type == media::INDEX => m.bytes,
                    Some(m) => {
                        return Err(self.answer(
                            &what,
                            format!("media type {} is not an index", m.media_type),
                        ))
                    }
                    None => return Ok(vec![]),
                }
            }
        };
        let index: crate::layout::Index =
            serde_json::from_slice(&bytes).map_err(|e| self.answer(&what, e))?;
        Ok(index
            .manifests
            .into_iter()
            .filter(|d| d.artifact_type.as_deref() == Some(artifact_type))
            .take(64)
            .collect())
    }

    /// A small blob (an image config, an NFD spec), read up to the
    /// descriptor's size and verified.
    pub fn blob(&self, d: &Descriptor, what: &str) -> Result<Vec<u8>, RegistryError> {
        if d.size > self.max_bytes {
            return Err(self.too_large(what, self.max_bytes));
        }
        let authz = self.authorization()?;
        let buf = self.bounded(what, async {
            let resp = self
                .get(&format!("blobs/{}", d.digest), "", authz, what)
                .await?;
            if !resp.status().is_success() {
                return Err(self.refusal(resp, authz, what).await);
            }
            self.body(resp, d.size, what).await
        })??;
        crate::layout::verify(what, d, &buf).map_err(|e| self.answer(what, e))?;
        Ok(buf)
    }

    /// A layer, streamed into `out` up to its descriptor's size and
    /// verified as it goes. The time bound is the request bound plus one
    /// second per MiB.
    pub fn blob_to_file(
        &self,
        d: &Descriptor,
        out: &mut std::fs::File,
        what: &str,
    ) -> Result<(), RegistryError> {
        let authz = self.authorization()?;
        let bound = self.opts.timeout + Duration::from_secs(d.size >> 20);
        let got = self.within(what, bound, async {
            let mut resp = self
                .get(&format!("blobs/{}", d.digest), "", authz, what)
                .await?;
            if !resp.status().is_success() {
                return Err(self.refusal(resp, authz, what).await);
            }
            if resp.content_length().is_some_and(|n| n > d.size) {
                return Err(self.too_large(what, d.size));
            }
            let mut h = d.digest.hasher();
            let mut n = 0u64;
            while let Some(chunk) = resp.chunk().await.map_err(|e| self.failed(what, &e))? {
                n += chunk.len() as u64;
                if n > d.size {
                    return Err(self.too_large(what, d.size));
                }
                h.update(&chunk);
                out.write_all(&chunk)
                    .map_err(|e| self.answer(what, format!("cannot write it: {e}")))?;
            }
            Ok((n, h.finish_hex()))
        })??;
        let (n, hex) = got;
        if n != d.size || hex != d.digest.hex() {
            return Err(self.answer(
                what,
                format!(
                    "{n} bytes with digest {}:{hex}, the descriptor says {} bytes, {}",
                    d.digest.algorithm(),
                    d.size,
                    d.digest
                ),
            ));
        }
        Ok(())
    }
}

/// Whether `bytes` are what `d` names.
fn check(d: &Digest, bytes: &[u8]) -> Result<(), String> {
    let mut h = d.hasher();
    h.update(bytes);
    let hex = h.finish_hex();
    if hex == d.hex() {
        Ok(())
    } else {
        Err(format!(
            "the body's digest is {}:{hex}, not the {d} asked for or announced",
            d.algorithm()
        ))
    }
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// The `code: message` pairs of a distribution API error answer, else
/// the start of its text.
fn registry_errors(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Answer {
        errors: Vec<Error>,
    }
    #[derive(serde::Deserialize)]
    struct Error {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Answer>(body) {
        Ok(a) => a
            .errors
            .iter()
            .take(4)
            .map(|e| format!("{}: {}", e.code, e.message))
            .collect::<Vec<_>>()
            .join("; "),
        Err(_) => shorten(String::from_utf8_lossy(body).trim()),
    }
}

/// The `error` (and `error_description`) of a bearer challenge.
fn challenge_error(c: &str) -> Option<String> {
    let field = |name: &str| {
        let start = c.find(&format!("{name}=\""))? + name.len() + 2;
        let end = c[start..].find('"')?;
        Some(c[start..start + end].to_owned())
    };
    let e = field("error")?;
    Some(match field("error_description") {
        Some(d) => format!("{e}: {d}"),
        None => e,
    })
}

/// How many seconds ago a bearer token (a JWT) expired, if it did.
fn expired_token(authz: &str) -> Option<u64> {
    let token = authz.strip_prefix("Bearer ")?;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_u64()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    (exp < now).then(|| now - exp)
}

/// A registry's error text, cut to what fits in a message line.
fn shorten(s: &str) -> String {
    const MAX: usize = 400;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_are_summarised() {
        let body =
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        assert_eq!(registry_errors(body), "MANIFEST_UNKNOWN: manifest unknown");
        assert_eq!(
            registry_errors(b"404 page not found\n"),
            "404 page not found"
        );
        assert_eq!(
            challenge_error(r#"Bearer realm="https://a/token",service="r",error="invalid_token""#)
                .as_deref(),
            Some("invalid_token")
        );
        assert_eq!(challenge_error(r#"Basic realm="hpcc""#), None);
    }

    #[test]
    fn an_expired_jwt_is_named() {
        let enc = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let old = format!(
            "Bearer {}.{}.sig",
            enc(r#"{"alg":"RS256"}"#),
            enc(r#"{"exp":1000}"#)
        );
        assert!(expired_token(&old).is_some_and(|s| s > 1_000_000));
        let new = format!(
            "Bearer {}.{}.sig",
            enc(r#"{"alg":"RS256"}"#),
            enc(r#"{"exp":99999999999}"#)
        );
        assert_eq!(expired_token(&new), None);
        assert_eq!(expired_token("Basic eDp5"), None);
    }

    #[test]
    fn a_body_is_checked_against_its_digest() {
        let d = Digest::parse(&format!("sha256:{}", sha256_hex(b"abc"))).unwrap();
        assert!(check(&d, b"abc").is_ok());
        assert!(check(&d, b"abd").unwrap_err().contains("not the sha256:"));
    }
}
