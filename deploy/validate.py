#!/usr/bin/env python3
"""Offline checks of the deployment material under deploy/ (no cluster, no network).

    python3 deploy/validate.py kubernetes DIR [VERSION ...]
        Build the Kustomize directory DIR the way `kubectl kustomize` does for the
        features deploy/kubernetes uses (resources, namespace, labels, images, strategic
        merge patches), validate every resulting object against the Kubernetes JSON schemas
        of each VERSION (PyPI `kubernetes-validate`, strict: unknown fields are errors),
        and print the objects as one JSON list.
    python3 deploy/validate.py containerfile FILE
        Parse a Containerfile (PyPI `dockerfile-parse`) and print its instructions, stages
        and base images (build arguments resolved to their defaults) as JSON.
    python3 deploy/validate.py yaml FILE ...
        Parse YAML files (every document) and print them as one JSON list.

Exit status: 0 valid, 1 not valid (the reasons on stderr), 2 bad usage. Needs the
packages pinned in tests/e2e/requirements.txt (scripts/setup-python makes .venv).
tests/e2e/deploy.rs runs it and asserts on the output.
"""

import copy
import io
import json
import os
import sys

import yaml

DEFAULT_VERSIONS = ["1.31.0", "1.37.0"]


def load_yaml(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def merge(base, patch):
    """A strategic merge patch as kustomize applies it to the fields used here: maps
    merge key by key, `null` deletes a key, lists of maps with `name` merge by name
    (new names are appended), other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(x, dict) and "name" in x for x in base + patch)
    ):
        out = [copy.deepcopy(x) for x in base]
        for item in patch:
            for i, existing in enumerate(out):
                if existing["name"] == item["name"]:
                    out[i] = merge(existing, item)
                    break
            else:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(patch)


def pod_spec(obj):
    spec = obj.get("spec", {})
    return spec.get("template", {}).get("spec") if "template" in spec else None


def build(directory):
    kustomization = load_yaml(os.path.join(directory, "kustomization.yaml"))[0]
    known = {"apiVersion", "kind", "namespace", "labels", "resources", "patches", "images"}
    unknown = set(kustomization) - known
    if unknown:
        raise ValueError(f"{directory}: kustomization fields this checker cannot build: {sorted(unknown)}")
    objects = []
    for resource in kustomization.get("resources", []):
        path = os.path.join(directory, resource)
        objects += build(path) if os.path.isdir(path) else load_yaml(path)
    for patch in kustomization.get("patches", []):
        target = patch["target"]
        (body,) = load_yaml(os.path.join(directory, patch["path"]))
        matched = [o for o in objects if o["kind"] == target["kind"] and o["metadata"]["name"] == target["name"]]
        if len(matched) != 1:
            raise ValueError(f"{directory}: patch {patch['path']} matches {len(matched)} objects")
        i = objects.index(matched[0])
        objects[i] = merge(objects[i], {k: v for k, v in body.items() if k not in ("apiVersion", "kind")})
    namespace = kustomization.get("namespace")
    for obj in objects:
        if namespace:
            obj["metadata"]["namespace"] = namespace
        for entry in kustomization.get("labels", []):
            if entry.get("includeSelectors") or entry.get("includeTemplates"):
                raise ValueError(f"{directory}: only metadata labels are supported")
            obj["metadata"].setdefault("labels", {}).update(entry["pairs"])
        spec = pod_spec(obj)
        for image in kustomization.get("images", []) if spec else []:
            for container in spec.get("containers", []) + spec.get("initContainers", []):
                if container.get("image") == image["name"]:
                    container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    return objects


def check_kubernetes(directory, versions):
    import kubernetes_validate

    objects = build(directory)
    errors = []
    for version in versions:
        for obj in objects:
            name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                errors.append(f"{name} (Kubernetes {version}): {path}: {e.message}")
            except Exception as e:  # schema missing for a kind or version
                errors.append(f"{name} (Kubernetes {version}): {e}")
    return objects, errors


def check_containerfile(path):
    from dockerfile_parse import DockerfileParser

    with open(path, "rb") as f:
        parser = DockerfileParser(fileobj=io.BytesIO(f.read()))
    # ARGs before the first FROM, with their defaults, as a build without --build-arg.
    args = {}
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            break
        if instruction["instruction"] == "ARG" and "=" in instruction["value"]:
            key, value = instruction["value"].split("=", 1)
            args[key.strip()] = value.strip()
    parser = DockerfileParser(fileobj=io.BytesIO(open(path, "rb").read()), build_args=args)
    return {
        "instructions": [
            {"instruction": i["instruction"], "value": i["value"], "line": i["startline"] + 1}
            for i in parser.structure
            if i["instruction"] != "COMMENT"
        ],
        "parent_images": parser.parent_images,
        "baseimage": parser.baseimage,
        "build_args": args,
    }, []


def main(argv):
    if len(argv) < 3 or argv[1] not in ("kubernetes", "containerfile", "yaml"):
        print(__doc__, file=sys.stderr)
        return 2
    command, rest = argv[1], argv[2:]
    try:
        if command == "kubernetes":
            out, errors = check_kubernetes(rest[0], rest[1:] or DEFAULT_VERSIONS)
        elif command == "containerfile":
            out, errors = check_containerfile(rest[0])
        else:
            out, errors = [d for p in rest for d in load_yaml(p)], []
    except (OSError, ValueError, KeyError, yaml.YAMLError) as e:
        print(f"validate: {e}", file=sys.stderr)
        return 1
    for error in errors:
        print(f"validate: {error}", file=sys.stderr)
    print(json.dumps(out, indent=1))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
