//! Admin UI over real HTTP with a cookie-keeping client: sign-in and its refusals, the redirect
//! to /login, CSRF refusal of forged and stale forms, session expiry, sign-out, field errors
//! with nothing saved, every page rendering, and the live tail's event stream across nodes
//! (over Postgres NOTIFY and over Redis). The helpers here (`Ui`, `ui_user`) serve the other
//! `ui_*` test files.

use crate::helpers::*;
use eventrelay::users::{Email, Users};
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use std::time::Duration;

pub const EMAIL: &str = "admin@example.com";
pub const PASSWORD: &str = "correct horse battery";

/// Creates the UI user through the library.
pub async fn ui_user(c: &TestCluster) {
    Users::new(c.pool.clone())
        .create(&Email::parse(EMAIL).unwrap(), PASSWORD)
        .await
        .unwrap();
}

/// A browser-like client: keeps cookies, does not follow redirects (tests look at them).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// The `_csrf` value of the first form of a page.
pub fn csrf(html: &str) -> String {
    let at = html
        .find("name=\"_csrf\" value=\"")
        .expect("page has a CSRF field")
        + 20;
    html[at..].split('"').next().unwrap().to_owned()
}

/// A signed-out browser session against one node.
pub struct Ui {
    pub base: String,
    pub http: reqwest::Client,
}

impl Ui {
    pub fn new(c: &TestCluster, node: usize) -> Self {
        Ui {
            base: format!("http://{}", c.nodes[node].http),
            http: client(),
        }
    }

    pub async fn get(&self, path: &str) -> (StatusCode, String, Option<String>) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let loc = r
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        (r.status(), r.text().await.unwrap(), loc)
    }

    pub async fn post(
        &self,
        path: &str,
        form: &[(&str, &str)],
    ) -> (StatusCode, String, Option<String>) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .form(form)
            .send()
            .await
            .unwrap();
        let loc = r
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        (r.status(), r.text().await.unwrap(), loc)
    }

    pub async fn sign_in(&self, password: &str) -> (StatusCode, String, Option<String>) {
        let (_, page, _) = self.get("/login").await;
        let token = csrf(&page);
        self.post(
            "/login",
            &[
                ("_csrf", &token),
                ("email", EMAIL),
                ("password", password),
                ("next", ""),
            ],
        )
        .await
    }

    /// The CSRF token of the current session (from any signed-in page).
    pub async fn token(&self) -> String {
        csrf(&self.get("/topics").await.1)
    }
}

#[tokio::test]
async fn ui_pages_redirect_to_login_and_wrong_password_is_refused() {
    let c = TestCluster::start(1).await;
    ui_user(&c).await;
    let ui = Ui::new(&c, 0);
    for path in [
        "/",
        "/topics",
        "/keys",
        "/users",
        "/cluster",
        "/dead-letters",
        "/subscriptions",
    ] {
        let (code, _, loc) = ui.get(path).await;
        assert_eq!(code, StatusCode::SEE_OTHER, "{path}");
        assert!(loc.unwrap().starts_with("/login"), "{path}");
    }
    let (code, page, _) = ui.sign_in("wrong password").await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert!(page.contains("Wrong email or password."));
    assert_eq!(ui.get("/topics").await.0, StatusCode::SEE_OTHER);

    let (code, _, loc) = ui.sign_in(PASSWORD).await;
    assert_eq!(code, StatusCode::SEE_OTHER);
    assert_eq!(
        loc.as_deref(),
        Some("/"),
        "no next: the root, which shows the topics"
    );
    let (code, page, _) = ui.get("/topics").await;
    assert_eq!(code, StatusCode::OK);
    assert!(page.contains(EMAIL));
}

