//! IAM over gRPC, against real Postgres and Redis.

mod helpers;

use helpers::{PASSWORD, as_user, from_address, spawn_app, spawn_app_with};
use platform::jwt::KeySet;
use proto::iam::v1::{
    GrantRoleRequest, ListUsersRequest, LogoutRequest, RefreshRequest, RegisterRequest,
    RevokeRoleRequest,
};
use tonic::Code;
use tonic_types::StatusExt;

fn violation_field(status: &tonic::Status) -> String {
    status
        .get_error_details()
        .bad_request()
        .expect("a BadRequest detail")
        .field_violations[0]
        .field
        .clone()
}

#[tokio::test]
async fn register_then_login_issues_a_token_that_verifies_against_the_jwks() {
    let app = spawn_app().await;
    let user = app.register("  Ana.Perez@Example.CL ").await;
    assert_eq!(user.email, "ana.perez@example.cl");
    assert_eq!(user.roles, vec!["customer".to_string()]);

    let pair = app.login("ana.perez@example.cl", PASSWORD).await.unwrap();
    assert_eq!(pair.token_type, "Bearer");
    assert_eq!(pair.expires_in, 15 * 60);
    let jwks = app.client.clone().get_jwks(()).await.unwrap().into_inner();
    let keys =
        KeySet::from_okp_keys(jwks.keys.iter().map(|k| (k.kid.as_str(), k.x.as_str()))).unwrap();
    let claims = keys.verify(&pair.access_token).unwrap();
    assert_eq!(claims.sub, user.id);
    assert_eq!(claims.roles, vec!["customer".to_string()]);

    let me = app
        .client
        .clone()
        .get_me(as_user((), &user.id, "customer"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.email, "ana.perez@example.cl");
}

#[tokio::test]
async fn a_duplicate_email_is_already_exists_whatever_its_case() {
    let app = spawn_app().await;
    app.register("dup@example.cl").await;
    let err = app
        .client
        .clone()
        .register(RegisterRequest {
            email: "DUP@example.cl".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
}

#[tokio::test]
async fn bad_registrations_name_the_field() {
    let app = spawn_app().await;
    let err = app
        .client
        .clone()
        .register(RegisterRequest {
            email: "not-an-email".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), violation_field(&err)),
        (Code::InvalidArgument, "email".to_string())
    );
    let err = app
        .client
        .clone()
        .register(RegisterRequest {
            email: "ok@example.cl".into(),
            password: "short".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), violation_field(&err)),
        (Code::InvalidArgument, "password".to_string())
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 0, "nothing is stored for refused input");
}

#[tokio::test]
async fn wrong_password_and_unknown_email_get_the_same_answer() {
    let app = spawn_app().await;
    app.register("known@example.cl").await;
    let wrong = app
        .login("known@example.cl", "wrong password 123")
        .await
        .unwrap_err();
    let unknown = app
        .login("nobody@example.cl", "wrong password 123")
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(
        (wrong.code(), wrong.message()),
        (unknown.code(), unknown.message())
    );
}

#[tokio::test]
async fn refresh_rotates_and_reusing_a_spent_token_revokes_the_family() {
    let app = spawn_app().await;
    app.register("rotate@example.cl").await;
    let first = app.login("rotate@example.cl", PASSWORD).await.unwrap();

    let second = app
        .client
        .clone()
        .refresh(RefreshRequest {
            refresh_token: first.refresh_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(second.refresh_token, first.refresh_token);

    // The spent token comes back (stolen?): refused, and the whole family dies with it.
    let reuse = app
        .client
        .clone()
        .refresh(RefreshRequest {
            refresh_token: first.refresh_token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(reuse.code(), Code::Unauthenticated);
    let after = app
        .client
        .clone()
        .refresh(RefreshRequest {
            refresh_token: second.refresh_token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        after.code(),
        Code::Unauthenticated,
        "the legitimate successor is revoked too"
    );

    // Other sessions of the same user are other families and keep working.
    let other = app.login("rotate@example.cl", PASSWORD).await.unwrap();
    assert!(
        app.client
            .clone()
            .refresh(RefreshRequest {
                refresh_token: other.refresh_token
            })
            .await
            .is_ok()
    );

    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM refresh_tokens")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert!(
        stored
            .iter()
            .all(|h| h.len() == 32 && h.as_slice() != first.refresh_token.as_bytes()),
        "only hashes are stored"
    );
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_rotate_at_most_once() {
    let app = spawn_app().await;
    app.register("race@example.cl").await;
    let pair = app.login("race@example.cl", PASSWORD).await.unwrap();
    let attempts = (0..8).map(|_| {
        let mut client = app.client.clone();
        let token = pair.refresh_token.clone();
        tokio::spawn(async move {
            client
                .refresh(RefreshRequest {
                    refresh_token: token,
                })
                .await
        })
    });
    let mut ok = 0;
    for a in attempts {
        if a.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    assert!(ok <= 1, "{ok} refreshes succeeded with one token");
}

#[tokio::test]
async fn logout_revokes_the_refresh_token() {
    let app = spawn_app().await;
    app.register("bye@example.cl").await;
    let pair = app.login("bye@example.cl", PASSWORD).await.unwrap();
    app.client
        .clone()
        .logout(LogoutRequest {
            refresh_token: pair.refresh_token.clone(),
        })
        .await
        .unwrap();
    let err = app
        .client
        .clone()
        .refresh(RefreshRequest {
            refresh_token: pair.refresh_token,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn repeated_failures_for_an_email_are_throttled_with_a_retry_delay() {
    let app = spawn_app_with(&[
        ("IAM_LOGIN_MAX_FAILURES_PER_EMAIL", "3"),
        ("IAM_LOGIN_THROTTLE_WINDOW", "60s"),
    ])
    .await;
    app.register("victim@example.cl").await;
    for _ in 0..3 {
        assert_eq!(
            app.login("victim@example.cl", "not the password")
                .await
                .unwrap_err()
                .code(),
            Code::Unauthenticated
        );
    }
    // Even the right password is refused while throttled.
    let err = app.login("victim@example.cl", PASSWORD).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    let delay = err
        .get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay)
        .expect("a retry delay");
    assert!(delay.as_secs() >= 1 && delay.as_secs() <= 60, "{delay:?}");
    // Another account is not affected.
    app.register("bystander@example.cl").await;
    assert!(app.login("bystander@example.cl", PASSWORD).await.is_ok());
}

#[tokio::test]
async fn repeated_failures_from_one_address_are_throttled_across_emails() {
    let app = spawn_app_with(&[
        ("IAM_LOGIN_MAX_FAILURES_PER_ADDRESS", "4"),
        ("IAM_LOGIN_MAX_FAILURES_PER_EMAIL", "100"),
    ])
    .await;
    app.register("target@example.cl").await;
    for i in 0..4 {
        let req = proto::iam::v1::LoginRequest {
            email: format!("guess{i}@example.cl"),
            password: "not the password".into(),
        };
        assert_eq!(
            app.client
                .clone()
                .login(from_address(req, "203.0.113.9"))
                .await
                .unwrap_err()
                .code(),
            Code::Unauthenticated
        );
    }
    let req = proto::iam::v1::LoginRequest {
        email: "target@example.cl".into(),
        password: PASSWORD.into(),
    };
    assert_eq!(
        app.client
            .clone()
            .login(from_address(req, "203.0.113.9"))
            .await
            .unwrap_err()
            .code(),
        Code::ResourceExhausted
    );
    let req = proto::iam::v1::LoginRequest {
        email: "target@example.cl".into(),
        password: PASSWORD.into(),
    };
    assert!(
        app.client
            .clone()
            .login(from_address(req, "198.51.100.1"))
            .await
            .is_ok(),
        "other addresses still sign in"
    );
}

#[tokio::test]
async fn a_forged_client_address_header_does_not_choose_the_throttling_bucket() {
    let app = spawn_app_with(&[
        ("IAM_LOGIN_MAX_FAILURES_PER_ADDRESS", "3"),
        ("IAM_LOGIN_MAX_FAILURES_PER_EMAIL", "100"),
    ])
    .await;
    app.register("victim@example.cl").await;
    // An attacker calling IAM directly names the victim's address in a plain header to
    // lock it out: the header is not a credential, so it counts for nobody's address.
    for i in 0..5 {
        let mut req = tonic::Request::new(proto::iam::v1::LoginRequest {
            email: format!("guess{i}@example.cl"),
            password: "not the password".into(),
        });
        req.metadata_mut()
            .insert("x-orderflow-client-ip", "203.0.113.9".parse().unwrap());
        assert_eq!(
            app.client.clone().login(req).await.unwrap_err().code(),
            Code::Unauthenticated
        );
    }
    let req = proto::iam::v1::LoginRequest {
        email: "victim@example.cl".into(),
        password: PASSWORD.into(),
    };
    assert!(
        app.client
            .clone()
            .login(from_address(req, "203.0.113.9"))
            .await
            .is_ok(),
        "the address named only in a forged header is not throttled"
    );
}

#[tokio::test]
async fn forged_identity_headers_do_not_list_users() {
    let app = spawn_app().await;
    let mut req = tonic::Request::new(ListUsersRequest::default());
    req.metadata_mut().insert(
        "x-orderflow-user-id",
        uuid::Uuid::now_v7().to_string().parse().unwrap(),
    );
    req.metadata_mut()
        .insert("x-orderflow-roles", "admin".parse().unwrap());
    assert_eq!(
        app.client.clone().list_users(req).await.unwrap_err().code(),
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn admins_list_users_page_by_page_and_manage_roles() {
    let app = spawn_app().await;
    let admin = app.admin("boss@example.cl").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(app.register(&format!("user{i}@example.cl")).await.id);
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .client
            .clone()
            .list_users(as_user(
                ListUsersRequest {
                    page_size: 2,
                    page_token: token.clone(),
                },
                &admin,
                "customer,admin",
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.users.len() <= 2);
        seen.extend(page.users.into_iter().map(|u| u.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 6, "every user exactly once");
    assert!(ids.iter().all(|id| seen.contains(id)));

    let err = app
        .client
        .clone()
        .list_users(as_user(
            ListUsersRequest {
                page_size: 500,
                page_token: String::new(),
            },
            &admin,
            "admin",
        ))
        .await
        .unwrap_err();
    assert_eq!(violation_field(&err), "page_size");

    let promoted = app
        .client
        .clone()
        .grant_role(as_user(
            GrantRoleRequest {
                id: ids[0].clone(),
                role: "admin".into(),
            },
            &admin,
            "admin",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        promoted.roles,
        vec!["admin".to_string(), "customer".to_string()]
    );
    let demoted = app
        .client
        .clone()
        .revoke_role(as_user(
            RevokeRoleRequest {
                id: ids[0].clone(),
                role: "admin".into(),
            },
            &admin,
            "admin",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(demoted.roles, vec!["customer".to_string()]);

    let err = app
        .client
        .clone()
        .revoke_role(as_user(
            RevokeRoleRequest {
                id: admin.clone(),
                role: "admin".into(),
            },
            &admin,
            "admin",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "the last admin stays");
    let err = app
        .client
        .clone()
        .grant_role(as_user(
            GrantRoleRequest {
                id: ids[1].clone(),
                role: "root".into(),
            },
            &admin,
            "admin",
        ))
        .await
        .unwrap_err();
    assert_eq!(violation_field(&err), "role");
    let err = app
        .client
        .clone()
        .grant_role(as_user(
            GrantRoleRequest {
                id: uuid::Uuid::now_v7().to_string(),
                role: "admin".into(),
            },
            &admin,
            "admin",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = app
        .client
        .clone()
        .revoke_role(as_user(
            RevokeRoleRequest {
                id: uuid::Uuid::now_v7().to_string(),
                role: "admin".into(),
            },
            &admin,
            "admin",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "revoking from an unknown user");
}

#[tokio::test]
async fn customers_cannot_do_admin_work_even_when_calling_iam_directly() {
    let app = spawn_app().await;
    let user = app.register("nosy@example.cl").await;
    let err = app
        .client
        .clone()
        .list_users(as_user(ListUsersRequest::default(), &user.id, "customer"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = app
        .client
        .clone()
        .get_me(tonic::Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn a_new_role_shows_in_the_next_refreshed_token() {
    let app = spawn_app().await;
    let admin = app.admin("boss@example.cl").await;
    let user = app.register("climber@example.cl").await;
    let pair = app.login("climber@example.cl", PASSWORD).await.unwrap();
    app.client
        .clone()
        .grant_role(as_user(
            GrantRoleRequest {
                id: user.id.clone(),
                role: "admin".into(),
            },
            &admin,
            "admin",
        ))
        .await
        .unwrap();
    let next = app
        .client
        .clone()
        .refresh(RefreshRequest {
            refresh_token: pair.refresh_token,
        })
        .await
        .unwrap()
        .into_inner();
    let jwks = app.client.clone().get_jwks(()).await.unwrap().into_inner();
    let keys =
        KeySet::from_okp_keys(jwks.keys.iter().map(|k| (k.kid.as_str(), k.x.as_str()))).unwrap();
    assert!(
        keys.verify(&next.access_token)
            .unwrap()
            .roles
            .contains(&"admin".to_string())
    );
}

#[tokio::test]
async fn the_development_signing_key_is_generated_once_and_kept() {
    let app = spawn_app().await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM signing_keys")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
    let kid: String = sqlx::query_scalar("SELECT kid FROM signing_keys")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let jwks = app.client.clone().get_jwks(()).await.unwrap().into_inner();
    assert_eq!(jwks.keys[0].kid, kid, "the published key is the kept one");
}

#[tokio::test]
async fn sign_in_keeps_working_when_redis_is_unreachable() {
    let url = platform::testing::closed_port_url("redis");
    let app = spawn_app_with(&[("REDIS_URL", url.as_str())]).await;
    app.register("resilient@example.cl").await;
    for _ in 0..3 {
        assert_eq!(
            app.login("resilient@example.cl", "not the password")
                .await
                .unwrap_err()
                .code(),
            Code::Unauthenticated
        );
    }
    assert!(app.login("resilient@example.cl", PASSWORD).await.is_ok());
}
