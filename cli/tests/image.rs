//! The image, built from the Dockerfile and run for real, without a Docker daemon: buildah
//! (Debian's package; `./dev test` installs it) with storage of the test's own under cargo's
//! target directory, the distroless base assembled from Debian's packages by
//! `deploy/image/build --stand-ins` (no registry is reachable here), and the binary the tests
//! built handed to the final stage (`BINARY=prebuilt`; a from-source release build inside
//! the image would take most of CI's time: `deploy/image/build` alone builds from source).
//!
//! Run from the image as uid 65532 with `buildah run --isolation chroot` (the host's network):
//! `--version`, `healthcheck` failing with nothing up, `migrate all`, then `orderflow all`
//! serving a checkout placed → paid → invoiced through the gateway, stopped by SIGTERM and
//! drained; then every role as a process of its own from the image, serving a checkout too.
//! The image has no shell and no package manager, carries its version and revision, and holds
//! only the binary, the libraries its `ldd` lists, CA certificates, time-zone data and
//! /etc/passwd and /etc/group.

use std::{
    collections::{BTreeSet, HashMap},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::{Value, json};

#[path = "support/shop.rs"]
mod shop;

const BIN: &str = env!("CARGO_BIN_EXE_orderflow");
const IN_IMAGE: &str = "/usr/local/bin/orderflow";

/// buildah with the test's own storage.
struct Buildah {
    root: PathBuf,
}

impl Buildah {
    fn new() -> Self {
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("buildah");
        std::fs::create_dir_all(&root).unwrap();
        Self { root }
    }

    fn command(&self) -> Command {
        let mut c = Command::new("buildah");
        c.arg("--root")
            .arg(self.root.join("storage"))
            .arg("--runroot")
            .arg(self.root.join("run"))
            .args(["--storage-driver", "vfs"]);
        c
    }

    /// Runs a buildah step; a failure names it.
    fn step(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().expect("buildah runs");
        assert!(
            out.status.success(),
            "buildah {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `buildah run` of the image's binary as uid 65532 with `env`.
    fn run(&self, container: &str, env: &HashMap<String, String>, args: &[&str]) -> Command {
        let mut c = self.command();
        c.args(["run", "--isolation", "chroot", "--user", "65532:65532"]);
        for (k, v) in env {
            c.arg("--env").arg(format!("{k}={v}"));
        }
        c.arg(container).arg("--").arg(IN_IMAGE).args(args);
        c
    }
}

/// Removes every container and image of the test's storage, whatever happened.
struct Cleanup<'a>(&'a Buildah);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.0.command().args(["rm", "--all"]).output();
        let _ = self.0.command().args(["rmi", "--all", "--force"]).output();
    }
}

/// A scratch directory, removed whatever happened.
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The tests' binary without its debug information (the image takes a copy per stage).
fn stripped_binary(dir: &Path) -> PathBuf {
    let out = dir.join("orderflow");
    let status = Command::new("objcopy")
        .args(["--strip-debug", BIN])
        .arg(&out)
        .status()
        .expect("objcopy (binutils) runs");
    assert!(status.success());
    out
}

/// Every regular file and symlink under `root`, as absolute paths in the image.
fn files(root: &Path, dir: &Path, into: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            files(root, &entry.path(), into);
        } else {
            into.insert(format!(
                "/{}",
                entry.path().strip_prefix(root).unwrap().display()
            ));
        }
    }
}

/// The libraries the binary links, as its dynamic loader resolves them (`ldd`).
fn linked_libraries(binary: &Path) -> Vec<String> {
    let out = Command::new("ldd").arg(binary).output().expect("ldd runs");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.starts_with("linux-vdso") {
                return None;
            }
            let path = l.split(" => ").nth(1).unwrap_or(l);
            Some(path.split(" (").next()?.trim().to_string())
        })
        .collect()
}

/// The pid of the process named `name` under `ancestor` (buildah's child's child).
fn descendant(ancestor: u32, name: &str) -> Option<u32> {
    let mut parents = HashMap::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let after = stat.rsplit_once(") ")?.1;
        let ppid: u32 = after.split(' ').nth(1)?.parse().ok()?;
        parents.insert(pid, ppid);
    }
    parents.keys().copied().find(|&pid| {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        if !exe.to_string_lossy().ends_with(name) {
            return false;
        }
        let mut p = pid;
        while let Some(&parent) = parents.get(&p) {
            if parent == ancestor {
                return true;
            }
            if parent <= 1 {
                break;
            }
            p = parent;
        }
        false
    })
}

