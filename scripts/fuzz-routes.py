#!/usr/bin/env python3
"""Turn the Matrix spec's OpenAPI (Client-Server, Server-Server, key server) into the compact route
list the fuzz test reads: test/fuzz/routes.json.

Run by hand when the spec copy changes (needs python3 with PyYAML):
    python3 scripts/fuzz-routes.py [../shared/matrix-spec/data/api] > test/fuzz/routes.json

Each route: method, full path template, auth kind (user | server | appservice | none), and
optional flag when a token is optional, path/query parameters with their type and format, and a
skeleton of the JSON body schema ($refs resolved, allOf merged, depth-bounded) so the test can build
well-shaped bodies and then break them field by field.
"""
import json
import os
import sys

import yaml

ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..", "shared", "matrix-spec", "data", "api")
AREAS = ["client-server", "server-server"]
METHODS = ["get", "put", "post", "delete"]
MAX_DEPTH = 5

_cache = {}


def load(path):
    path = os.path.normpath(path)
    if path not in _cache:
        with open(path) as f:
            _cache[path] = yaml.safe_load(f)
    return _cache[path]


def resolve(node, base):
    """Follow a $ref (file#/pointer) from the file `base`; returns (node, its file)."""
    seen = 0
    while isinstance(node, dict) and "$ref" in node and seen < 20:
        ref = node["$ref"]
        file_part, _, pointer = ref.partition("#")
        target = os.path.join(os.path.dirname(base), file_part) if file_part else base
        doc = load(target)
        for part in filter(None, pointer.split("/")):
            doc = doc[part.replace("~1", "/").replace("~0", "~")]
        node, base = doc, target
        seen += 1
    return node, base


def skeleton(schema, base, depth=0):
    """A compact schema: {"t": type, "f": format, "p": {prop: skel}, "r": [required], "i": item skel,
    "e": [enum values], "a": additionalProperties skel}. Keys left out when absent."""
    schema, base = resolve(schema, base)
    if not isinstance(schema, dict):
        return {}
    if depth > MAX_DEPTH:
        return {"t": schema.get("type", "object") if isinstance(schema.get("type"), str) else "object"}
    merged = {}
    for part in schema.get("allOf", []):
        sub = skeleton(part, base, depth)
        merged.setdefault("p", {}).update(sub.get("p", {}))
        merged.setdefault("r", []).extend(sub.get("r", []))
        if "t" in sub:
            merged["t"] = sub["t"]
    for key in ("oneOf", "anyOf"):
        if key in schema and schema[key]:
            sub = skeleton(schema[key][0], base, depth)
            for k, v in sub.items():
                merged.setdefault(k, v)
    out = dict(merged)
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), t[0])
    if t:
        out["t"] = t
    if "format" in schema:
        out["f"] = schema["format"]
    if "enum" in schema:
        out["e"] = schema["enum"][:8]
    props = schema.get("properties")
    if isinstance(props, dict):
        out.setdefault("p", {})
        for name, sub in props.items():
            out["p"][name] = skeleton(sub, base, depth + 1)
        out.setdefault("t", "object")
    if schema.get("required"):
        out["r"] = sorted(set(out.get("r", []) + list(schema["required"])))
    if "items" in schema:
        out["i"] = skeleton(schema["items"], base, depth + 1)
        out.setdefault("t", "array")
    ap = schema.get("additionalProperties")
    if isinstance(ap, dict) and ap:
        out["a"] = skeleton(ap, base, depth + 1)
        out.setdefault("t", "object")
    if not out.get("p"):
        out.pop("p", None)
    if not out.get("r"):
        out.pop("r", None)
    return out


def auth_kind(op, doc_security):
    sec = op.get("security", doc_security) or []
    names = [k for req in sec for k in req]
    optional = any(req == {} for req in sec)
    if "signedRequest" in names:
        kind = "server"
    elif "accessTokenBearer" in names or "accessToken" in names:
        kind = "user"
    elif "appserviceAccessTokenBearer" in names:
        kind = "appservice"
    else:
        kind = "none"
    return kind, optional


def base_path(doc):
    for server in doc.get("servers", []):
        default = server.get("variables", {}).get("basePath", {}).get("default")
        if default:
            return default
    return ""


def main():
    routes = []
    seen = set()
    for area in AREAS:
        folder = os.path.join(ROOT, area)
        for name in sorted(os.listdir(folder)):
            if not name.endswith(".yaml"):
                continue
            file = os.path.join(folder, name)
            doc = load(file)
            if not isinstance(doc, dict) or "paths" not in doc:
                continue
            prefix = base_path(doc)
            for template, item in doc["paths"].items():
                item, item_base = resolve(item, file)
                shared_params = item.get("parameters", [])
                for method in METHODS:
                    op = item.get(method)
                    if not op:
                        continue
                    kind, optional = auth_kind(op, doc.get("security"))
                    params = []
                    for p in shared_params + op.get("parameters", []):
                        p, pbase = resolve(p, item_base)
                        if p.get("in") not in ("path", "query"):
                            continue
                        sk = skeleton(p.get("schema", {}), pbase)
                        entry = {"in": p["in"], "name": p["name"], "t": sk.get("t", "string")}
                        if "f" in sk:
                            entry["f"] = sk["f"]
                        if "e" in sk:
                            entry["e"] = sk["e"]
                        if p.get("required"):
                            entry["req"] = True
                        params.append(entry)
                    path = prefix + template.strip()  # the spec has "/events " and "/invite " variants
                    # The spec marks /room_summary signedRequest and federation /timestamp_to_event
                    # accessToken; the API a path belongs to decides.
                    if path.startswith("/_matrix/federation/"):
                        kind = "server" if kind == "user" else kind
                    elif kind == "server":
                        kind, optional = "user", True
                    route = {
                        "file": f"{area}/{name}",
                        "method": method.upper(),
                        "path": path,
                        "auth": kind,
                    }
                    if optional:
                        route["authOptional"] = True
                    if params:
                        route["params"] = params
                    body = op.get("requestBody")
                    if body:
                        body, bbase = resolve(body, item_base)
                        content = body.get("content", {})
                        if "application/json" in content:
                            route["body"] = skeleton(content["application/json"].get("schema", {}), bbase)
                        elif content:
                            route["bodyType"] = next(iter(content))
                    key = (route["method"], path)
                    if key in seen:
                        continue  # first description wins
                    seen.add(key)
                    routes.append(route)
    routes.sort(key=lambda r: (r["path"], r["method"]))
    # One route per line: reviewable diffs, small file.
    sys.stdout.write("[\n" + ",\n".join(json.dumps(r, separators=(",", ":"), sort_keys=True) for r in routes) + "\n]\n")


if __name__ == "__main__":
    main()
