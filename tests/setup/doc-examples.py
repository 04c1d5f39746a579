#!/usr/bin/env python3
"""Runs the copy-paste examples of the integration pages against an installed hpcc.

    tests/setup/doc-examples.py [--work DIR] [--rootfs DIR] PAGE.md...

A fenced block is an example when the line before its fence is a marker:

    <!-- test: NAME [exit=N|nonzero] [expect="TEXT"] [file=NAME] [syntax=toml|yaml|json|python] -->

- a `sh` block runs with bash (no -e: its status is the last command's) in the
  page's working directory; its status must be `exit` (default 0) and its
  stdout+stderr must contain `expect`;
- `file=NAME` writes the block to NAME in the working directory (for later
  blocks, e.g. a Dockerfile);
- `syntax=...` only parses the block (engines the test machines lack).

Every page gets a fresh working directory holding `rootfs/` (a busybox) and
`bundle/` (that rootfs and a `config.json` from `runc spec`), and, for pages
that name it, a local image `registry.example.org/hpc/app:1.0` made from the
rootfs (no registry is reachable). What stands in for this machine's
peculiarities, and nothing else (see /work/shared/ENVIRONMENT.md):
- CONTAINERS_CONF: podman with runc, cgroupfs and the two ulimits runc needs here;
- a `crun` on PATH that runs the real one in a private cgroup2 mount, without
  process.rlimits (crun cannot use this machine's hybrid cgroups);
- a `ctr` on PATH, when containerd is absent, that answers `ctr oci spec`
  with `runc spec`.
Exit status: 0 when every example passed. -v prints each example's output.
"""

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

MARKER = re.compile(r"^(\s*)<!--\s*test:\s*(\S+)(.*?)-->\s*$")
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
OPTION = re.compile(r'(\w+)=("([^"]*)"|\S+)')
IMAGE = "registry.example.org/hpc/app"
REPO = Path(__file__).resolve().parents[2]

CONTAINERS_CONF = """\
# podman on the test machines (ENVIRONMENT.md): runc, cgroupfs, and the
# ulimits without which runc fails here ("rlimit type 7").
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=1000:1000"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
"""

CRUN_SHIM = """\
#!/bin/sh
# crun on the test machines (ENVIRONMENT.md): hybrid cgroups are refused and
# RLIMIT_MEMLOCK cannot be raised; run it in a private cgroup2 mount.
[ -f config.json ] && jq 'del(.process.rlimits)' config.json > .crun-config.json && mv .crun-config.json config.json
exec unshare -m --propagation private sh -c 'umount -R /sys/fs/cgroup 2>/dev/null; mount -t cgroup2 none /sys/fs/cgroup && exec /usr/bin/crun --cgroup-manager=disabled "$@"' sh "$@"
"""

CTR_SHIM = """\
#!/bin/sh
# containerd is not installed on the test machines: `ctr oci spec` from runc spec.
[ "$1 $2" = "oci spec" ] || { echo "ctr stand-in: only 'ctr oci spec'" >&2; exit 2; }
d=$(mktemp -d); runc spec --bundle "$d" && cat "$d/config.json"; rc=$?; rm -rf "$d"; exit $rc
"""


def examples(page: Path):
    """(name, options, lang, text) for every marked block of a page."""
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = MARKER.match(lines[i])
        i += 1
        if not m:
            continue
        name, rest = m.group(2), m.group(3)
        opts = {k: (q if q is not None and v.startswith('"') else v) for k, v, q in OPTION.findall(rest)}
        while i < len(lines) and not lines[i].strip():
            i += 1
        f = FENCE.match(lines[i]) if i < len(lines) else None
        if not f:
            raise SystemExit(f"{page}: marker {name!r} is not followed by a fenced block")
        indent, lang = f.group(1), f.group(2)
        i += 1
        body = []
        while i < len(lines) and lines[i].strip() != "```":
            line = lines[i]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            i += 1
        i += 1
        yield name, opts, lang, "\n".join(body) + "\n"


def check_syntax(kind: str, text: str):
    if kind == "toml":
        tomllib.loads(text)
    elif kind == "json":
        json.loads(text)
    elif kind == "yaml":
        import yaml  # python3-yaml

        yaml.safe_load(text)
    elif kind == "python":
        ast.parse(text)
    else:
        raise ValueError(f"unknown syntax check {kind!r}")