#[tokio::test]
async fn ui_forged_and_stale_forms_are_refused() {
    let c = TestCluster::start(1).await;
    ui_user(&c).await;
    let ui = Ui::new(&c, 0);
    ui.sign_in(PASSWORD).await;
    let (code, page, _) = ui.post("/topics", &[("name", "forged")]).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert!(page.contains("Nothing was changed"));
    let (code, _, _) = ui
        .post("/topics", &[("_csrf", "guess"), ("name", "forged")])
        .await;
    assert_eq!(code, StatusCode::FORBIDDEN);

    // A form of an earlier session is stale once that session ends.
    let old = ui.token().await;
    let (code, _, _) = ui.post("/logout", &[("_csrf", &old)]).await;
    assert_eq!(code, StatusCode::SEE_OTHER);
    ui.sign_in(PASSWORD).await;
    let (code, _, _) = ui
        .post("/topics", &[("_csrf", &old), ("name", "stale")])
        .await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    let topics = count_rows(&c.pool, "topics").await;
    assert_eq!(topics, 0, "nothing was created by refused forms");

    let fresh = ui.token().await;
    let (code, _, loc) = ui
        .post("/topics", &[("_csrf", &fresh), ("name", "fresh")])
        .await;
    assert_eq!(code, StatusCode::SEE_OTHER);
    assert_eq!(loc.as_deref(), Some("/topics/fresh/events"));
}

#[tokio::test]
async fn ui_sessions_expire_and_sign_out_ends_them() {
    let c = TestCluster::start(1).await;
    ui_user(&c).await;
    let ui = Ui::new(&c, 0);
    ui.sign_in(PASSWORD).await;
    assert_eq!(ui.get("/topics").await.0, StatusCode::OK);
    sqlx::query("UPDATE sessions SET expires_at = now() - interval '1 second'")
        .execute(&c.pool)
        .await
        .unwrap();
    let (code, _, loc) = ui.get("/topics").await;
    assert_eq!(code, StatusCode::SEE_OTHER);
    assert_eq!(loc.as_deref(), Some("/login?next=%2Ftopics"));

    ui.sign_in(PASSWORD).await;
    let token = ui.token().await;
    ui.post("/logout", &[("_csrf", &token)]).await;
    assert_eq!(ui.get("/topics").await.0, StatusCode::SEE_OTHER);
    let sessions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sessions WHERE expires_at > now()")
            .fetch_one(&c.pool)
            .await
            .unwrap();
    assert_eq!(sessions, 0);
}

#[tokio::test]
async fn ui_forms_show_errors_beside_fields_and_save_nothing() {
    let c = TestCluster::start(1).await;
    ui_user(&c).await;
    create_topic(&c, "orders").await;
    let ui = Ui::new(&c, 0);
    ui.sign_in(PASSWORD).await;
    let t = ui.token().await;

    let (code, page, _) = ui
        .post("/topics", &[("_csrf", &t), ("name", "Bad Name!")])
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("id=\"f-name-error\""), "{page}");
    assert!(page.contains("value=\"Bad Name!\""), "the value is kept");
    let (code, page, _) = ui
        .post("/topics", &[("_csrf", &t), ("name", "orders")])
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("Topic already exists"));

    let (code, page, _) = ui
        .post(
            "/users",
            &[("_csrf", &t), ("email", "nope"), ("password", "short")],
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("id=\"f-email-error\"") && page.contains("id=\"f-password-error\""));
    let (code, _, _) = ui
        .post(
            "/users",
            &[
                ("_csrf", &t),
                ("email", "ops@example.com"),
                ("password", "short"),
            ],
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    let users = count_rows(&c.pool, "users").await;
    assert_eq!(users, 1, "a user with a bad password is not half-saved");

    let form = [
        ("_csrf", t.as_str()),
        ("name", "hook"),
        ("topic", "orders"),
        ("kind", "webhook"),
        ("endpoint_url", "ftp://x"),
        ("settings", ""),
    ];
    let (code, page, _) = ui.post("/subscriptions", &form).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("id=\"f-endpoint_url-error\""));
    let form = [
        ("_csrf", t.as_str()),
        ("name", "hook"),
        ("topic", "missing"),
        ("kind", "api"),
        ("endpoint_url", ""),
        ("settings", ""),
    ];
    let (code, page, _) = ui.post("/subscriptions", &form).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("id=\"f-topic-error\""), "{page}");
    let subs = count_rows(&c.pool, "subscriptions").await;
    assert_eq!(subs, 0);

    let (code, page, _) = ui
        .get("/topics/orders/events?f0=nonsense&c0=%3D%3D&v0=1")
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("id=\"f-f0-error\""));
}

