//! The client: one `oci-client` on a current-thread runtime per command.
//! Manifests come from `pull_manifest_raw` (the crate checks the digest
//! against the reference and the `Docker-Content-Digest` header), blobs
//! from `pull_blob_stream`, read only up to the descriptor's size and
//! verified again here.

use super::{auth, RegistryError, RegistryOptions, RegistryRef};
use crate::layout::{media, Descriptor, Digest};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use std::future::Future;

/// Every manifest media type asked for: OCI and Docker v2.2, never schema 1.
const ACCEPTED: [&str; 4] = [
    media::INDEX,
    media::MANIFEST,
    media::DOCKER_LIST,
    media::DOCKER_MANIFEST,
];

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

/// A connection to one registry.
pub struct Session {
    rt: tokio::runtime::Runtime,
    client: Client,
    auth: RegistryAuth,
    registry: String,
    opts: RegistryOptions,
    max_bytes: u64,
}

impl Session {
    /// A client for `r`'s registry; answers over `max_bytes` are refused.
    pub fn new(r: &RegistryRef, max_bytes: u64) -> Result<Session, RegistryError> {
        let opts = r.options.clone();
        let registry = r.reference.resolve_registry().to_owned();
        let mut extra = Vec::new();
        if let Some(ca) = &opts.ca_file {
            let data =
                hpcc_common::io::read_file_bounded(ca, 1 << 20).map_err(|e| RegistryError::Ca {
                    path: ca.clone(),
                    reason: e.to_string(),
                })?;
            extra.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
        let config = ClientConfig {
            protocol: ClientProtocol::Https,
            accept_invalid_certificates: !opts.tls_verify,
            extra_root_certificates: extra,
            // An index is scored by hpcc, never resolved by the client.
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
            auth,
            registry,
            opts,
            max_bytes,
        })
    }

    fn answer(&self, what: &str, e: impl std::fmt::Display) -> RegistryError {
        RegistryError::Answer {
            registry: self.registry.clone(),
            what: what.to_owned(),
            reason: hpcc_common::text::escape(&shorten(&e.to_string())),
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

    /// Runs `fut` within the time bound.
    fn bounded<T>(&self, what: &str, fut: impl Future<Output = T>) -> Result<T, RegistryError> {
        self.rt
            .block_on(async { tokio::time::timeout(self.opts.timeout, fut).await })
            .map_err(|_| RegistryError::Timeout {
                registry: self.registry.clone(),
                what: what.to_owned(),
                secs: self.opts.timeout.as_secs(),
            })
    }

    /// The manifest or index `r` names (a tag or a digest).
    pub fn manifest(&self, r: &Reference) -> Result<RawManifest, RegistryError> {
        let what = format!("manifest {}", hpcc_common::text::escape(&r.whole()));
        let (bytes, digest) = self
            .bounded(
                &what,
                self.client.pull_manifest_raw(r, &self.auth, &ACCEPTED),
            )?
            .map_err(|e| self.failed(&what, &e))?;
        // The crate reads the whole body; a bigger one is refused here
        // (the time bound caps how much can arrive).
        if bytes.len() as u64 > self.max_bytes {
            return Err(RegistryError::TooLarge {
                registry: self.registry.clone(),
                what,
                limit: self.max_bytes,
            });
        }
        let digest = Digest::parse(&digest).map_err(|e| self.answer(&what, e))?;
        let d = Descriptor {
            media_type: String::new(),
            digest: digest.clone(),
            size: bytes.len() as u64,
            annotations: None,
            platform: None,
            artifact_type: None,
        };
        crate::layout::verify(&what, &d, &bytes).map_err(|e| self.answer(&what, e))?;
        let doc: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| self.answer(&what, e))?;
        let media_type = match doc.get("mediaType").and_then(|v| v.as_str()) {
            Some(t) => t.to_owned(),
            None if doc.get("manifests").is_some() => media::INDEX.to_owned(),
            None if doc.get("config").is_some() => media::MANIFEST.to_owned(),
            None => String::new(),
        };
        if !ACCEPTED.contains(&media_type.as_str()) {
            return Err(RegistryError::NotOci {
                registry: self.registry.clone(),
                what,
                media_type: format!("{:?}", hpcc_common::text::escape(&media_type)),
            });
        }
        Ok(RawManifest {
            bytes: bytes.to_vec(),
            digest,
            media_type,
        })
    }

    /// A small blob (an image config, an NFD spec) of `r`'s repository,
    /// read up to the descriptor's size and verified.
    pub fn blob(
        &self,
        r: &Reference,
        d: &Descriptor,
        what: &str,
    ) -> Result<Vec<u8>, RegistryError> {
        if d.size > self.max_bytes {
            return Err(RegistryError::TooLarge {
                registry: self.registry.clone(),
                what: what.to_owned(),
                limit: self.max_bytes,
            });
        }
        let layer = oci_client::manifest::OciDescriptor {
            media_type: d.media_type.clone(),
            digest: d.digest.to_string(),
            size: d.size as i64,
            ..Default::default()
        };
        let size = d.size as usize;
        let fut = async {
            use futures_util::StreamExt;
            let mut s = self.client.pull_blob_stream(r, &layer).await?.stream;
            let mut buf = Vec::with_capacity(size.min(1 << 20));
            while let Some(chunk) = s.next().await {
                let chunk = chunk?;
                if buf.len() + chunk.len() > size {
                    return Ok(None);
                }
                buf.extend_from_slice(&chunk);
            }
            Ok::<_, oci_client::errors::OciDistributionError>(Some(buf))
        };
        let buf = self
            .bounded(what, fut)?
            .map_err(|e| self.failed(what, &e))?
            .ok_or_else(|| {
                self.answer(
                    what,
                    format!("more than the {} bytes of its descriptor", d.size),
                )
            })?;
        crate::layout::verify(what, d, &buf).map_err(|e| self.answer(what, e))?;
        Ok(buf)
    }
}

/// A registry's error text, cut to what fits in a message line.
fn shorten(s: &str) -> String {
    const MAX: usize = 400;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}
