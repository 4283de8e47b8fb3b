#!/usr/bin/env python3
"""Validates a `kustomize build` output (tests/deploy.rs): every Kubernetes object against
the Kubernetes 1.30 OpenAPI schemas with PyPI's kubernetes-validate (strict: unknown fields
are errors), the PodMonitor custom resource against podmonitor.schema.json (written here
from prometheus-operator's CRD; kubernetes-validate bundles no CRD schemas). Any other kind
it has no schema for is an error, not a skip.

    validate.py BUILD.yaml   # prints {"validated": [[kind, name, by]...], "documents": [...]}
"""

import json
import os
import sys

import jsonschema
import kubernetes_validate
import yaml

K8S = "1.30.0"
HERE = os.path.dirname(os.path.abspath(__file__))
CRDS = {("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor.schema.json"}


def check(doc):
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in CRDS:
        with open(os.path.join(HERE, CRDS[key]), encoding="utf-8") as f:
            schema = json.load(f)
        jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)
        return "crd-schema " + CRDS[key]
    kubernetes_validate.validate(doc, K8S, strict=True)
    return "kubernetes " + K8S


def main(path):
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    validated, errors = [], []
    for doc in docs:
        name = "%s/%s" % (doc.get("kind"), doc.get("metadata", {}).get("name"))
        try:
            validated.append([doc.get("kind"), doc["metadata"]["name"], check(doc)])
        except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as e:
            errors.append("%s: %s" % (name, e))
        except kubernetes_validate.utils.SchemaNotFoundError as e:
            errors.append("%s: no schema: %s" % (name, e.message))
    if errors:
        sys.stderr.write("\n".join(errors) + "\n")
        return 1
    json.dump({"validated": validated, "documents": docs}, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