#[tokio::test]
async fn ui_pages_render_and_escape_event_data() {
    let c = TestCluster::start(1).await;
    ui_user(&c).await;
    create_topic(&c, "users").await;
    publish(
        &c,
        0,
        "users",
        vec![event(
            "user.created",
            r#"{"name": "<script>alert(1)</script>"}"#,
        )],
    )
    .await;
    let sub = create_subscription(&c, "pull_sub", "users", "").await;
    let ui = Ui::new(&c, 0);
    ui.sign_in(PASSWORD).await;
    for path in [
        "/topics".to_owned(),
        "/topics?q=use".to_owned(),
        "/topics/users/events".to_owned(),
        "/topics/users/events?order=oldest".to_owned(),
        "/topics/users/events?f0=data.name&c0=!%3D&v0=x".to_owned(),
        "/topics/users/events/1".to_owned(),
        "/topics/users/tail".to_owned(),
        "/topics/users/delete".to_owned(),
        "/subscriptions".to_owned(),
        "/subscriptions/new".to_owned(),
        format!("/subscriptions/{}", sub.id),
        format!("/subscriptions/{}/edit", sub.id),
        "/keys".to_owned(),
        "/dead-letters".to_owned(),
        "/users".to_owned(),
        "/cluster".to_owned(),
    ] {
        let (code, page, _) = ui.get(&path).await;
        assert_eq!(code, StatusCode::OK, "{path}: {page}");
        assert!(
            !page.contains("<script>alert"),
            "{path} must escape event data"
        );
    }
    let (_, page, _) = ui.get("/topics/users/delete").await;
    assert!(
        page.contains("<code>users_events</code>")
            && page.contains("<code>users_deliveries</code>"),
        "{page}"
    );
    let (code, _, _) = ui.get("/topics/nosuch/events").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn ui_live_tail_streams_events_published_on_another_node() {
    tail_crosses_nodes(TestCluster::start(2).await).await;
}

#[tokio::test]
async fn ui_live_tail_crosses_nodes_through_redis() {
    let name = unique_cluster_name();
    let c = TestCluster::start_with(2, |c| {
        c.redis_url = Some(redis_url());
        c.cluster_name = name.clone();
    })
    .await;
    tail_crosses_nodes(c).await;
}

/// Opens the tail stream on node 0, publishes on node 1, and waits for the event.
async fn tail_crosses_nodes(c: TestCluster) {
    ui_user(&c).await;
    create_topic(&c, "clicks").await;
    let ui = Ui::new(&c, 0);
    ui.sign_in(PASSWORD).await;
    let mut r = ui
        .http
        .get(format!("{}/topics/clicks/tail/stream", ui.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    assert_eq!(
        r.headers()["x-accel-buffering"],
        "no",
        "proxies must not buffer the tail"
    );
    let mut seen = String::new();
    let read = async {
        while !seen.contains("event: ready") {
            seen.push_str(&String::from_utf8_lossy(&r.chunk().await.unwrap().unwrap()));
        }
        publish(&c, 1, "clicks", vec![event("click", r#"{"x": 1}"#)]).await;
        while !seen.contains("\"name\":\"click\"") {
            seen.push_str(&String::from_utf8_lossy(&r.chunk().await.unwrap().unwrap()));
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("event arrives on the tail");
    assert!(seen.contains("\"offset\":1"), "{seen}");
}
