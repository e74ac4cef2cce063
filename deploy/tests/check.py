"""Checks of the deployment files, run by `cargo test` (cli/tests/deploy.rs) in a virtualenv
holding the validators: `python check.py <check>`; exits non-zero with the findings.

Checks: compose, gitlab, dockerfile, chart-lint, chart-policy, istio, istio-schemas.
"""

import asyncio
import copy
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "orderflow"
ISTIO = ROOT / "deploy" / "istio"
VALUE_FILES = ["values.yaml", "values-staging.yaml", "values-production.yaml"]
ROLES = ["gateway", "iam", "catalog", "order", "order-projector", "payment", "dte"]
BIN = pathlib.Path(sys.executable).parent


def run(*args, **kwargs):
    return subprocess.run(args, capture_output=True, text=True, **kwargs)


def expect_ok(result, what):
    if result.returncode != 0:
        sys.exit(f"{what} failed:\n{result.stdout}\n{result.stderr}")


def deep_merge(base, override):
    merged = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def values_for(name):
    base = yaml.safe_load((CHART / "values.yaml").read_text())
    if name == "values.yaml":
        return base
    return deep_merge(base, yaml.safe_load((CHART / name).read_text()))


def validate_schema(builtin, path, what):
    """Validates `path` against one of check-jsonschema's built-in vendor schemas."""
    expect_ok(run(sys.executable, "-m", "check_jsonschema", "--builtin-schema", builtin, str(path)),
              f"{path.name} against the {what} schema")


def check_compose():
    validate_schema("vendor.compose-spec", ROOT / "docker-compose.dev.yml", "compose-spec")
    compose = yaml.safe_load((ROOT / "docker-compose.dev.yml").read_text())
    services = compose["services"]
    for role in ["gateway", "iam", "catalog", "order", "order-projector", "payment"]:
        assert role in services, f"compose has no {role} container"
        assert services[role]["command"] == [role], role
        assert services[role]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["command"] == ["migrate", "all"]
    assert services["gateway"]["ports"] == ["127.0.0.1:8080:8080"]
    for infra in ["postgres", "rabbitmq", "redis"]:
        assert "healthcheck" in services[infra], infra
        assert ":" in services[infra]["image"], f"{infra} image is pinned to a version"


def check_gitlab():
    validate_schema("vendor.gitlab-ci", ROOT / ".gitlab-ci.yml", "GitLab CI")
    ci = yaml.safe_load((ROOT / ".gitlab-ci.yml").read_text())
    assert "./dev test" in ci["test"]["script"], "the pipeline runs the README's test command"
    prod = ci["deploy-production"]
    assert prod["rules"][0]["when"] == "manual"
    assert prod["environment"]["name"] == "production"
    assert ci["deploy-staging"]["environment"]["name"] == "staging"
    text = (ROOT / ".gitlab-ci.yml").read_text()
    assert ":latest" not in text, "never latest"
    assert "--atomic" in text and "image.tag=\"$CI_COMMIT_SHA\"" in text


def check_dockerfile():
    dockerfile = ROOT / "Dockerfile"
    expect_ok(run(str(BIN / "hadolint"), "--failure-threshold", "warning", str(dockerfile)),
              "hadolint Dockerfile")
    text = dockerfile.read_text()
    # The build stage builds what the tests build (in release).
    assert "cargo build --release --locked --bin orderflow" in text
    assert "USER 65532:65532" in text
    instructions = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert any(line.startswith("HEALTHCHECK") for line in instructions)
    assert '"healthcheck"' in text
    assert not any("curl" in line for line in instructions), "no curl in the image"
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert "target/" in ignore and ".git/" in ignore


async def lint(chart_dir):
    from helm_sdkpy import Configuration, Lint
    return await Lint(Configuration()).run(str(chart_dir))


