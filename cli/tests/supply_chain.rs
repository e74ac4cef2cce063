//! The supply chain: the CycloneDX SBOM of the binary (`deploy/image/sbom`, cargo-cyclonedx)
//! lists every crate of `Cargo.lock` that the binary links, at its locked version; and
//! cargo-deny accepts the graph's licences, bans and sources under `deny.toml`. The tools
//! come from crates.io into a directory under cargo's target directory (built once).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const CARGO_DENY: &str = "0.20.2";

/// `cargo install --locked` of `krate` at `version` under the target directory, once (a
/// root per tool: the two tests install theirs at the same time).
fn tool(krate: &str, version: &str, program: &str) -> PathBuf {
    let root = Path::new(WORKSPACE).join("target/tools").join(krate);
    let bin = root.join("bin").join(program);
    let installed = Command::new(&bin)
        .args([program.trim_start_matches("cargo-"), "--version"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(version));
    if !installed {
        let status = Command::new(env!("CARGO"))
            .args(["install", "--locked", "--quiet", "--root"])
            .arg(&root)
            .args([krate, "--version", version])
            .status()
            .expect("cargo install runs");
        assert!(status.success(), "cargo install {krate} {version} failed");
    }
    bin
}

/// The crates compiled into the binary: the cli package's normal dependencies, all the way
/// down, for the target (not build scripts, not proc macros: they run at build time only).
fn linked_crates() -> BTreeSet<String> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .args(["--filter-platform", "x86_64-unknown-linux-gnu"])
        .current_dir(WORKSPACE)
        .output()
        .unwrap();
    assert!(out.status.success());
    let metadata: Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages: std::collections::HashMap<&str, &Value> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p))
        .collect();
    let nodes: std::collections::HashMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let is_proc_macro = |id: &str| {
        packages[id]["targets"].as_array().unwrap().iter().any(|t| {
            t["kind"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k == "proc-macro")
        })
    };
    let root = packages
        .values()
        .find(|p| p["name"] == "cli")
        .map(|p| p["id"].as_str().unwrap())
        .unwrap();
    let mut seen = BTreeSet::new();
    let mut todo = vec![root];
    while let Some(id) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null());
            let dep_id = dep["pkg"].as_str().unwrap();
            if normal && !is_proc_macro(dep_id) {
                todo.push(dep_id);
            }
        }
    }
    seen.into_iter()
        .filter(|id| packages[id]["source"].is_string())
        .map(|id| {
            format!(
                "{}@{}",
                packages[id]["name"].as_str().unwrap(),
                packages[id]["version"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn the_sbom_lists_every_crate_the_binary_links() {
    let cyclonedx = tool("cargo-cyclonedx", "0.5.9", "cargo-cyclonedx");
    let out = Command::new(Path::new(WORKSPACE).join("deploy/image/sbom"))
        .env("CARGO_CYCLONEDX", &cyclonedx)
        .current_dir(WORKSPACE)
        .output()
        .expect("deploy/image/sbom runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = Path::new(WORKSPACE).join(String::from_utf8_lossy(&out.stdout).trim());
    let sbom: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(sbom["bomFormat"], "CycloneDX");
    let mut listed = BTreeSet::new();
    let mut stack: Vec<&Value> = sbom["components"].as_array().unwrap().iter().collect();
    while let Some(c) = stack.pop() {
        listed.insert(format!(
            "{}@{}",
            c["name"].as_str().unwrap_or_default(),
            c["version"].as_str().unwrap_or_default()
        ));
        if let Some(children) = c["components"].as_array() {
            stack.extend(children);
        }
    }
    let linked = linked_crates();
    assert!(linked.len() > 100, "{linked:?}");
    let missing: Vec<&String> = linked.iter().filter(|c| !listed.contains(*c)).collect();
    assert!(
        missing.is_empty(),
        "crates the binary links that the SBOM does not list: {missing:?}"
    );
}

#[test]
fn cargo_deny_accepts_the_licences_bans_and_sources() {
    let deny = tool("cargo-deny", CARGO_DENY, "cargo-deny");
    let out = Command::new(deny)
        .args(["--all-features", "check", "licenses", "bans", "sources"])
        .current_dir(WORKSPACE)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