/// A process started from the image; killed on drop if still running.
struct Running {
    name: String,
    child: std::process::Child,
    log: PathBuf,
}

impl Running {
    fn start(mut command: Command, name: &str, logs: &Path) -> Self {
        let log = logs.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = command
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .expect("buildah run starts");
        Self {
            name: name.to_string(),
            child,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM to the orderflow process in the container, as a container runtime stops it;
    /// returns its exit status once it has drained.
    async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = descendant(self.child.id(), "orderflow")
            .unwrap_or_else(|| panic!("{}: no orderflow process\n{}", self.name, self.log()));
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} did not stop after SIGTERM\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Some(pid) = descendant(self.child.id(), "orderflow") {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn until_ready(url: &str, processes: &mut [&mut Running]) {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.status() == 200
        {
            return;
        }
        for p in processes.iter_mut() {
            if let Some(status) = p.child.try_wait().unwrap() {
                panic!(
                    "{} exited ({status}) before {url} was ready\n{}",
                    p.name,
                    p.log()
                );
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} never answered 200"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A shopper's checkout through the gateway at `base`: a demo product, placed, paid by
/// card (the sandbox processor), invoiced. Returns the order.
async fn checkout(base: &str, email: &str) -> Value {
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/v1/auth/register"))
        .json(&json!({"email": email, "password": "correct horse battery staple"}))
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "register: {}",
        r.text().await.unwrap()
    );
    let token = shop::sign_in(&http, base, email).await;
    let products: Value = http
        .get(format!("{base}/v1/products?pageSize=5"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sku = products["products"][0]["sku"]
        .as_str()
        .unwrap_or_else(|| panic!("the demo catalog: {products}"))
        .to_string();
    let placed = http
        .post(format!("{base}/v1/orders"))
        .bearer_auth(&token)
        .json(&json!({"lines": [{"sku": sku, "quantity": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), 200);
    let order: Value = placed.json().await.unwrap();
    let id = order["id"].as_str().unwrap().to_string();
    let paid = http
        .post(format!("{base}/v1/orders/{id}/payments"))
        .bearer_auth(&token)
        .header("idempotency-key", format!("image-{id}"))
        .json(&json!({"card": {"number": "4242424242424242", "expMonth": 12, "expYear": 2030, "cvc": "123", "holder": "Ana Pérez"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(paid.status(), 200, "{}", paid.text().await.unwrap());
    shop::wait_until_invoiced(&http, base, &token, &id).await
}

#[tokio::test]
async fn the_image_builds_from_the_dockerfile_and_every_role_runs_from_it_as_nonroot() {
    let buildah = Buildah::new();
    let _cleanup = Cleanup(&buildah);
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("image-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&work).unwrap();
    let _scratch = ScratchDir(work.clone());
    let binary = stripped_binary(&work);

    // Built by the documented script, from the Dockerfile, unchanged.
    let tag = format!("localhost/orderflow:test-{}", uuid::Uuid::new_v4().simple());
    let built = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/image/build"
    ))
    .args(["--stand-ins", "--prebuilt"])
    .arg(&binary)
    .args(["--tag", &tag])
    .env("BUILDAH_ROOT", &buildah.root)
    .output()
    .expect("deploy/image/build runs");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );

    // Its labels and user.
    let inspect: Value =
        serde_json::from_str(&buildah.step(&["inspect", "--type", "image", &tag])).unwrap();
    let config = &inspect["OCIv1"]["config"];
    let labels = &config["Labels"];
    assert_eq!(
        labels["org.opencontainers.image.version"],
        env!("CARGO_PKG_VERSION")
    );
    let revision = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if !revision.is_empty() {
        assert_eq!(
            labels["org.opencontainers.image.revision"],
            revision.as_str()
        );
    }
    assert_eq!(config["User"], "65532:65532");
    let healthcheck = &inspect["Docker"]["config"]["Healthcheck"]["Test"];
    assert_eq!(
        healthcheck,
        &json!(["CMD", IN_IMAGE, "healthcheck"]),
        "{inspect}"
    );

    // Its files: the binary, what it links, certificates, zone data, passwd and group.
    let container = buildah.step(&["from", "--pull=never", &tag]);
    let mounted = PathBuf::from(buildah.step(&["mount", &container]));
    let mut present = BTreeSet::new();
    files(&mounted, &mounted, &mut present);
    let in_image = mounted.join(IN_IMAGE.trim_start_matches('/'));
    let mut linked = linked_libraries(&in_image);
    assert!(!linked.is_empty());
    // A linked name that is a symlink (the loader's /lib64 path) brings its target.
    for library in linked.clone() {
        if let Ok(target) = std::fs::read_link(mounted.join(library.trim_start_matches('/'))) {
            linked.push(target.to_string_lossy().into_owned());
        }
    }
    for library in &linked {
        assert!(
            present.contains(library),
            "{library} (linked) is not in the image: {present:?}"
        );
    }
    let strays: Vec<&String> = present
        .iter()
        .filter(|f| {
            !(f.as_str() == IN_IMAGE
                || linked.contains(f)
                || f.starts_with("/etc/ssl/certs/")
                || f.starts_with("/usr/share/zoneinfo/")
                || ["/etc/passwd", "/etc/group"].contains(&f.as_str()))
        })
        .collect();
    assert!(
        strays.is_empty(),
        "files the runtime does not need: {strays:?}"
    );
    let passwd = std::fs::read_to_string(mounted.join("etc/passwd")).unwrap();
    assert!(passwd.contains("nonroot:x:65532:65532"), "{passwd}");
    buildah.step(&["umount", &container]);

    let mut env: HashMap<String, String> = platform::testing::TestEnv::isolated()
        .await
        .unwrap()
        .vars
        .into_iter()
        .collect();
    env.insert("LOG_FORMAT".into(), "json".into());
    env.insert("PAYMENT_PROVIDER".into(), "sandbox".into());
    // Quiet, but for the shutdown: a stopped role says it drained.
    env.insert("RUST_LOG".into(), "warn,platform::shutdown=info".into());

    // No shell, no package manager.
    for program in ["/bin/sh", "/usr/bin/apt-get", "/usr/bin/dpkg"] {
        let mut c = buildah.command();
        let out = c
            .args(["run", "--isolation", "chroot", &container, "--", program])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{program} ran in the image");
    }
    let out = buildah
        .run(&container, &env, &["--version"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("orderflow {}", env!("CARGO_PKG_VERSION"))
    );
    let nothing_up = platform::testing::free_listen_addr();
    let out = buildah
        .run(
            &container,
            &HashMap::from([(
                "HEALTHCHECK_URL".to_string(),
                format!("http://{nothing_up}/health/ready"),
            )]),
            &["healthcheck"],
        )
        .output()
        .unwrap();
    assert!(!out.status.success(), "healthcheck passed with nothing up");
    let out = buildah
        .run(&container, &env, &["migrate", "all"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for service in ["iam", "catalog", "order", "payment", "dte"] {
        assert!(
            String::from_utf8_lossy(&out.stdout)
                .contains(&format!("{service}: migrations applied")),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    // `orderflow all`: ready, a checkout, SIGTERM, drained.
    let gateway = platform::testing::free_listen_addr();
    let mut all_env = env.clone();
    all_env.insert("GATEWAY_ADDR".into(), gateway.to_string());
    let mut all = Running::start(buildah.run(&container, &all_env, &["all"]), "all", &work);
    let base = format!("http://{gateway}");
    until_ready(&format!("{base}/health/ready"), &mut [&mut all]).await;
    let order = checkout(&base, "ana@example.cl").await;
    assert!(order["documentStatus"].is_string(), "{order}");
    let log = all.log.clone();
    let status = all.terminate().await;
    let log = std::fs::read_to_string(log).unwrap_or_default();
    assert!(status.success(), "orderflow all exited {status}\n{log}");
    assert!(log.contains("draining"), "{log}");

    // Each role as a process of its own, from the image, on the same database and broker.
    let mut roles_env = env.clone();
    cli::chaos::wire_separate_roles(&mut roles_env);
    let mut roles = Vec::new();
    for role in std::iter::once("sii-sim").chain(cli::chaos::ROLES.iter().copied()) {
        roles.push(Running::start(
            buildah.run(&container, &roles_env, &[role]),
            role,
            &work,
        ));
    }
    for role in cli::chaos::ROLES {
        let mut refs: Vec<&mut Running> = roles.iter_mut().collect();
        let addr = &roles_env[cli::chaos::admin_setting(role)];
        until_ready(&format!("http://{addr}/health/ready"), &mut refs).await;
    }
    let base = format!("http://{}", roles_env["GATEWAY_ADDR"]);
    checkout(&base, "beto@example.cl").await;
    for role in roles.into_iter().rev() {
        let name = role.name.clone();
        let log = role.log.clone();
        let status = role.terminate().await;
        assert!(
            status.success(),
            "{name} exited {status} after SIGTERM\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
}