def lint_with(values):
    with tempfile.TemporaryDirectory() as tmp:
        chart = pathlib.Path(tmp) / "orderflow"
        shutil.copytree(CHART, chart)
        (chart / "values.yaml").write_text(yaml.safe_dump(values))
        result = asyncio.run(lint(chart))
    return [m for m in result.get("Messages") or [] if m["Severity"] >= 2], result


def check_chart_lint():
    for name in VALUE_FILES:
        values = deep_merge(values_for(name), {"image": {"tag": "0123456789abcdef"}})
        problems, result = lint_with(values)
        if problems or result.get("Errors"):
            sys.exit(f"helm lint with {name}: {json.dumps(result)}")
    # The chart refuses `latest` (and so the check above can fail).
    problems, _ = lint_with(deep_merge(values_for("values.yaml"), {"image": {"tag": "latest"}}))
    assert problems, "a latest tag must not lint clean"


def role_settings(values, role):
    return deep_merge(values["defaults"], values["services"][role])


def check_chart_policy():
    templates = {p.name: p.read_text() for p in (CHART / "templates").glob("*.yaml")}
    per_role = ["deployment.yaml", "service.yaml", "hpa.yaml", "vpa.yaml", "pdb.yaml",
                "serviceaccount.yaml", "networkpolicy.yaml", "servicemonitor.yaml"]
    for name in per_role:
        assert "range $name, $raw := .Values.services" in templates[name], \
            f"{name} is rendered for every role"
    deployment = templates["deployment.yaml"]
    for needle in ["livenessProbe", "readinessProbe", "startupProbe", "/health/live",
                   "/health/ready", "preStop", "terminationGracePeriodSeconds",
                   "topologySpreadConstraints", "podAntiAffinity", "resources:",
                   "securityContext:", "maxUnavailable: 0", "type: Recreate"]:
        assert needle in deployment, f"the Deployment template has no {needle}"
    assert "orderflow.image" in deployment
    assert "image.tag must not be latest" in (CHART / "templates" / "_helpers.tpl").read_text()
    assert "helm.sh/hook: pre-install,pre-upgrade" in templates["migrate-job.yaml"]
    assert "pg_dump" in templates["backup-cronjob.yaml"]
    for name in VALUE_FILES:
        values = values_for(name)
        assert sorted(values["services"]) == sorted(ROLES), f"{name}: roles"
        sc = values["securityContext"]
        assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"]
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
        assert values["podSecurityContext"]["runAsNonRoot"]
        for role in ROLES:
            s = role_settings(values, role)
            where = f"{name}: {role}"
            for kind in ["requests", "limits"]:
                assert {"cpu", "memory"} <= set(s["resources"][kind]), f"{where}: {kind}"
            assert s["vpa"]["enabled"] and s["pdb"]["enabled"], where
            assert s["vpa"]["updateMode"] in ("Off", "Initial") or not s["hpa"]["enabled"] \
                or s["vpa"]["controlledResources"] == ["memory"], \
                f"{where}: the VPA must not fight the HPA"
            if role == "order-projector":
                assert s.get("singleton") and s["replicas"] == 1 and not s["hpa"]["enabled"], where
            else:
                assert s["hpa"]["enabled"], f"{where}: HPA"
                assert s["hpa"]["behavior"]["scaleUp"] and s["hpa"]["behavior"]["scaleDown"], where
        dte = role_settings(values, "dte")
        assert any(m["name"] == "dte_processing_rate" for m in dte["hpa"]["customMetrics"])
        if dte.get("env", {}).get("DTE_SII_ENVIRONMENT") == "production":
            cert = dte.get("certificate") or {}
            assert {"secretName", "file", "passwordKey"} <= set(cert), \
                f"{name}: production DTE needs the company's certificate"
        assert values["image"].get("tag", "") != "latest"


