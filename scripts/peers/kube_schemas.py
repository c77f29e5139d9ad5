#!/usr/bin/env python3
"""Offline Kubernetes JSON schemas for kubeconform, and YAML -> JSON for the deploy tests.

kubeconform normally downloads its per-kind schemas from GitHub, which meshgate's machines cannot
reach. scripts/peers/install.sh (peer `kubeschemas`) builds the same layout locally from two
pinned sources that the machines do reach:

  * the Kubernetes API schemas shipped inside the `kubernetes-validate` wheel on PyPI (one
    directory per Kubernetes minor, `v1.N.0-local-strict/`: one JSON Schema per type, which
    point into a shared `_definitions.json` through an absolute `$id`). kubeconform compiles each
    schema file on its own, so those cross-file references cannot resolve; `kubernetes` below
    rewrites every top-level kind into a standalone file that carries, under `$defs`, exactly
    the definitions it reaches.
  * CustomResourceDefinition manifests (Istio's, from the `istio.io/api` Go module): `crds`
    turns each served version's `openAPIV3Schema` into a strict JSON Schema (unknown fields are
    errors, as `kubeconform -strict` means them) with `apiVersion`, `kind` and `metadata` added.

Layout written (what kubeconform's `-schema-location` templates expect):

  <out>/kubernetes/v1.N.0-standalone-strict/<kind><kindSuffix>.json
      {{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json
  <out>/crds/<group>/<kind>_<version>.json
      {{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json

`yaml2json` prints a YAML stream (every document of it, as Helm and kustomize render them) as one
JSON array, so tests/deploy.rs can inspect rendered manifests without a YAML parser of its own.

Usage:
  kube_schemas.py kubernetes --wheel FILE --version 1.30.0 [--version ...] --out DIR
  kube_schemas.py crds --out DIR CRD.yaml...
  kube_schemas.py check DIR --version 1.30.0 [...] [--crd GROUP/KIND_VERSION ...]
  kube_schemas.py yaml2json [FILE]          (stdin when FILE is omitted)
"""

import argparse
import copy
import json
import os
import re
import sys
import zipfile

WHEEL_SCHEMA_ROOT = "kubernetes_validate/kubernetes-json-schema"
DEFS_REF = re.compile(r"^(?:/api/_definitions\.json)?#/\$defs/(.+)$")

# Kinds the deploy tests and manifests rely on; `check` fails when one of them is missing.
REQUIRED_KINDS = (
    "configmap-v1",
    "service-v1",
    "serviceaccount-v1",
    "namespace-v1",
    "deployment-apps-v1",
    "horizontalpodautoscaler-autoscaling-v2",
    "poddisruptionbudget-policy-v1",
)


class SchemaError(Exception):
    """A schema source that does not have the shape this converter was written for."""


def fail(msg):
    print(f"kube_schemas.py: error: {msg}", file=sys.stderr)
    sys.exit(1)


# ---- Kubernetes API schemas (kubernetes-validate wheel) -----------------------------------


def _collect_refs(node, found):
    """Adds the `$defs` names that `node` references (directly) to `found`."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            m = DEFS_REF.match(ref)
            if not m:
                raise SchemaError(f"unexpected $ref {ref!r}")
            found.add(m.group(1))
        for v in node.values():
            _collect_refs(v, found)
    elif isinstance(node, list):
        for v in node:
            _collect_refs(v, found)


def _rewrite_refs(node):
    """Points every `$defs` reference at the file's own `$defs` (in place)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            node["$ref"] = "#/$defs/" + DEFS_REF.match(ref).group(1)
        for v in node.values():
            _rewrite_refs(v)
    elif isinstance(node, list):
        for v in node:
            _rewrite_refs(v)


