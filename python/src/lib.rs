//! `hpcc` for Python: the node fingerprint and the matcher as plain dicts,
//! the very documents `hpcc ... --json` prints (docs/schema/, one schema
//! for both), built by the same functions ([`hpcc_common::schema`],
//! [`hpcc_image::commands`]) and handed to Python through its own `json`
//! module, so a dict is exactly what a script would have parsed from the
//! command line.
//!
//! Errors are exceptions under `hpcc.HpccError` carrying the CLI's message:
//! `hpcc.PolicyError` (the policy file), `hpcc.ImageError` (an image that
//! cannot be read), `hpcc.InputError` (an argument: a fingerprint or
//! annotations that are not what they should be).
//!
//! Built by maturin (python/pyproject.toml), which sets
//! `PYO3_BUILD_EXTENSION_MODULE` so the module does not link libpython;
//! in the cargo workspace it builds as an ordinary library (clippy,
//! `cargo build`), linked against the interpreter's libpython.

use hpcc_common::fingerprint::NodeFingerprint;
use hpcc_common::oci::LaunchContext;
use hpcc_common::plan::UserRequest;
use hpcc_common::schema::{self, Kind};
use hpcc_config::Policy;
use hpcc_image::commands::{self, ImageCmdError, MatchOptions};
use hpcc_image::layout::ImageRef;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::collections::BTreeMap;
use std::path::PathBuf;

create_exception!(
    hpcc,
    HpccError,
    PyException,
    "Any hpcc error; the message is the one `hpcc` prints."
);
create_exception!(
    hpcc,
    PolicyError,
    HpccError,
    "The policy file (hook.toml) cannot be read or is invalid."
);
create_exception!(
    hpcc,
    ImageError,
    HpccError,
    "The image cannot be read (reference, layout, registry, digests)."
);
create_exception!(
    hpcc,
    InputError,
    HpccError,
    "An argument is not what it should be (a fingerprint, annotations)."
);

/// The exception of an image command's error, with its message.
fn py_err(e: ImageCmdError) -> PyErr {
    let msg = e.to_string();
    match e {
        ImageCmdError::Policy(_) | ImageCmdError::Collection(_) => PolicyError::new_err(msg),
        ImageCmdError::Image(_) => ImageError::new_err(msg),
        ImageCmdError::Fingerprint { .. } | ImageCmdError::Read { .. } => InputError::new_err(msg),
        ImageCmdError::Launch(_) | ImageCmdError::Json(_) => HpccError::new_err(msg),
    }
}

/// A JSON document's text as the dict Python's `json.loads` makes of it.
fn to_py<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.call_method1("loads", (text,))
}

/// `text` of a `serde_json` result, or the error as an `HpccError`.
fn doc(r: Result<String, serde_json::Error>) -> PyResult<String> {
    r.map_err(|e| HpccError::new_err(format!("cannot write JSON: {e}")))
}

/// The policy: `policy` (a path), else `$HPCC_CONFIG`, else
/// /etc/hpcc/hook.toml, as `hpcc --config` reads it.
fn load_policy(policy: &Option<PathBuf>) -> PyResult<Policy> {
    commands::load_policy(&MatchOptions {
        policy: policy.clone(),
        ..Default::default()
    })
    .map_err(py_err)
}

/// The node: a fingerprint document (a dict, as `hpcc.fingerprint()`
/// returns or `hpcc fingerprint --json` saved), a path to one, or (None)
/// this node's, from the per-boot cache.
fn load_node(fingerprint: Option<&Bound<'_, PyAny>>, policy: &Policy) -> PyResult<NodeFingerprint> {
    let Some(fp) = fingerprint else {
        return Ok(NodeFingerprint::cached(policy));
    };
    if fp.is_instance_of::<PyDict>() {
        let text: String = fp
            .py()
            .import("json")?
            .call_method1("dumps", (fp,))?
            .extract()?;
        return serde_json::from_str(&text).map_err(|e| {
            InputError::new_err(format!(
                "the fingerprint is not a fingerprint (hpcc fingerprint --json): {e}"
            ))
        });
    }
    let path: PathBuf = fp.extract().map_err(|_| {
        InputError::new_err("fingerprint must be a dict (hpcc.fingerprint()), a path or None")
    })?;
    commands::load_node(
        &MatchOptions {
            fingerprint: Some(path),
            ..Default::default()
        },
        policy,
    )
    .map_err(py_err)
}

fn image_ref(image: &str) -> PyResult<ImageRef> {
    ImageRef::parse(image).map_err(|e| py_err(ImageCmdError::Image(e)))
}

