"""Validates deploy/ offline: every Kubernetes object against the Kubernetes
API schemas (kubernetes-validate, strict), KEDA and Prometheus Operator objects
against their CRD schemas (as packaged by cloudcoil's generated models, made
strict: an unknown field fails), and docker-compose.yml against the Compose
Specification's schema (check-jsonschema's vendored copy).

RabbitMQ Cluster Operator and CloudNativePG objects have no schema packaged
on a registry this project can reach; they are checked against the short
schemas below, written from the operators' API references, and that is all.
"""
import glob
import subprocess
import sys

import jsonschema
import yaml

CORE_GROUPS = ("v1", "apps/v1", "batch/v1", "policy/v1", "networking.k8s.io/v1", "autoscaling/v2")

RABBITMQ = {
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "replicas": {"type": "integer", "minimum": 1},
                    "image": {"type": "string"},
                    "persistence": {"type": "object", "additionalProperties": False,
                                    "properties": {"storage": {"type": "string"}, "storageClassName": {"type": "string"}}},
                    "resources": {"type": "object"},
                    "rabbitmq": {"type": "object", "additionalProperties": False, "properties": {
                        "additionalPlugins": {"type": "array", "items": {"type": "string"}},
                        "additionalConfig": {"type": "string"},
                        "advancedConfig": {"type": "string"},
                        "envConfig": {"type": "string"}}},
                },
            }
        },
    },
    ("rabbitmq.com/v1beta1", "Policy"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "pattern", "definition", "rabbitmqClusterReference"],
                "properties": {
                    "name": {"type": "string"},
                    "vhost": {"type": "string"},
                    "pattern": {"type": "string"},
                    "applyTo": {"enum": ["queues", "exchanges", "all", "classic_queues", "quorum_queues", "streams"]},
                    "priority": {"type": "integer"},
                    "definition": {"type": "object"},
                    "rabbitmqClusterReference": {"type": "object", "required": ["name"]},
                },
            }
        },
    },
}


# CloudNativePG (postgresql.cnpg.io/v1), the fields deploy/k8s/postgres.yaml uses and their neighbours.
CNPG = {
    ("postgresql.cnpg.io/v1", "Cluster"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["instances", "storage"],
                "properties": {
                    "instances": {"type": "integer", "minimum": 1},
                    "imageName": {"type": "string"},
                    "primaryUpdateStrategy": {"enum": ["unsupervised", "supervised"]},
                    "postgresql": {"type": "object", "additionalProperties": False, "properties": {
                        "parameters": {"type": "object", "additionalProperties": {"type": "string"}},
                        "pg_hba": {"type": "array", "items": {"type": "string"}},
                        "synchronous": {"type": "object", "additionalProperties": False, "required": ["method", "number"], "properties": {
                            "method": {"enum": ["any", "first"]},
                            "number": {"type": "integer", "minimum": 1},
                            "maxStandbyNamesFromCluster": {"type": "integer"},
                            "standbyNamesPre": {"type": "array", "items": {"type": "string"}},
                            "standbyNamesPost": {"type": "array", "items": {"type": "string"}},
                            "dataDurability": {"enum": ["required", "preferred"]}}}}},
                    "bootstrap": {"type": "object", "additionalProperties": False, "properties": {
                        "initdb": {"type": "object", "additionalProperties": False, "properties": {
                            "database": {"type": "string"}, "owner": {"type": "string"},
                            "secret": {"type": "object", "additionalProperties": False, "required": ["name"],
                                       "properties": {"name": {"type": "string"}}}}}}},
                    "enableSuperuserAccess": {"type": "boolean"},
                    "storage": {"$ref": "#/$defs/storage"},
                    "walStorage": {"$ref": "#/$defs/storage"},
                    "resources": {"type": "object"},
                    "affinity": {"type": "object", "additionalProperties": False, "properties": {
                        "enablePodAntiAffinity": {"type": "boolean"},
                        "topologyKey": {"type": "string"},
                        "podAntiAffinityType": {"enum": ["preferred", "required"]},
                        "nodeSelector": {"type": "object"}, "tolerations": {"type": "array"}}},
                    "monitoring": {"type": "object", "additionalProperties": False, "properties": {
                        "enablePodMonitor": {"type": "boolean"}}},
                },
            }
        },
        "$defs": {"storage": {"type": "object", "additionalProperties": False, "required": ["size"], "properties": {
            "size": {"type": "string", "pattern": "^[0-9]+(Mi|Gi|Ti)$"}, "storageClass": {"type": "string"}}}},
    },
    ("postgresql.cnpg.io/v1", "Pooler"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["cluster", "pgbouncer"],
                "properties": {
                    "cluster": {"type": "object", "additionalProperties": False, "required": ["name"],
                                "properties": {"name": {"type": "string"}}},
                    "instances": {"type": "integer", "minimum": 0},
                    "type": {"enum": ["rw", "ro", "r"]},
                    "pgbouncer": {"type": "object", "additionalProperties": False, "properties": {
                        "poolMode": {"enum": ["session", "transaction"]},
                        "parameters": {"type": "object", "additionalProperties": {"type": "string"}},
                        "paused": {"type": "boolean"}}},
                },
            }
        },
    },
}