def standalone(schema, definitions):
    """`schema` with every definition it reaches (transitively) embedded under `$defs`."""
    needed, todo = set(), set()
    _collect_refs(schema, todo)
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        if name not in definitions:
            raise SchemaError(f"reference to unknown definition {name!r}")
        needed.add(name)
        more = set()
        _collect_refs(definitions[name], more)
        todo |= more - needed
    out = copy.deepcopy(schema)
    # The wheel's absolute `$id`s are what made the references cross files; a standalone file
    # needs none (its references are all fragment-local now).
    out.pop("$id", None)
    out["$defs"] = {n: copy.deepcopy(definitions[n]) for n in sorted(needed)}
    for d in out["$defs"].values():
        d.pop("$id", None)
    _rewrite_refs(out)
    return out


def convert_kubernetes(wheel, versions, out):
    try:
        zf = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as e:
        fail(f"cannot open wheel {wheel}: {e}")
    names = zf.namelist()
    total = 0
    for version in versions:
        src = f"{WHEEL_SCHEMA_ROOT}/v{version}-local-strict/"
        members = [n for n in names if n.startswith(src) and n.endswith(".json")]
        if not members:
            have = sorted({n[len(WHEEL_SCHEMA_ROOT) + 1 :].split("/")[0] for n in names if n.startswith(WHEEL_SCHEMA_ROOT + "/")})
            fail(f"{wheel} has no schemas for Kubernetes v{version} (it has: {', '.join(have)})")
        try:
            definitions = json.loads(zf.read(src + "_definitions.json"))["$defs"]
        except KeyError:
            fail(f"{wheel}: {src}_definitions.json missing or without $defs")
        dest = os.path.join(out, "kubernetes", f"v{version}-standalone-strict")
        os.makedirs(dest, exist_ok=True)
        count = 0
        for member in sorted(members):
            base = member[len(src) :]
            if base == "_definitions.json":
                continue
            schema = json.loads(zf.read(member))
            # Only the kinds a manifest can name (apiVersion + kind); kubeconform never asks for
            # the schema of a nested type such as DeploymentSpec.
            gvks = schema.get("x-kubernetes-group-version-kind")
            if not gvks:
                continue
            try:
                result = standalone(schema, definitions)
            except SchemaError as e:
                fail(f"{member}: {e}")
            with open(os.path.join(dest, base), "w", encoding="utf-8") as f:
                json.dump(result, f, separators=(",", ":"), sort_keys=True)
            count += 1
        print(f"kubernetes v{version}: {count} kinds -> {dest}")
        total += count
    return total


# ---- CustomResourceDefinitions ------------------------------------------------------------


