//! `spawn_app()`: IAM on port 0 in an isolated test environment.

use iam::{IamApp, IamSettings};
use platform::{
    CancellationToken,
    config::{CommonSettings, Reader},
    testing::TestEnv,
};
use proto::iam::v1::{
    LoginRequest, RegisterRequest, TokenPair, User, iam_service_client::IamServiceClient,
};
use sqlx::PgPool;
use tonic::transport::Channel;

/// The audience of calls to IAM.
const IAM: &str = "orderflow.iam.v1.IamService";

/// A request on behalf of `user` holding `roles`, as the gateway sends it.
pub fn as_user<T>(message: T, user: &str, roles: &str) -> tonic::Request<T> {
    platform::testing::as_caller(message, IAM, user, roles)
}

pub const PASSWORD: &str = "correct horse battery staple";

pub struct TestApp {
    pub client: IamServiceClient<Channel>,
    pub pool: PgPool,
    shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    let env = TestEnv::isolated()
        .await
        .expect("an isolated environment")
        .with(overrides);
    let r = Reader::new(&env.vars);
    let common = CommonSettings::from_source(&r).unwrap();
    let app = IamApp::build(&common, IamSettings::from_source(&r).unwrap())
        .await
        .expect("iam builds");
    let addr = app.grpc_addr();
    let pool = app.pool().clone();
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("iam answers");
    TestApp {
        client: IamServiceClient::new(channel),
        pool,
        shutdown,
    }
}

/// A request from client address `ip`, vouched for by the gateway's token.
pub fn from_address<T>(message: T, ip: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let caller = platform::grpc::Caller {
        client_ip: Some(ip.to_string()),
        ..Default::default()
    };
    platform::identity::Minter::new(
        platform::testing::test_internal_key(),
        platform::identity::GATEWAY,
    )
    .authorize(&mut request, IAM, &caller);
    request
}

impl TestApp {
    pub async fn register(&self, email: &str) -> User {
        self.client
            .clone()
            .register(RegisterRequest {
                email: email.into(),
                password: PASSWORD.into(),
            })
            .await
            .expect("registration succeeds")
            .into_inner()
    }

    pub async fn login(&self, email: &str, password: &str) -> Result<TokenPair, tonic::Status> {
        self.client
            .clone()
            .login(LoginRequest {
                email: email.into(),
                password: password.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn admin(&self, email: &str) -> String {
        iam::create_admin(&self.pool, email, PASSWORD)
            .await
            .expect("admin created")
            .to_string()
    }
}
