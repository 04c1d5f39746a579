"""The `hpcc` module against the CLI it binds and the schemas both follow.

Run by tests/setup/python-test.sh from a fresh virtual environment, with
HPCC_REPO (the repository: docs/schema/, tests/work/ fixtures) and
HPCC_BIN (the `hpcc` binary the dicts are compared with).
"""

import json
import os
import pathlib
import subprocess
import sys

import jsonschema
import pytest

import hpcc

REPO = pathlib.Path(os.environ.get("HPCC_REPO", pathlib.Path(__file__).parents[2]))
HPCC_BIN = os.environ.get("HPCC_BIN", str(REPO / "target/debug/hpcc"))
SCHEMAS = REPO / "docs/schema"
IMAGES = REPO / "tests/work/image-side/oci"
LAYOUT = REPO / "tests/work/oci"

ANNOTATIONS = {
    "org.supercontainers.hardware.cpu.optimized.version": "x86_64",
    "org.supercontainers.mpi.implementation": "mpich",
    "org.supercontainers.hardware.gpu.nvidia.cuda.version": "12.0",
}


def validate(doc, kind):
    """`doc` is a valid `kind` document of docs/schema/."""
    assert doc["schema"] == "hpcc/v1" == hpcc.SCHEMA
    assert doc["kind"] == kind
    schema = json.loads((SCHEMAS / f"{kind}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(doc)


def cli(*args, policy):
    """`hpcc --json --config POLICY ARGS`: exit code and document."""
    env = {k: v for k, v in os.environ.items() if k != "HPCC_CONFIG"}
    p = subprocess.run(
        [HPCC_BIN, "--json", "--config", str(policy), *args],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )
    return p.returncode, json.loads(p.stdout)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("hpcc")
    (d / "hook.toml").write_text("")
    (d / "ann.json").write_text(json.dumps(ANNOTATIONS))
    return d


@pytest.fixture(scope="module")
def policy(work):
    return str(work / "hook.toml")


@pytest.fixture(scope="module")
def saved(work, policy):
    """This node's fingerprint, saved as `hpcc fingerprint --json` saves it."""
    fp = hpcc.fingerprint(policy=policy, cache=False)
    path = work / "node.json"
    path.write_text(json.dumps(fp))
    return fp, str(path)


def test_fingerprint_is_the_cli_document(policy, saved):
    fp, _ = saved
    validate(fp, "fingerprint")
    validate(hpcc.fingerprint(policy=policy), "fingerprint")
    code, doc = cli("fingerprint", "--no-cache", policy=policy)
    assert code == 0
    # Taken twice: the same node, the same document.
    assert doc == fp


def test_match_annotations_is_the_cli_verdict(work, policy, saved):
    fp, path = saved
    v = hpcc.match(ANNOTATIONS, fingerprint=fp, policy=policy)
    validate(v, "verdict")
    # No GPU in the saved fingerprint's node or a CUDA image on a GPU node:
    # either way the GPU annotation is a finding.
    assert any(f["check"] == "gpu" for f in v["findings"]), v
    assert v == hpcc.match(ANNOTATIONS, fingerprint=path, policy=policy)
    code, doc = cli("match", "--annotations", str(work / "ann.json"),
                    "--fingerprint", path, policy=policy)
    assert doc == v
    assert code == {"green": 0, "orange": 1, "red": 2}[v["score"]]


def test_match_plan(policy, saved):
    fp, _ = saved
    p = hpcc.match(ANNOTATIONS, fingerprint=fp, policy=policy, plan=True)
    validate(p, "plan")
    assert p["decision"]["action"] in ("start", "refuse")


def test_a_red_image_is_red(policy):
    red = {"org.supercontainers.hardware.cpu.optimized.version": "a64fx"}
    v = hpcc.match(red, policy=policy)
    validate(v, "verdict")
    assert v["score"] == "red", v


def test_match_image(policy, saved):
    fp, path = saved
    m = hpcc.match(f"{IMAGES}:mpich", fingerprint=fp, policy=policy)
    validate(m, "image-verdict")
    code, doc = cli("match", f"{IMAGES}:mpich", "--fingerprint", path, policy=policy)
    assert doc == m


def test_check_image(policy):
    c = hpcc.check(f"{IMAGES}:openmpi")
    validate(c, "check")
    assert c["conformant"] is False
    code, doc = cli("check", f"{IMAGES}:openmpi", policy=policy)
    assert code == 1 and doc == c


def test_select(policy, saved):
    fp, path = saved
    s = hpcc.select(str(LAYOUT), fingerprint=fp, policy=policy)
    validate(s, "select")
    assert len(s["variants"]) >= 2
    code, doc = cli("select", str(LAYOUT), "--fingerprint", path, policy=policy)
    assert doc == s
    assert code == {"green": 0, "orange": 1, "red": 2}[s["score"]]


def test_errors_are_exceptions_with_the_cli_message(work, policy):
    bad = work / "bad.toml"
    bad.write_text("[checks]\ncpu = 'sometimes'\n")
    with pytest.raises(hpcc.PolicyError) as e:
        hpcc.match(ANNOTATIONS, policy=str(bad))
    code, doc = cli("match", "--annotations", str(work / "ann.json"), policy=bad)
    assert code == 3
    validate(doc, "error")
    assert str(e.value) == doc["error"]

    with pytest.raises(hpcc.ImageError) as e:
        hpcc.check(f"{IMAGES}:no-such-tag")
    code, doc = cli("check", f"{IMAGES}:no-such-tag", policy=policy)
    assert code == 3 and str(e.value) == doc["error"]

    notfp = work / "not-a-fingerprint.json"
    notfp.write_text('{"hostname": 1}')
    with pytest.raises(hpcc.InputError) as e:
        hpcc.match(ANNOTATIONS, fingerprint=str(notfp), policy=policy)
    code, doc = cli("match", "--annotations", str(work / "ann.json"),
                    "--fingerprint", str(notfp), policy=policy)
    assert code == 3 and str(e.value) == doc["error"]

    with pytest.raises(hpcc.InputError):
        hpcc.match({"org.supercontainers.mpi.implementation": 3})
    with pytest.raises(hpcc.InputError):
        hpcc.match(ANNOTATIONS, fingerprint={"hostname": "x"})
    for cls in (hpcc.PolicyError, hpcc.ImageError, hpcc.InputError):
        assert issubclass(cls, hpcc.HpccError)


def doc_block(name):
    """The fenced block after `<!-- test: NAME ... -->` in docs/python.md."""
    text = (REPO / "docs/python.md").read_text()
    marker = text.index(f"<!-- test: {name} ")
    body = text[marker:].split("```python\n", 1)[1]
    return body.split("```", 1)[0]


def test_the_docs_examples(tmp_path, policy):
    import ast
    # ReFrame is not installed here: its example must at least parse.
    ast.parse(doc_block("reframe-skip"))
    # The health check runs as written, with this module, and exits with
    # the score's code.
    script = tmp_path / "health.py"
    script.write_text(doc_block("health-check"))
    env = dict(os.environ, HPCC_CONFIG=policy)
    p = subprocess.run([sys.executable, str(script)], capture_output=True,
                       text=True, timeout=120, env=env, check=False)
    assert p.returncode in (0, 1, 2), p.stderr
    host, arch, score = p.stdout.split()
    assert score == {0: "green", 1: "orange", 2: "red"}[p.returncode]
    assert arch == hpcc.fingerprint(policy=policy)["cpu"]["microarchitecture"]