def strict_openapi(node):
    """An OpenAPI v3 (structural) schema as a JSON Schema that rejects unknown fields.

    Objects with `properties` get `additionalProperties: false` unless they say
    `x-kubernetes-preserve-unknown-fields` or already describe their extra fields (maps);
    `nullable` adds "null" to the type; `x-kubernetes-int-or-string` becomes string-or-integer.
    CEL rules (`x-kubernetes-validations`) are kept as annotations: no JSON Schema validator
    evaluates them, the API server does.
    """
    if isinstance(node, list):
        return [strict_openapi(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if k in ("properties", "patternProperties", "definitions", "$defs"):
            out[k] = {name: strict_openapi(sub) for name, sub in v.items()}
        elif k in ("items", "additionalProperties", "not") and isinstance(v, (dict, list)):
            out[k] = strict_openapi(v)
        elif k in ("allOf", "anyOf", "oneOf"):
            out[k] = [strict_openapi(sub) for sub in v]
        else:
            out[k] = v
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["oneOf"] = out.get("oneOf", []) + [{"type": "string"}, {"type": "integer"}]
    if out.pop("nullable", False) and "type" in out:
        t = out["type"]
        out["type"] = sorted(set(t if isinstance(t, list) else [t]) | {"null"})
    if (
        "properties" in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
        and "additionalProperties" not in out
    ):
        out["additionalProperties"] = False
    return out


def convert_crds(files, out):
    try:
        import yaml  # noqa: PLC0415  (only this subcommand and yaml2json need PyYAML)
    except ImportError:
        fail("PyYAML is not installed in this Python (scripts/peers/install.sh kubeschemas installs it)")
    count = 0
    for path in files:
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for doc in docs:
            if doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            group, kind = spec["group"], spec["names"]["kind"]
            for ver in spec.get("versions", []):
                if not ver.get("served", True):
                    continue
                schema = (ver.get("schema") or {}).get("openAPIV3Schema")
                if not schema:
                    fail(f"{path}: {group}/{ver['name']} {kind} has no openAPIV3Schema")
                schema = strict_openapi(schema)
                props = schema.setdefault("properties", {})
                props["apiVersion"] = {"type": "string", "enum": [f"{group}/{ver['name']}"]}
                props["kind"] = {"type": "string", "enum": [kind]}
                props.setdefault("metadata", {"type": "object"})
                schema["type"] = "object"
                schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind"})
                schema["additionalProperties"] = False
                dest = os.path.join(out, "crds", group.lower())
                os.makedirs(dest, exist_ok=True)
                name = f"{kind.lower()}_{ver['name']}.json"
                with open(os.path.join(dest, name), "w", encoding="utf-8") as f:
                    json.dump(schema, f, indent=1, sort_keys=True)
                count += 1
    print(f"crds: {count} kind versions -> {os.path.join(out, 'crds')}")
    return count


# ---- check / yaml2json --------------------------------------------------------------------


def check(root, versions, crds):
    problems = []
    for version in versions:
        d = os.path.join(root, "kubernetes", f"v{version}-standalone-strict")
        for kind in REQUIRED_KINDS:
            p = os.path.join(d, kind + ".json")
            try:
                with open(p, encoding="utf-8") as f:
                    s = json.load(f)
                if "$defs" not in s or s.get("additionalProperties") is not False:
                    problems.append(f"{p}: not a standalone strict schema")
            except (OSError, ValueError) as e:
                problems.append(f"{p}: {e}")
    for crd in crds:
        group, _, rest = crd.partition("/")
        p = os.path.join(root, "crds", group, rest + ".json")
        try:
            with open(p, encoding="utf-8") as f:
                json.load(f)
        except (OSError, ValueError) as e:
            problems.append(f"{p}: {e}")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)
    print(f"ok: {len(versions)} Kubernetes versions, {len(crds)} CRD kinds under {root}")


def yaml2json(path):
    try:
        import yaml  # noqa: PLC0415
    except ImportError:
        fail("PyYAML is not installed in this Python (scripts/peers/install.sh kubeschemas installs it)")
    text = sys.stdin.read() if path in (None, "-") else open(path, encoding="utf-8").read()
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        fail(f"{path or '<stdin>'}: invalid YAML: {e}")
    # default=str: YAML timestamps (PyYAML gives datetime objects) as their text.
    json.dump(docs, sys.stdout, default=str)
    sys.stdout.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("kubernetes", help="standalone strict schemas from the kubernetes-validate wheel")
    k.add_argument("--wheel", required=True)
    k.add_argument("--version", action="append", required=True, help="e.g. 1.30.0 (repeatable)")
    k.add_argument("--out", required=True)
    c = sub.add_parser("crds", help="strict schemas from CustomResourceDefinition manifests")
    c.add_argument("--out", required=True)
    c.add_argument("files", nargs="+")
    ch = sub.add_parser("check", help="verify a converted tree")
    ch.add_argument("root")
    ch.add_argument("--version", action="append", default=[])
    ch.add_argument("--crd", action="append", default=[], help="GROUP/KIND_VERSION, e.g. telemetry.istio.io/telemetry_v1")
    y = sub.add_parser("yaml2json", help="a YAML stream as a JSON array of its documents")
    y.add_argument("file", nargs="?")
    a = ap.parse_args()
    if a.cmd == "kubernetes":
        convert_kubernetes(a.wheel, a.version, a.out)
    elif a.cmd == "crds":
        if convert_crds(a.files, a.out) == 0:
            fail("no CustomResourceDefinition found in " + ", ".join(a.files))
    elif a.cmd == "check":
        check(a.root, a.version, a.crd)
    else:
        yaml2json(a.file)


if __name__ == "__main__":
    main()