def istio_objects(overlay):
    result = run("kubectl", "kustomize", str(ISTIO / "overlays" / overlay))
    expect_ok(result, f"kubectl kustomize {overlay}")
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def check_istio():
    values = values_for("values.yaml")
    api_roles = [r for r in ROLES if values["services"][r].get("grpcPort") or r == "gateway"]
    for overlay in ["staging", "production"]:
        objects = istio_objects(overlay)
        by_kind = {}
        for o in objects:
            assert o["metadata"]["namespace"] == f"orderflow-{overlay}", o["metadata"]
            by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
        assert by_kind["PeerAuthentication"]["default"]["spec"]["mtls"]["mode"] == "STRICT"
        for role in api_roles:
            host = f"orderflow-{role}"
            dr = by_kind["DestinationRule"][host]["spec"]
            assert dr["host"] == host
            assert dr["trafficPolicy"]["outlierDetection"]["consecutive5xxErrors"] > 0, host
            assert dr["trafficPolicy"]["connectionPool"]["http"]["http2MaxRequests"] > 0, host
            policy = by_kind["AuthorizationPolicy"][host]["spec"]
            allowed = sorted(p.split("/sa/orderflow-")[1]
                             for rule in policy["rules"] for f in rule.get("from", [])
                             for p in f["source"].get("principals", []))
            callers = sorted(c for c in values["services"][role]["callers"] if c != "ingress")
            assert allowed == callers, f"{host}: allows {allowed}, the architecture has {callers}"
            if role != "gateway":
                routes = by_kind["VirtualService"][host]["spec"]["http"]
                default = [r for r in routes if r["name"] == "default"][0]
                assert default["retries"]["attempts"] == 0, f"{host}: writes are never retried"
                assert "timeout" in default, host
                for r in routes:
                    if r["name"] == "idempotent":
                        for m in r["match"]:
                            method = m["uri"]["exact"].rsplit("/", 1)[1]
                            assert method.startswith(("Get", "List", "Reserve", "Commit",
                                                      "Release", "Verify")), \
                                f"{host}: {method} retried but not idempotent"
        public = by_kind["VirtualService"]["orderflow-public"]["spec"]
        host = "staging.shop.example.cl" if overlay == "staging" else "shop.example.cl"
        assert public["hosts"] == [host]
        assert by_kind["Gateway"]["orderflow"]["spec"]["servers"][0]["tls"]["mode"] == "SIMPLE"


# Istio's CRD schemas as an npm package (validated with its own generated validators).
ISTIO_SCHEMAS = "@kubernetes-models/istio@3.0.1"


def check_istio_schemas():
    """Every object of both overlays against Istio's CRD schemas."""
    tools = pathlib.Path(os.environ["DEPLOY_NODE_TOOLS"])
    marker = tools / "installed.txt"
    if not marker.exists() or marker.read_text() != ISTIO_SCHEMAS:
        tools.mkdir(parents=True, exist_ok=True)
        expect_ok(run("npm", "install", "--no-audit", "--no-fund", "--prefix", str(tools),
                      ISTIO_SCHEMAS), f"npm install {ISTIO_SCHEMAS}")
        marker.write_text(ISTIO_SCHEMAS)
    # ES modules resolve packages next to the importing file: run the script from there.
    script = tools / "validate-istio.mjs"
    shutil.copyfile(ROOT / "deploy" / "tests" / "validate-istio.mjs", script)
    with tempfile.TemporaryDirectory() as scratch:
        for overlay in ["staging", "production"]:
            rendered = pathlib.Path(scratch) / f"{overlay}.json"
            rendered.write_text(json.dumps(istio_objects(overlay)))
            expect_ok(run("node", str(script), str(rendered)),
                      f"the {overlay} overlay against Istio's CRD schemas")


CHECKS = {
    "compose": check_compose,
    "gitlab": check_gitlab,
    "dockerfile": check_dockerfile,
    "chart-lint": check_chart_lint,
    "chart-policy": check_chart_policy,
    "istio": check_istio,
    "istio-schemas": check_istio_schemas,
}

if __name__ == "__main__":
    CHECKS[sys.argv[1]]()
    print(f"{sys.argv[1]}: ok")
