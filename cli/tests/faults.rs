//! The fault suite (issue 24): every role as its own process behind proxies of its own,
//! shoppers checking out while roles are killed or stopped and Postgres, RabbitMQ and
//! Redis are taken away from them, then the invariant table must hold. The same scenario,
//! longer and larger, is `bench/chaos`.

use std::{sync::Arc, time::Duration};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_stuck_leaked_or_doubled_when_roles_die_and_servers_blink() {
    let env = platform::testing::TestEnv::isolated()
        .await
        .expect("an isolated environment");
    let logs = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("faults-{}", uuid::Uuid::new_v4().simple()));
    let cluster = Arc::new(
        cli::chaos::Cluster::start(
            std::path::Path::new(env!("CARGO_BIN_EXE_orderflow")),
            env.vars,
            &logs,
        )
        .await
        .expect("every role starts"),
    );
    let outcome = cli::chaos::run(
        cluster.clone(),
        &cli::chaos::RunOptions {
            users: 6,
            duration: Duration::from_secs(30),
            // The reservation sweeper's grace (30 s) and a sweep.
            patience: Duration::from_secs(90),
        },
    )
    .await
    .expect("the scenario runs");
    cluster.stop().await;
    eprintln!("{outcome}");
    assert!(outcome.passed(), "{outcome}\nlogs in {}", logs.display());
    // The load went on through the faults: checkouts were invoiced, none lost.
    let checkouts = &outcome.load["checkouts"];
    assert!(checkouts["invoiced"].as_u64().unwrap_or(0) > 0, "{outcome}");
    assert_eq!(checkouts["not_invoiced"], 0, "{outcome}");
    // The charge the payment role died in was never completed by the processor: the
    // reconciler failed it (the order stays payable), it is not left pending.
    let (_, charge) = outcome
        .interrupted_charge
        .as_ref()
        .expect("a charge was in flight at the kill");
    assert_eq!(charge, "failed", "{outcome}");
    // Every fault of the scenario was applied and recovered from.
    assert_eq!(
        outcome.faults.len(),
        cli::chaos::scenario(Duration::ZERO).len()
    );
}