def strict(schema):
    """Every object that lists its properties admits no others (kubeconform's -strict)."""
    if isinstance(schema, dict):
        if schema.get("type") == "object" and "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        for v in schema.values():
            strict(v)
    elif isinstance(schema, list):
        for v in schema:
            strict(v)
    return schema


def crd_schemas():
    from cloudcoil.models.keda.v1alpha1 import ScaledObject, TriggerAuthentication
    from cloudcoil.models.prometheus_operator.v1 import ServiceMonitor

    out = {}
    for api, kind, model in [
        ("keda.sh/v1alpha1", "ScaledObject", ScaledObject),
        ("keda.sh/v1alpha1", "TriggerAuthentication", TriggerAuthentication),
        ("monitoring.coreos.com/v1", "ServiceMonitor", ServiceMonitor),
    ]:
        schema = strict(model.model_json_schema(by_alias=True, mode="validation"))
        # metadata is ObjectMeta, checked by Kubernetes itself.
        schema["properties"]["metadata"] = {"type": "object"}
        out[(api, kind)] = schema
    return out


def main():
    failures = 0
    schemas = {**crd_schemas(), **RABBITMQ, **CNPG}
    core_files = []
    counted = {}
    for path in sorted(glob.glob("deploy/k8s/*.yaml")):
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for d in docs:
            key = (d.get("apiVersion"), d.get("kind"))
            counted[key] = counted.get(key, 0) + 1
            if key[0] in CORE_GROUPS:
                if path not in core_files:
                    core_files.append(path)
                continue
            schema = schemas.get(key)
            if schema is None:
                print(f"FAIL {path}: {key[1]} ({key[0]}) has no schema to check it against")
                failures += 1
                continue
            errors = list(jsonschema.Draft202012Validator(schema).iter_errors(d))
            for e in errors:
                print(f"FAIL {path}: {key[1]}/{d['metadata'].get('name')}: {'.'.join(map(str, e.absolute_path))}: {e.message}")
            failures += len(errors)
    r = subprocess.run(["kubernetes-validate", "--strict", "--quiet", *core_files], capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout + r.stderr)
        failures += 1
    r = subprocess.run(["check-jsonschema", "--builtin-schema", "vendor.compose-spec", "docker-compose.yml"], capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout + r.stderr)
        failures += 1
    for (api, kind), n in sorted(counted.items()):
        print(f"  {n:2} {kind} ({api})")
    if failures:
        print(f"deploy: {failures} problem(s)")
        sys.exit(1)
    print("deploy: every manifest and docker-compose.yml valid")


if __name__ == "__main__":
    main()