def run(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


# Files outside the working directory that the examples write.
STALE = ["/tmp/hpcc-demo-crun.err"]


def prepare(work: Path, rootfs: Path, page_text: str) -> dict:
    for f in STALE:
        Path(f).unlink(missing_ok=True)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    subprocess.run(["cp", "-a", str(rootfs), str(work / "rootfs")], check=True)
    env = dict(os.environ)
    env["ARGS"] = '["/bin/sh", "-c", "echo started"]'
    env["READONLY"] = "false"
    out = run(["bash", str(REPO / "tests/setup/make-bundle.sh"), str(rootfs), str(work / "bundle")], env=env)
    if out.returncode != 0:
        raise SystemExit(f"make-bundle.sh failed:\n{out.stdout}")
    shims = work / ".shims"
    shims.mkdir()
    (shims / "crun").write_text(CRUN_SHIM)
    (shims / "crun").chmod(0o755)
    if not shutil.which("ctr"):
        (shims / "ctr").write_text(CTR_SHIM)
        (shims / "ctr").chmod(0o755)
    conf = work / ".containers.conf"
    conf.write_text(CONTAINERS_CONF)
    env = dict(os.environ)
    env["PATH"] = f"{shims}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    env["CONTAINERS_CONF"] = str(conf)
    env.pop("HPCC_CONFIG", None)
    if f"{IMAGE}:1.0" in page_text:
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imp = run(["podman", "import", "-q", "-", f"{IMAGE}:1.0"], stdin=tar.stdout, env=env)
        tar.wait()
        if imp.returncode != 0:
            raise SystemExit(f"podman import failed:\n{imp.stdout}")
    return env


def cleanup(env: dict):
    for f in STALE:
        Path(f).unlink(missing_ok=True)
    for cid in ["hpcc-demo", "hpcc-demo-crun"]:
        run(["runc", "delete", "--force", cid], env=env)
    out = run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}"], env=env)
    ours = [i for i in out.stdout.split() if i.startswith(IMAGE + ":")]
    if ours:
        run(["podman", "rmi", "-f", *ours], env=env)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "hpcc-doc-examples"))
    ap.add_argument("--rootfs", default=str(REPO / "tests/work/rootfs/busybox"))
    ap.add_argument("-v", "--verbose", action="store_true", help="print every example's output")
    ap.add_argument("pages", nargs="+")
    a = ap.parse_args()
    rootfs = Path(a.rootfs)
    if not (rootfs / "bin/sh").exists():
        print(f"{rootfs} is not a busybox rootfs: run tests/setup/build-fixtures.sh tests/work", file=sys.stderr)
        return 1
    failed = passed = 0
    for p in a.pages:
        page = Path(p)
        text = page.read_text()
        blocks = list(examples(page))
        if not blocks:
            continue
        work = Path(a.work) / page.stem
        env = prepare(work, rootfs, text)
        try:
            for name, opts, lang, body in blocks:
                label = f"{page.name}:{name}"
                try:
                    if "syntax" in opts:
                        check_syntax(opts["syntax"], body)
                    elif "file" in opts:
                        (work / opts["file"]).write_text(body)
                    else:
                        out = run(["timeout", "300", "bash", "-o", "pipefail", "-c", body], cwd=work, env=env)
                        want = opts.get("exit", "0")
                        ok_exit = out.returncode != 0 if want == "nonzero" else out.returncode == int(want)
                        expect = opts.get("expect")
                        if not ok_exit or (expect and expect not in out.stdout):
                            raise AssertionError(
                                f"exit {out.returncode} (want {want}), expected {expect!r} in:\n{out.stdout}"
                            )
                except Exception as e:  # noqa: BLE001 - every failure is reported the same way
                    failed += 1
                    print(f"FAIL {label}\n---\n{body}---\n{e}\n", flush=True)
                    continue
                passed += 1
                print(f"ok   {label}", flush=True)
                if a.verbose and "syntax" not in opts and "file" not in opts:
                    print("     " + out.stdout.rstrip().replace("\n", "\n     "), flush=True)
        finally:
            cleanup(env)
    print(f"doc examples: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
