#!/usr/bin/env python3
"""Checks rendered manifests against the rules k8s/ promises, beyond schema validity:
Pod Security "restricted" settings, resources, probes, PDBs, labels, scrape annotations,
default-deny network policies and pinned images in production.

Usage: check-policy.py <rendered.yaml>... (a file named *prod* must pin its images)
"""
import sys

import yaml

errors = []

# One instance by design (no replication; a managed Redis is the HA answer, see README):
# a disruption budget or spread constraint would promise what a single pod cannot keep.
SINGLETONS = {"redis"}


def fail(where, message):
    errors.append(f"{where}: {message}")


def check_container(where, c, init=False):
    sc = c.get("securityContext", {})
    if sc.get("allowPrivilegeEscalation") is not False:
        fail(where, "allowPrivilegeEscalation must be false")
    if sc.get("readOnlyRootFilesystem") is not True:
        fail(where, "readOnlyRootFilesystem must be true")
    if sc.get("capabilities", {}).get("drop") != ["ALL"]:
        fail(where, "capabilities must drop ALL")
    if sc.get("privileged"):
        fail(where, "must not be privileged")
    res = c.get("resources", {})
    for kind in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in res.get(kind, {}):
                fail(where, f"resources.{kind}.{r} missing")
    if not init:
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if probe not in c:
                fail(where, f"{probe} missing")


def check_file(path):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    pdb_selectors = [p["spec"]["selector"]["matchLabels"] for p in by_kind.get("PodDisruptionBudget", [])]
    for w in by_kind.get("Deployment", []) + by_kind.get("StatefulSet", []):
        where = f"{path}: {w['kind']}/{w['metadata']['name']}"
        labels = w["spec"]["template"]["metadata"].get("labels", {})
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/component", "app.kubernetes.io/part-of"):
            if key not in labels:
                fail(where, f"pod label {key} missing")
        single = w["metadata"]["name"] in SINGLETONS
        if not single and not any(all(labels.get(k) == v for k, v in sel.items()) for sel in pdb_selectors):
            fail(where, "no PodDisruptionBudget selects its pods")
        spec = w["spec"]["template"]["spec"]
        psc = spec.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True:
            fail(where, "runAsNonRoot must be true")
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            fail(where, "seccompProfile must be RuntimeDefault")
        if spec.get("automountServiceAccountToken") is not False:
            fail(where, "automountServiceAccountToken must be false")
        if not single and not spec.get("topologySpreadConstraints"):
            fail(where, "topologySpreadConstraints missing")
        for c in spec.get("initContainers", []):
            check_container(f"{where} init {c['name']}", c, init=True)
        for c in spec["containers"]:
            check_container(f"{where} container {c['name']}", c)
            image = c["image"]
            if ":" not in image.rsplit("/", 1)[-1]:
                fail(where, f"image {image} has no tag")
            if "prod" in path and image.endswith(":latest"):
                fail(where, f"production must pin images, not {image}")
        if w["kind"] == "Deployment":
            ann = w["spec"]["template"]["metadata"].get("annotations", {})
            if ann.get("prometheus.io/scrape") != "true" or "prometheus.io/port" not in ann:
                fail(where, "prometheus.io/scrape and prometheus.io/port annotations missing")
    policies = by_kind.get("NetworkPolicy", [])
    if not any(p["spec"].get("podSelector") in ({}, None) and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
               and not p["spec"].get("ingress") and not p["spec"].get("egress") for p in policies):
        fail(path, "no default-deny NetworkPolicy")
    for ns in by_kind.get("Namespace", []):
        if ns["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") != "restricted":
            fail(f"{path}: Namespace/{ns['metadata']['name']}", "must enforce the restricted Pod Security Standard")
    hpas = {h["spec"]["scaleTargetRef"]["name"] for h in by_kind.get("HorizontalPodAutoscaler", [])}
    if "coordinator" not in hpas:
        fail(path, "the coordinator has no HorizontalPodAutoscaler")


for path in sys.argv[1:]:
    check_file(path)
if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
print(f"policy: {len(sys.argv) - 1} rendered overlay(s) meet the restricted profile and k8s/ conventions")
