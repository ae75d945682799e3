//! Admin UI operator pages and commands: users added, re-passworded and removed; sign-in
//! throttling; dead letters with their errors; and a user made by the real `user create`
//! binary signing in (bad input refused before anything is stored).

use crate::helpers::*;
use crate::ui::{PASSWORD, Ui, ui_user};
use reqwest::StatusCode;
use std::time::Duration;

#[tokio::test]
async fn ui_user_create_command_makes_a_user_who_can_sign_in() {
    let c = TestCluster::start(1).await;
    let run = |args: Vec<&'static str>| {
        let url = c.db.url.clone();
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_eventrelay"))
                .args(args)
                .env("DATABASE_URL", url)
                .env_remove("RUST_LOG")
                .env_remove("ER_USER_PASSWORD")
                .kill_on_drop(true)
                .output();
            tokio::time::timeout(Duration::from_secs(60), out)
                .await
                .unwrap()
                .unwrap()
        }
    };
    let out = run(vec![
        "user",
        "create",
        "--email",
        "ops@example.com",
        "--password",
        "short",
    ])
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 8 characters"));
    let out = run(vec![
        "user",
        "create",
        "--email",
        "not-an-email",
        "--password",
        "long enough pw",
    ])
    .await;
    assert!(!out.status.success());
    let users = count_rows(&c.pool, "users").await;
    assert_eq!(users, 0, "refused input stores nothing");

    let out = run(vec![
        "user",
        "create",
        "--email",
        "Ops@Example.com",
        "--password",
        "long enough pw",
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["email"], "ops@example.com");
    let out = run(vec![
        "user",
        "create",
        "--email",
        "ops@example.com",
        "--password",
        "long enough pw",
    ])
    .await;
    assert!(!out.status.success(), "a taken email is refused");

    let ui = Ui::new(&c, 0);
    let (_, page, _) = ui.get("/login").await;
    let token = crate::ui::csrf(&page);
    let (code, _, loc) = ui
        .post(
            "/login",
            &[
                ("_csrf", &token),
                ("email", "OPS@example.com"),
                ("password", "long enough pw"),
                ("next", "/keys"),
            ],
        )
        .await;
    assert_eq!(code, StatusCode::SEE_OTHER);
    assert_eq!(loc.as_deref(), Some("/keys"));
    assert_eq!(ui.get("/keys").await.0, StatusCode::OK);
}

const LOCALHOST: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

#[tokio::test]
async fn ui_sign_in_is_throttled_after_repeated_wrong_passwords() {
    let c = TestCluster::start(1).await;
    ui_user(&c).await;
    let ui = Ui::new(&c, 0);
    for _ in 0..eventrelay::users::MAX_FAILURES {
        assert_eq!(
            ui.sign_in("wrong password").await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let (code, page, _) = ui.sign_in(PASSWORD).await;
    assert_eq!(
        code,
        StatusCode::TOO_MANY_REQUESTS,
        "even the right password waits"
    );
    assert!(page.contains("too many failed sign-ins"), "{page}");
    assert_eq!(ui.get("/topics").await.0, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn ui_users_are_added_repassworded_and_removed() {
    let c = TestCluster::start(1).await;
    ui_user(&c).await;
    let ui = Ui::new(&c, 0);
    ui.sign_in(PASSWORD).await;
    let t = ui.token().await;
    let (code, _, _) = ui
        .post(
            "/users",
            &[
                ("_csrf", &t),
                ("email", "ops@example.com"),
                ("password", "first password"),
            ],
        )
        .await;
    assert_eq!(code, StatusCode::SEE_OTHER);
    let id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM users WHERE email = 'ops@example.com'")
        .fetch_one(&c.pool)
        .await
        .unwrap();
    let path = format!("/users/{id}/password");
    let (code, page, _) = ui
        .post(
            &path,
            &[
                ("_csrf", &t),
                ("password", "second password"),
                ("confirm", "typo"),
            ],
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("id=\"f-confirm-error\""));
    let (code, _, _) = ui
        .post(
            &path,
            &[
                ("_csrf", &t),
                ("password", "second password"),
                ("confirm", "second password"),
            ],
        )
        .await;
    assert_eq!(code, StatusCode::SEE_OTHER);
    let users = eventrelay::users::Users::new(c.pool.clone());
    assert!(
        users
            .check_credentials("ops@example.com", "first password", LOCALHOST)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        users
            .check_credentials("ops@example.com", "second password", LOCALHOST)
            .await
            .unwrap()
            .is_some()
    );

    let me: uuid::Uuid = sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
        .bind(crate::ui::EMAIL)
        .fetch_one(&c.pool)
        .await
        .unwrap();
    let (code, _, _) = ui
        .post(&format!("/users/{me}/delete"), &[("_csrf", &t)])
        .await;
    assert_eq!(code, StatusCode::CONFLICT, "nobody removes themselves");
    let (code, _, _) = ui
        .post(&format!("/users/{id}/delete"), &[("_csrf", &t)])
        .await;
    assert_eq!(code, StatusCode::SEE_OTHER);
    assert!(!ui.get("/users").await.1.contains("ops@example.com"));
}

#[tokio::test]
async fn ui_dead_letters_show_their_errors() {
    let c = TestCluster::start(1).await;
    ui_user(&c).await;
    create_topic(&c, "orders").await;
    let stored = publish(
        &c,
        0,
        "orders",
        vec![event("order.bad", "this is not json")],
    )
    .await;
    assert!(stored.is_empty());
    let ui = Ui::new(&c, 0);
    ui.sign_in(PASSWORD).await;
    let (code, page, _) = ui.get("/dead-letters?topic=orders").await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        page.contains("order.bad") && page.contains("1 dead letter(s)"),
        "{page}"
    );
    assert!(
        page.contains("<li class=\"error\">"),
        "errors are listed: {page}"
    );
    let (_, page, _) = ui.get("/dead-letters?topic=other").await;
    assert!(page.contains("0 dead letter(s)"));
}
