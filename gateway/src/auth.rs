//! Access-token checks at the edge: tokens are verified locally against IAM's JWKS,
//! fetched once and refetched when a token names a key we have not seen (rotation).

use std::{sync::Arc, time::Duration};

use platform::jwt::{Claims, KeySet, TokenError};
use proto::iam::v1::iam_service_client::IamServiceClient;
use tokio::sync::{Mutex, RwLock};
use tokio::time::Instant;
use tonic::transport::Channel;

/// Refetch no more often than this on unknown `kid`s, so junk tokens cannot make the
/// gateway hammer IAM.
const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// The JWKS cache.
#[derive(Clone)]
pub struct Jwks {
    keys: Arc<RwLock<KeySet>>,
    last_fetch: Arc<Mutex<Option<Instant>>>,
    iam: IamServiceClient<Channel>,
}

impl Jwks {
    /// An empty cache that fetches from `iam`.
    pub fn new(iam: Channel) -> Self {
        Self {
            keys: Arc::default(),
            last_fetch: Arc::default(),
            iam: IamServiceClient::new(iam),
        }
    }

    /// Whether any key has been loaded (readiness).
    pub async fn is_loaded(&self) -> bool {
        !self.keys.read().await.is_empty()
    }

    /// Fetches the key set now.
    pub async fn refresh(&self) -> anyhow::Result<()> {
        let mut request = tonic::Request::new(());
        request.set_timeout(Duration::from_secs(3));
        let jwks = self.iam.clone().get_jwks(request).await?.into_inner();
        let set = KeySet::from_okp_keys(jwks.keys.iter().map(|k| (k.kid.as_str(), k.x.as_str())))?;
        tracing::info!(keys = set.len(), "JWKS loaded");
        *self.keys.write().await = set;
        Ok(())
    }

    /// Keeps fetching in the background until the first load succeeds (IAM may start
    /// after the gateway).
    pub fn load_in_background(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(100);
            loop {
                match this.refresh().await {
                    Ok(()) => {
                        *this.last_fetch.lock().await = Some(Instant::now());
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?delay, "cannot fetch the JWKS from IAM yet");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
    }

    /// Verifies `token`, refetching the JWKS once when its `kid` is unknown.
    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let first = self.keys.read().await.verify(token);
        let Err(TokenError::UnknownKey(_)) = first else {
            return first;
        };
        {
            let mut last = self.last_fetch.lock().await;
            let due = last.is_none_or(|t| t.elapsed() >= MIN_REFETCH_INTERVAL);
            if due {
                *last = Some(Instant::now());
                if let Err(e) = self.refresh().await {
                    tracing::warn!(error = %e, "JWKS refetch failed");
                }
            }
        }
        self.keys.read().await.verify(token)
    }
}
