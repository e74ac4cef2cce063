//! `orderflow`: one binary, one subcommand per role.

use std::io::BufRead as _;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use platform::config::{CommonSettings, ProcessEnv, Reader};

#[derive(Parser)]
#[command(name = "orderflow", version, about = "orderflow: an online shop for Chile, as microservices", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every role in one process (gateway on GATEWAY_ADDR, default 0.0.0.0:8080), with
    /// migrations applied at start. The local default.
    All,
    /// The REST/JSON gateway alone.
    Gateway,
    /// IAM: users, roles, tokens (gRPC on IAM_GRPC_ADDR).
    Iam {
        #[command(subcommand)]
        command: Option<IamCommand>,
    },
    /// The catalog: products, stock, reservations (gRPC on CATALOG_GRPC_ADDR).
    Catalog {
        #[command(subcommand)]
        command: Option<CatalogCommand>,
    },
    /// Orders: the API, payment and DTE reactions, expiry, and the event relay (gRPC on
    /// ORDER_GRPC_ADDR).
    Order {
        #[command(subcommand)]
        command: Option<OrderCommand>,
    },
    /// The order read-model projector (one leads per database, others stand by).
    OrderProjector,
    /// Payments: captures and refunds through the card processor (gRPC on
    /// PAYMENT_GRPC_ADDR).
    Payment,
    /// Electronic tax documents: CAFs, folios, signed documents (gRPC on DTE_GRPC_ADDR).
    Dte {
        #[command(subcommand)]
        command: Option<DteCommand>,
    },
    /// A local SII (on SII_SIM_ADDR, default 127.0.0.1:8090): seed, token, DTEUpload, the
    /// boleta API and status queries, judging uploads as the SII does.
    SiiSim,
    /// A local Webpay Plus (on WEBPAY_SIM_ADDR, default 127.0.0.1:8091): Transbank's REST
    /// API (create, commit, status, refunds; it checks WEBPAY_COMMERCE_CODE and
    /// WEBPAY_API_KEY_SECRET) and the payment page with the integration test cards.
    WebpaySim,
    /// Applies a service's migrations to its schema and exits (the Helm pre-upgrade Job).
    Migrate {
        /// The service: `iam`, `catalog`, `order`, `payment`, `dte`, or `all`.
        service: String,
    },
    /// Simulated shoppers against a gateway: a weighted mix of browse, checkout and
    /// read-back over the REST API, then a latency/throughput table (exits 1 when the
    /// error ratio exceeds --max-error-ratio).
    Loadgen(cli::loadgen::Options),
    /// Prints a new internal key (Ed25519, PKCS#8 PEM) for INTERNAL_TOKEN_KEY: every role
    /// of a deployment signs and verifies its gRPC calls' credentials with it.
    InternalKey {
        /// Write it to this file instead (for INTERNAL_TOKEN_KEY_FILE), unless the file
        /// already holds a key: then it is kept.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Writes a development CA and a certificate per role into DIR (kept when present) for
    /// mutual TLS between the roles without a mesh (GRPC_TLS_*). NOT for production.
    DevCerts {
        /// Where to write ca.pem, <role>.pem and <role>-key.pem.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// What landed in a service's dead-letter queue: list it, replay it once the cause is
    /// fixed, or drop it.
    DeadLetters {
        #[command(subcommand)]
        command: DeadLetterCommand,
    },
    /// The services' RabbitMQ queues.
    Queues {
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Copies this executable to a file (mode 0755), so that another image can run it: the
    /// chart's restore drill runs `orderflow order verify-restore` beside the Postgres
    /// image's pg_restore (this image has no shell to copy with).
    CopySelf {
        /// Where to write it.
        #[arg(long)]
        to: std::path::PathBuf,
    },
    /// Checks what must hold across the services' stores once the suite is quiet (every
    /// reservation ended as its order, payments settled, paid orders invoiced once, folios
    /// gapless, read model = event store, outboxes drained, dead-letter queues empty),
    /// prints the table and exits 1 when one fails.
    Invariants {
        /// Re-check until every invariant holds or this much time passed (e.g. `60s`), for
        /// a suite that may still be finishing a saga.
        #[arg(long, default_value = "0s", value_parser = cli::loadgen::parse_duration)]
        patience: std::time::Duration,
        /// Print the table as JSON.
        #[arg(long)]
        json: bool,
    },
    /// A fault drill: every role as its own process (each behind proxies of its own to
    /// Postgres, RabbitMQ and Redis), the load generator's shoppers checking out while roles
    /// are killed or stopped and servers taken away from them (issue 24's scenario), then
    /// the faults, the load and the invariant table; exits 1 when one fails. Takes
    /// DATABASE_URL (give it a database of its own), AMQP_URL, REDIS_URL,
    /// INTERNAL_TOKEN_KEY and the names (AMQP_EXCHANGE, AMQP_QUEUE_PREFIX, REDIS_KEY_PREFIX)
    /// from the environment. `bench/chaos` runs it.
    Chaos {
        /// Shoppers.
        #[arg(long, default_value_t = 16)]
        users: usize,
        /// How long the load runs; the faults are spread over it.
        #[arg(long, default_value = "60s", value_parser = cli::loadgen::parse_duration)]
        duration: std::time::Duration,
        /// How long the suite may take to settle before the invariants must hold (at
        /// least the reservation sweeper's grace, 30 s, plus a sweep).
        #[arg(long, default_value = "90s", value_parser = cli::loadgen::parse_duration)]
        patience: std::time::Duration,
        /// Where the roles' logs go.
        #[arg(long, default_value = "target/chaos")]
        logs: std::path::PathBuf,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Prints the OpenAPI 3.1 document of the REST API (what the gateway serves at
    /// /openapi.json), generated from the protos.
    Openapi,
    /// Exits 0 when the readiness endpoint answers 200 (for Docker HEALTHCHECK).
    Healthcheck {
        /// The endpoint to probe.
        #[arg(
            long,
            env = "HEALTHCHECK_URL",
            default_value = "http://127.0.0.1:8080/health/ready"
        )]
        url: String,
    },
}

#[derive(Subcommand)]
enum QueueCommand {
    /// Turns every service's classic queues (work, retry, dead; from a version before
    /// quorum queues) into quorum queues, keeping their messages. Stop the services'
    /// consumers first; a queue already quorum is left alone, so it is safe to run twice.
    Migrate,
}

#[derive(Subcommand)]
enum DeadLetterCommand {
    /// What is in `<queue>.dead` and why (nothing is removed).
    List {
        /// The work queue (with AMQP_QUEUE_PREFIX): catalog, order, payment or dte.
        #[arg(long)]
        queue: String,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Sends dead letters back to their work queue, attempts reset.
    Replay {
        /// The work queue.
        #[arg(long)]
        queue: String,
        /// The event ids to replay (as `list` shows them).
        #[arg(long = "id", required_unless_present = "all")]
        ids: Vec<String>,
        /// Replay every dead letter of the queue.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
    /// Removes dead letters for good.
    Drop {
        /// The work queue.
        #[arg(long)]
        queue: String,
        /// The event ids to drop.
        #[arg(long = "id", required = true)]
        ids: Vec<String>,
        /// Confirms: dropped messages cannot be recovered.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// Loads the demo catalog (55 products a Chilean shop sells); existing SKUs are kept.
    Seed,
}

#[derive(Subcommand)]
enum OrderCommand {
    /// Rebuilds the order read model from the event store into fresh tables and swaps
    /// them in (the API keeps serving the old tables meanwhile).
    RebuildProjections,
    /// Restore drill: restores an event-store dump (pg_dump --format=custom) into a scratch
    /// database, checks it (streams 1..n, global order, nothing newer than the dump),
    /// rebuilds the read model there, compares it with this database (ORDER_DATABASE_URL),
    /// reports, and drops the scratch database. Exits 0 only when every check holds.
    VerifyRestore {
        /// The dump file.
        #[arg(long = "from")]
        dump: std::path::PathBuf,
        /// A database on the server to create the scratch database on (needs CREATEDB);
        /// by default the order database's server.
        #[arg(long, env = "RESTORE_SCRATCH_DATABASE_URL")]
        scratch_url: Option<String>,
        /// The pg_restore program (as new as the pg_dump that wrote the dump).
        #[arg(long, env = "PG_RESTORE", default_value = "pg_restore")]
        pg_restore: std::path::PathBuf,
        /// Keep the scratch database afterwards, to look into a failure.
        #[arg(long)]
        keep_scratch: bool,
    },
}

#[derive(Subcommand)]
enum DteCommand {
    /// Writes a development CAF (a fresh key, NOT issued by the SII) to standard output,
    /// for the company DTE_RUT_EMISOR / DTE_RAZON_SOCIAL.
    FakeCaf {
        /// The TipoDTE: 33, 34, 39, 41, 56 or 61.
        #[arg(long = "type")]
        tipo: i32,
        /// The first folio.
        #[arg(long, default_value_t = 1)]
        from: i64,
        /// The last folio.
        #[arg(long, default_value_t = 1000)]
        to: i64,
    },
    /// Verifies received EnvioDTE / EnvioBOLETA / DTE files: schema, signatures, TED and
    /// the TED against the document. Exits 0 only when every check of every file holds.
    Verify {
        /// The XML files.
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
    },
    /// Receives envelopes suppliers sent (EnvioDTE, or lone DTEs) from files at hand, as
    /// `POST /v1/dte/received` does: each stored with its checks, each document once. Exits
    /// 0 when every file was received and every document in it is valid.
    Receive {
        /// The XML files.
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
enum IamCommand {
    /// Creates the first admin (or grants admin to an existing account).
    CreateAdmin {
        /// The admin's email.
        #[arg(long)]
        email: String,
        /// Read the password from standard input (one line) instead of asking.
        #[arg(long, required = true)]
        password_stdin: bool,
    },
}

/// The roles that serve or call gRPC, each with its own certificate under mTLS.
const ROLES_WITH_GRPC: &[&str] = &["gateway", "iam", "catalog", "order", "payment", "dte"];

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("orderflow: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("orderflow: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    if let Command::Healthcheck { url } = &cli.command {
        return Ok(match cli::healthcheck::probe(url).await {
            Ok(200) => std::process::ExitCode::SUCCESS,
            Ok(status) => {
                eprintln!("not ready: {url} answered {status}");
                std::process::ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("not ready: {e:#}");
                std::process::ExitCode::FAILURE
            }
        });
    }
    if let Command::Chaos {
        users,
        duration,
        patience,
        logs,
        json,
    } = &cli.command
    {
        let env: std::collections::HashMap<String, String> = std::env::vars().collect();
        let exe = std::env::current_exe().context("finding this binary to start the roles")?;
        eprintln!(
            "chaos: starting every role as its own process (logs in {})",
            logs.display()
        );
        let cluster = std::sync::Arc::new(cli::chaos::Cluster::start(&exe, env, logs).await?);
        let outcome = cli::chaos::run(
            cluster.clone(),
            &cli::chaos::RunOptions {
                users: *users,
                duration: *duration,
                patience: *patience,
            },
        )
        .await;
        cluster.stop().await;
        let outcome = outcome?;
        return Ok(verdict(
            *json,
            outcome.to_json(),
            &outcome,
            outcome.passed(),
        ));
    }
    if let Command::Invariants { patience, json } = &cli.command {
        let env = ProcessEnv;
        let common = CommonSettings::from_source(&Reader::new(&env))?;
        let stores = cli::invariants::Stores::open(&common).await?;
        let report = cli::invariants::check_until(&stores, *patience).await;
        stores.close().await;
        let report = report?;
        return Ok(verdict(*json, report.to_json(), &report, report.passed()));
    }
    if let Command::Queues {
        command: QueueCommand::Migrate,
    } = &cli.command
    {
        let env = ProcessEnv;
        let common = CommonSettings::from_source(&Reader::new(&env))?;
        anyhow::ensure!(
            common.amqp_quorum_queues,
            "AMQP_QUEUE_TYPE is classic: the services declare classic queues, nothing to migrate"
        );
        let broker = platform::amqp::Broker::new(common.amqp_url.expose(), &common.amqp_exchange);
        for (name, keys) in [
            ("catalog", catalog::events::SUBSCRIBED),
            ("order", order::events::SUBSCRIBED),
            ("payment", payment::events::SUBSCRIBED),
            ("dte", dte::events::SUBSCRIBED),
        ] {
            let mut sub = platform::amqp::consumer::Subscription::new(
                &format!("{}{name}", common.amqp_queue_prefix),
                keys,
            );
            sub.expires = common.amqp_queue_expires;
            for (queue, outcome) in platform::amqp::migrate::to_quorum(&broker, &sub).await? {
                println!("{queue}: {outcome:?}");
            }
        }
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if let Command::DeadLetters { command } = &cli.command {
        let env = ProcessEnv;
        let common = CommonSettings::from_source(&Reader::new(&env))?;
        let broker = platform::amqp::Broker::new(common.amqp_url.expose(), &common.amqp_exchange);
        use platform::amqp::dead_letters;
        match command {
            DeadLetterCommand::List { queue, limit } => {
                let letters = dead_letters::list(&broker, queue, *limit).await?;
                println!(
                    "{} dead letters in {}",
                    letters.len(),
                    dead_letters::dead_queue(queue)
                );
                for l in letters {
                    println!(
                        "{}  {}  aggregate {}  attempts {}  reason: {}",
                        l.id, l.event_type, l.aggregate_id, l.attempts, l.reason
                    );
                }
            }
            DeadLetterCommand::Replay { queue, ids, all } => {
                let ids = (!*all).then_some(ids.as_slice());
                let n = dead_letters::replay(&broker, queue, ids).await?;
                println!("{n} replayed to {queue}");
            }
            DeadLetterCommand::Drop { queue, ids, yes } => {
                if !*yes {
                    anyhow::bail!("drop removes messages for good: add --yes to confirm");
                }
                let n = dead_letters::drop_letters(&broker, queue, ids).await?;
                println!("{n} dropped from {}", dead_letters::dead_queue(queue));
            }
        }
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if let Command::Openapi = &cli.command {
        let table = gateway::routes::RouteTable::from_descriptor_set(proto::FILE_DESCRIPTOR_SET)?;
        println!(
            "{}",
            serde_json::to_string_pretty(&gateway::openapi::document(&table))?
        );
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if let Command::DevCerts { out } = &cli.command {
        let files = platform::tls::generate_development(out, ROLES_WITH_GRPC)?;
        eprintln!(
            "development CA {} (NOT FOR PRODUCTION); for each role set GRPC_TLS_CA_FILE={} \
             and GRPC_TLS_CERT_FILE / GRPC_TLS_KEY_FILE to:",
            files.ca.display(),
            files.ca.display()
        );
        for (role, cert, key) in files.roles {
            println!("{role} {} {}", cert.display(), key.display());
        }
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if let Command::CopySelf { to } = &cli.command {
        let me = std::env::current_exe().context("cannot find this executable")?;
        std::fs::copy(&me, to)
            .with_context(|| format!("cannot copy {} to {}", me.display(), to.display()))?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot make {} executable", to.display()))?;
        eprintln!("{}: orderflow copied", to.display());
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if let Command::InternalKey { out } = &cli.command {
        let key = platform::identity::InternalKey::generate();
        match out {
            None => print!("{}", key.pem().expose()),
            Some(path) => {
                if let Ok(existing) = std::fs::read_to_string(path) {
                    platform::identity::InternalKey::from_pem(&existing)
                        .map_err(|e| anyhow::anyhow!("{} exists but {e}", path.display()))?;
                    eprintln!("{}: keeping the key it holds", path.display());
                } else {
                    std::fs::write(path, key.pem().expose())
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!("{}: new internal key written", path.display());
                }
            }
        }
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if let Command::Dte {
        command: Some(DteCommand::Verify { files }),
    } = &cli.command
    {
        let mut all_valid = true;
        for file in files {
            let bytes =
                std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            match dte::verify::verify(&bytes) {
                Ok(report) => {
                    all_valid &= report.valid();
                    print!("{}: {}", file.display(), report.render());
                }
                Err(e) => {
                    all_valid = false;
                    println!("{}: cannot be verified: {e}", file.display());
                }
            }
        }
        return Ok(if all_valid {
            std::process::ExitCode::SUCCESS
        } else {
            std::process::ExitCode::FAILURE
        });
    }
    if let Command::Dte {
        command: Some(DteCommand::Receive { files }),
    } = &cli.command
    {
        let env = ProcessEnv;
        let r = Reader::new(&env);
        let common = CommonSettings::from_source(&r)?;
        let settings = dte::DteSettings::from_source(&r)?;
        let pool = dte::open_database(common.database_url_for(dte::SCHEMA).expose()).await?;
        let identity =
            dte::signing_identity(&pool, &settings.certificate, &settings.issuer.rut_envia).await?;
        let receiver = dte::received::Receiver {
            rut: &settings.issuer.rut,
            identity: &identity,
            signer: &settings.issuer.rut_envia,
        };
        let mut all_valid = true;
        for file in files {
            let bytes =
                std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            match dte::received::receive(&pool, receiver, "cli", &name, "", bytes).await {
                Ok(receipt) => {
                    let envelope = &receipt.envelope;
                    println!(
                        "{}: {} {} from {} (EstadoRecepEnv {}: {}){}",
                        file.display(),
                        envelope.kind,
                        envelope.id,
                        envelope.rut_emisor,
                        envelope.estado_recep_env,
                        envelope.estado_detail,
                        if receipt.repeated {
                            ", received before"
                        } else {
                            ""
                        }
                    );
                    all_valid &= envelope.estado_recep_env == dte::received::ENV_OK;
                    for d in &receipt.documents {
                        all_valid &= d.row.valid;
                        println!(
                            "  TipoDTE {} Folio {} RUTEmisor {}: {} (EstadoRecepDTE {}: {})",
                            d.row.tipo_dte,
                            d.row.folio,
                            d.row.rut_emisor,
                            d.row.id,
                            if d.duplicate {
                                dte::received::DTE_REPEATED
                            } else {
                                d.row.estado_recep_dte
                            },
                            if d.duplicate {
                                "received before"
                            } else {
                                &d.row.estado_detail
                            }
                        );
                    }
                }
                Err(dte::received::ReceiveError::Invalid(problem)) => {
                    all_valid = false;
                    println!("{}: not received: {problem}", file.display());
                }
                Err(dte::received::ReceiveError::Store(e)) => return Err(e),
            }
        }
        pool.close().await;
        return Ok(if all_valid {
            std::process::ExitCode::SUCCESS
        } else {
            std::process::ExitCode::FAILURE
        });
    }
    if let Command::Dte {
        command: Some(DteCommand::FakeCaf { tipo, from, to }),
    } = &cli.command
    {
        let env = ProcessEnv;
        let settings = dte::DteSettings::from_source(&Reader::new(&env))?;
        let tipo = dte::domain::TipoDte::from_code(*tipo)
            .ok_or_else(|| anyhow::anyhow!("--type {tipo} is not one of 33, 34, 39, 41, 56, 61"))?;
        let xml = dte::caf::fake(
            tipo,
            *from,
            *to,
            &settings.issuer.rut,
            &settings.issuer.razon_social,
            chrono::Utc::now().date_naive(),
        )?;
        print!("{xml}");
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if let Command::Loadgen(mut options) = cli.command {
        let json = options.json;
        let suite = if options.spawn {
            if options.admin_email.is_none() || options.admin_password.is_none() {
                let run = uuid::Uuid::new_v4().simple().to_string();
                options.admin_email = Some(format!("loadgen-admin-{}@example.cl", &run[..8]));
                options.admin_password = Some(format!("loadgen-admin-{run}"));
            }
            Some(
                cli::spawn::SpawnedSuite::start(
                    &options.url,
                    (
                        options.admin_email.as_deref().unwrap_or_default(),
                        options.admin_password.as_deref().unwrap_or_default(),
                    ),
                )
                .await?,
            )
        } else {
            None
        };
        let outcome = cli::loadgen::run(options).await;
        let resources = match suite {
            Some(suite) => Some(suite.stop().await),
            None => None,
        };
        let mut summary = outcome?;
        if let Some(resources) = resources {
            eprint!("{}", cli::spawn::describe(&resources));
            summary.json["suite"] = resources;
        }
        if json {
            println!("{}", serde_json::to_string_pretty(&summary.json)?);
        }
        if !summary.passed {
            eprintln!("loadgen: the error ratio exceeds --max-error-ratio");
            return Ok(std::process::ExitCode::FAILURE);
        }
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let env = ProcessEnv;
    let r = Reader::new(&env);
    let common = CommonSettings::from_source(&r)?;
    let role = match &cli.command {
        Command::All => "all",
        Command::Gateway => "gateway",
        Command::Iam { .. } => "iam",
        Command::Catalog { .. } => "catalog",
        Command::Order { .. } => "order",
        Command::OrderProjector => "order-projector",
        Command::Payment => "payment",
        Command::Dte { .. } => "dte",
        Command::SiiSim => "sii-sim",
        Command::WebpaySim => "webpay-sim",
        Command::Migrate { .. } => "migrate",
        Command::Healthcheck { .. }
        | Command::Loadgen(_)
        | Command::InternalKey { .. }
        | Command::DevCerts { .. }
        | Command::Openapi
        | Command::Invariants { .. }
        | Command::Chaos { .. }
        | Command::CopySelf { .. }
        | Command::DeadLetters { .. }
        | Command::Queues { .. } => {
            unreachable!("handled above")
        }
    };
    let _telemetry = platform::telemetry::init(role, &cli::version(), &common)?;

    match cli.command {
        Command::All => {
            let shutdown = platform::shutdown::on_signal();
            let suite = cli::suite::Suite::start(&env, shutdown).await?;
            tracing::info!(gateway = %suite.gateway_addr, "orderflow is up: try curl http://127.0.0.1:{}/health/ready", suite.gateway_addr.port());
            suite.wait().await?;
        }
        Command::Gateway => {
            let settings = gateway::GatewaySettings::from_source(&r)?;
            gateway::Gateway::build(settings)
                .await?
                .run_until_stopped(platform::shutdown::on_signal())
                .await?;
        }
        Command::Iam { command: None } => {
            let settings = iam::IamSettings::from_source(&r)?;
            iam::IamApp::build(&common, settings)
                .await?
                .run_until_stopped(platform::shutdown::on_signal())
                .await?;
        }
        Command::Iam {
            command: Some(IamCommand::CreateAdmin { email, .. }),
        } => {
            let mut password = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut password)
                .context("reading the password from standard input")?;
            let password = password.trim_end_matches(['\r', '\n']);
            let pool = iam::open_database(&common).await?;
            let id = iam::create_admin(&pool, &email, password).await?;
            println!("admin {email} ready (user id {id})");
        }
        Command::Catalog { command: None } => {
            let settings = catalog::CatalogSettings::from_source(&r)?;
            catalog::CatalogApp::build(&common, settings)
                .await?
                .run_until_stopped(platform::shutdown::on_signal())
                .await?;
        }
        Command::Catalog {
            command: Some(CatalogCommand::Seed),
        } => {
            let pool = catalog::open_database(&common).await?;
            let added = catalog::seed::seed_demo(&pool).await?;
            println!(
                "catalog: {added} demo products added ({} in the demo set)",
                catalog::seed::DEMO_PRODUCTS.len()
            );
        }
        Command::Order { command: None } => {
            let settings = order::OrderSettings::from_source(&r)?;
            order::OrderApp::build(&common, settings, platform::clock::Clock::system())
                .await?
                .run_until_stopped(platform::shutdown::on_signal())
                .await?;
        }
        Command::Order {
            command: Some(OrderCommand::RebuildProjections),
        } => {
            let pool = order::open_database(common.database_url_for("order").expose()).await?;
            let rebuilt = order::projector::rebuild(&pool).await?;
            println!(
                "order read model rebuilt: {} events, {} orders",
                rebuilt.events, rebuilt.orders
            );
        }
        Command::Order {
            command:
                Some(OrderCommand::VerifyRestore {
                    dump,
                    scratch_url,
                    pg_restore,
                    keep_scratch,
                }),
        } => {
            let source_url = common.database_url_for("order").expose().to_string();
            let options = order::restore::DrillOptions {
                dump,
                scratch_server_url: scratch_url.unwrap_or_else(|| source_url.clone()),
                source_url,
                scratch_database: order::restore::DrillOptions::scratch_name(),
                pg_restore,
                keep: keep_scratch,
            };
            let report = order::restore::drill(&options).await?;
            println!("{report}");
            if !report.passed() {
                return Ok(std::process::ExitCode::FAILURE);
            }
        }
        Command::OrderProjector => {
            let settings = order::OrderSettings::from_source(&r)?;
            order::ProjectorApp::build(&common, &settings)
                .await?
                .run_until_stopped(platform::shutdown::on_signal())
                .await?;
        }
        Command::Payment => {
            let settings = payment::PaymentSettings::from_source(&r)?;
            payment::PaymentApp::build(&common, settings, platform::clock::Clock::system())
                .await?
                .run_until_stopped(platform::shutdown::on_signal())
                .await?;
        }
        Command::Dte { command: None } => {
            let settings = dte::DteSettings::from_source(&r)?;
            dte::DteApp::build(&common, settings, platform::clock::Clock::system())
                .await?
                .run_until_stopped(platform::shutdown::on_signal())
                .await?;
        }
        Command::Dte { command: Some(_) } => unreachable!("handled above"),
        Command::SiiSim => {
            let addr = r.parse(
                "SII_SIM_ADDR",
                std::net::SocketAddr::from(([127, 0, 0, 1], 8090)),
            )?;
            dte::sii::sim::SiiSimulator::bind(addr)
                .await?
                .run_until_stopped(platform::shutdown::on_signal())
                .await?;
        }
        Command::WebpaySim => {
            let config = payment::webpay_sim::SimConfig {
                commerce_code: r.required("WEBPAY_COMMERCE_CODE")?,
                api_key_secret: r.required("WEBPAY_API_KEY_SECRET")?,
                form_timeout: r.duration(
                    "WEBPAY_SIM_FORM_TIMEOUT",
                    payment::webpay_sim::DEFAULT_FORM_TIMEOUT,
                )?,
            };
            let addr = r.parse(
                "WEBPAY_SIM_ADDR",
                std::net::SocketAddr::from(([127, 0, 0, 1], 8091)),
            )?;
            payment::webpay_sim::WebpaySimulator::bind(addr, config)
                .await?
                .run_until_stopped(platform::shutdown::on_signal())
                .await?;
        }
        Command::Migrate { service } => {
            let services: &[&str] = match service.as_str() {
                "all" => &["iam", "catalog", "order", "payment", "dte"],
                "iam" => &["iam"],
                "catalog" => &["catalog"],
                "order" => &["order"],
                "payment" => &["payment"],
                "dte" => &["dte"],
                other => {
                    anyhow::bail!(
                        "unknown service {other:?}: expected iam, catalog, order, payment, dte or all"
                    )
                }
            };
            for name in services {
                platform::db::create_database_if_missing(common.database_url_for(name).expose())
                    .await?;
                match *name {
                    "iam" => drop(iam::open_database(&common).await?),
                    "catalog" => drop(catalog::open_database(&common).await?),
                    "order" => {
                        drop(order::open_database(common.database_url_for(name).expose()).await?)
                    }
                    "payment" => {
                        drop(payment::open_database(common.database_url_for(name).expose()).await?)
                    }
                    _ => drop(dte::open_database(common.database_url_for(name).expose()).await?),
                }
                println!("{name}: migrations applied");
            }
        }
        Command::Healthcheck { .. }
        | Command::Loadgen(_)
        | Command::InternalKey { .. }
        | Command::DevCerts { .. }
        | Command::Openapi
        | Command::Invariants { .. }
        | Command::Chaos { .. }
        | Command::CopySelf { .. }
        | Command::DeadLetters { .. }
        | Command::Queues { .. } => {
            unreachable!("handled above")
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Prints a check's outcome (as JSON, or its table) and exits 0 only when it passed.
fn verdict(
    json: bool,
    as_json: serde_json::Value,
    table: &dyn std::fmt::Display,
    passed: bool,
) -> std::process::ExitCode {
    if json {
        println!("{as_json}");
    } else {
        print!("{table}");
    }
    if passed {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