/// This node's fingerprint (`hpcc fingerprint --json`): CPU, kernel,
/// glibc, GPUs, and the host MPI/libfabric/UCX the policy declares.
/// `cache=False` takes it now instead of using the per-boot cache.
#[pyfunction]
#[pyo3(signature = (policy=None, cache=true))]
fn fingerprint(py: Python<'_>, policy: Option<PathBuf>, cache: bool) -> PyResult<Bound<'_, PyAny>> {
    let policy = load_policy(&policy)?;
    let fp = if cache {
        NodeFingerprint::cached(&policy)
    } else {
        NodeFingerprint::take(&policy)
    };
    to_py(py, &doc(schema::to_string_pretty(Kind::Fingerprint, &fp))?)
}

/// Scores an image against this node, or against `fingerprint` (a dict
/// or a saved file), under `policy` (a path; default as `hpcc`).
///
/// `annotations` is a dict of annotation keys to string values (the
/// document is `hpcc match --annotations FILE --json`'s: kind `verdict`,
/// or with `plan=True` `--plan`'s: kind `plan`), or an image reference
/// (an OCI layout `DIR:tag`, an archive, `docker://...`: `hpcc match
/// IMAGE --json`, kind `image-verdict`).
#[pyfunction(name = "match")]
#[pyo3(signature = (annotations, fingerprint=None, policy=None, plan=false))]
fn match_<'py>(
    py: Python<'py>,
    annotations: &Bound<'py, PyAny>,
    fingerprint: Option<&Bound<'py, PyAny>>,
    policy: Option<PathBuf>,
    plan: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let pol = load_policy(&policy)?;
    if let Ok(image) = annotations.cast::<PyString>() {
        if plan {
            return Err(InputError::new_err(
                "plan=True needs annotations (a dict), not an image: the plan of an image is its bundle's",
            ));
        }
        let image = image_ref(image.to_str()?)?;
        let node = load_node(fingerprint, &pol)?;
        let opts = MatchOptions {
            json: true,
            ..Default::default()
        };
        let (_, text) = commands::match_image_on(&image, &node, &pol, &opts).map_err(py_err)?;
        return to_py(py, &text);
    }
    let dict = annotations.cast::<PyDict>().map_err(|_| {
        InputError::new_err("annotations must be a dict of strings or an image reference")
    })?;
    let mut map = BTreeMap::new();
    for (k, v) in dict.iter() {
        let key: String = k
            .extract()
            .map_err(|_| InputError::new_err(format!("annotation key {k} must be a string")))?;
        let value: String = v.extract().map_err(|_| {
            InputError::new_err(format!("annotation {key} must be a string, found {v}"))
        })?;
        map.insert(key, value);
    }
    let node = load_node(fingerprint, &pol)?;
    let ctx = LaunchContext::from_annotations("image", map);
    let (_, p) =
        commands::match_context(&ctx, &node, &pol, &UserRequest::default()).map_err(py_err)?;
    let text = if plan {
        schema::to_string_pretty(Kind::Plan, &p)
    } else {
        schema::to_string_pretty(Kind::Verdict, &p.verdict)
    };
    to_py(py, &doc(text)?)
}

/// The image-side conformance report of an image (`hpcc check IMAGE
/// --json`, kind `check`).
#[pyfunction]
fn check<'py>(py: Python<'py>, image: &str) -> PyResult<Bound<'py, PyAny>> {
    let (_, text) = commands::check(&image_ref(image)?, true).map_err(py_err)?;
    to_py(py, &text)
}

/// The variant of an image index to pull on this node, or on
/// `fingerprint` (`hpcc select IMAGE --json`, kind `select`).
#[pyfunction]
#[pyo3(signature = (image, fingerprint=None, policy=None))]
fn select<'py>(
    py: Python<'py>,
    image: &str,
    fingerprint: Option<&Bound<'py, PyAny>>,
    policy: Option<PathBuf>,
) -> PyResult<Bound<'py, PyAny>> {
    let image = image_ref(image)?;
    let pol = load_policy(&policy)?;
    let node = load_node(fingerprint, &pol)?;
    let (_, sel) =
        commands::select_image_on(&image, &node, &pol, &MatchOptions::default()).map_err(py_err)?;
    to_py(py, &doc(schema::to_string_pretty(Kind::Select, &sel))?)
}

/// The `hpcc` module.
#[pymodule]
fn hpcc(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("SCHEMA", schema::SCHEMA)?;
    m.add("HpccError", py.get_type::<HpccError>())?;
    m.add("PolicyError", py.get_type::<PolicyError>())?;
    m.add("ImageError", py.get_type::<ImageError>())?;
    m.add("InputError", py.get_type::<InputError>())?;
    m.add_function(wrap_pyfunction!(fingerprint, m)?)?;
    m.add_function(wrap_pyfunction!(match_, m)?)?;
    m.add_function(wrap_pyfunction!(check, m)?)?;
    m.add_function(wrap_pyfunction!(select, m)?)?;
    Ok(())
}
