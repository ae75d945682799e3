//! Hostile and careless clients of the admin UI, over real HTTP: `next` redirects only to
//! same-origin paths, small body limits, a topic search with `_` and `%`, a live tail that ends
//! when its session is signed out, and sign-in throttling across client addresses (clients
//! bind distinct loopback addresses, so the node sees distinct peers).

use crate::helpers::*;
use crate::ui::{EMAIL, PASSWORD, Ui, csrf, ui_user};
use reqwest::StatusCode;
use reqwest::redirect::Policy;
use std::net::IpAddr;
use std::time::Duration;

/// A cookie-keeping client whose connections come from `from` (a loopback address).
fn browser(c: &TestCluster, from: &str) -> Ui {
    let ip: IpAddr = from.parse().unwrap();
    Ui {
        base: format!("http://{}", c.nodes[0].http),
        http: reqwest::Client::builder()
            .cookie_store(true)
            .redirect(Policy::none())
            .local_address(ip)
            .build()
            .unwrap(),
    }
}

/// Signs in with `password` and `next`; the status and the `Location`.
async fn sign_in(ui: &Ui, email: &str, password: &str, next: &str) -> (StatusCode, Option<String>) {
    let (_, page, _) = ui.get("/login").await;
    let token = csrf(&page);
    let (code, _, loc) = ui
        .post(
            "/login",
            &[
                ("_csrf", &token),
                ("email", email),
                ("password", password),
                ("next", next),
            ],
        )
        .await;
    (code, loc)
}

#[tokio::test]
async fn next_redirects_only_to_same_origin_paths() {
    let c = TestCluster::start(1).await;
    ui_user(&c).await;
    let cases = [
        ("/keys", "/keys"),
        (
            "/topics/users/events?order=oldest",
            "/topics/users/events?order=oldest",
        ),
        ("//evil.example/x", "/"),
        ("https://evil.example", "/"),
        ("/\\evil.example", "/"),
        ("/\t/evil.example", "/"),
        ("/\n/evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("evil.example", "/"),
    ];
    for (next, want) in cases {
        let ui = Ui::new(&c, 0);
        let (code, loc) = sign_in(&ui, EMAIL, PASSWORD, next).await;
        assert_eq!(code, StatusCode::SEE_OTHER, "{next:?}");
        assert_eq!(loc.as_deref(), Some(want), "next = {next:?}");
        // Signed in already: /login?next= follows the same rule.
        let (_, _, loc) = ui.get(&format!("/login?next={}", urlencode(next))).await;
        assert_eq!(loc.as_deref(), Some(want), "GET /login?next={next:?}");
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn ui_bodies_are_small() {
    let c = TestCluster::start(1).await;
    ui_user(&c).await;
    let ui = Ui::new(&c, 0);
    let (_, page, _) = ui.get("/login").await;
    let token = csrf(&page);
    let huge = "x".repeat(100 * 1024);
    let (code, _, _) = ui
        .post(
            "/login",
            &[("_csrf", &token), ("email", EMAIL), ("password", &huge)],
        )
        .await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
    ui.sign_in(PASSWORD).await;
    let t = ui.token().await;
    let big = "x".repeat(200 * 1024);
    let (code, _, _) = ui.post("/topics", &[("_csrf", &t), ("name", &big)]).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn topic_search_matches_underscore_and_percent_literally() {
    let c = TestCluster::start(1).await;
    ui_user(&c).await;
    create_topic(&c, "user_events").await;
    create_topic(&c, "userxevents").await;
    let ui = Ui::new(&c, 0);
    ui.sign_in(PASSWORD).await;
    let (_, page, _) = ui.get("/topics?q=r_e").await;
    assert!(page.contains(">user_events<"), "search r_e: {page}");
    assert!(!page.contains(">userxevents<"), "_ matched any character");
    let (_, page, _) = ui.get("/topics?q=_").await;
    assert!(page.contains(">user_events<") && !page.contains(">userxevents<"));
    let (_, page, _) = ui.get("/topics?q=%25").await;
    assert!(page.contains("No topics"), "% matched anything");
}

#[tokio::test]
async fn an_open_live_tail_ends_when_its_session_signs_out() {
    let c = TestCluster::start(1).await;
    ui_user(&c).await;
    create_topic(&c, "users").await;
    let ui = Ui::new(&c, 0);
    ui.sign_in(PASSWORD).await;
    let t = ui.token().await;
    let mut tail = ui
        .http
        .get(format!("{}/topics/users/tail/stream", ui.base))
        .send()
        .await
        .unwrap();
    assert_eq!(tail.status(), StatusCode::OK);
    let first = tail.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("ready"));
    let (code, _, _) = ui.post("/logout", &[("_csrf", &t)]).await;
    assert_eq!(code, StatusCode::SEE_OTHER);
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = tail.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "the tail kept streaming after sign-out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_password_floods_stay_bounded_and_do_not_lock_out_other_addresses() {
    let c = TestCluster::start(1).await;
    ui_user(&c).await;
    let attacker = browser(&c, "127.0.0.2");
    for _ in 0..eventrelay::users::MAX_FAILURES {
        let (code, _) = sign_in(&attacker, EMAIL, "wrong password", "").await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
    }
    // The email is locked for the attacker's address: a parallel flood hashes nothing.
    let flood: Vec<_> = (0..20)
        .map(|_| {
            let ui = browser(&c, "127.0.0.2");
            tokio::spawn(async move { sign_in(&ui, EMAIL, "wrong password", "").await.0 })
        })
        .collect();
    for f in flood {
        assert_eq!(f.await.unwrap(), StatusCode::TOO_MANY_REQUESTS);
    }
    assert_eq!(
        sign_in(&attacker, EMAIL, PASSWORD, "").await.0,
        StatusCode::TOO_MANY_REQUESTS,
        "the right password from the attacking address waits out the window"
    );
    // The admin, from another address, is not locked out.
    let admin = browser(&c, "127.0.0.3");
    assert_eq!(
        sign_in(&admin, EMAIL, PASSWORD, "/keys").await,
        (StatusCode::SEE_OTHER, Some("/keys".into()))
    );
    let rows: i32 = sqlx::query_scalar(
        "SELECT failures FROM signin_failures WHERE scope = 'email' AND key = $1",
    )
    .bind(EMAIL)
    .fetch_one(&c.pool)
    .await
    .unwrap();
    assert_eq!(
        rows as u32,
        eventrelay::users::MAX_FAILURES,
        "refused tries are not counted"
    );

    // A burst from a fresh address on other emails: hashing is bounded, the rest is told
    // "busy" at once.
    let burst: Vec<_> = (0..20)
        .map(|i| {
            let ui = browser(&c, "127.0.0.4");
            tokio::spawn(async move {
                sign_in(&ui, &format!("nobody{i}@example.com"), "wrong password", "")
                    .await
                    .0
            })
        })
        .collect();
    let mut codes = Vec::new();
    for b in burst {
        codes.push(b.await.unwrap());
    }
    assert!(
        codes
            .iter()
            .all(|c| *c == StatusCode::UNAUTHORIZED || *c == StatusCode::TOO_MANY_REQUESTS),
        "{codes:?}"
    );
    assert!(codes.contains(&StatusCode::TOO_MANY_REQUESTS), "{codes:?}");
}

#[tokio::test]
async fn the_address_limit_holds_across_emails_and_nodes() {
    let c = TestCluster::start(2).await;
    ui_user(&c).await;
    let per_node = |node: usize| {
        let mut ui = browser(&c, "127.0.0.6");
        ui.base = format!("http://{}", c.nodes[node].http);
        ui
    };
    let limit = eventrelay::users::MAX_ADDR_FAILURES as usize;
    for i in 0..limit {
        // Spread over both nodes and many emails: flooding other emails resets nothing.
        let ui = per_node(i % 2);
        let (code, _) = sign_in(&ui, &format!("u{i}@example.com"), "wrong password", "").await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let (code, _) = sign_in(&per_node(0), EMAIL, PASSWORD, "").await;
    assert_eq!(
        code,
        StatusCode::TOO_MANY_REQUESTS,
        "the address is blocked on node 0"
    );
    let (code, _) = sign_in(&per_node(1), EMAIL, PASSWORD, "").await;
    assert_eq!(code, StatusCode::TOO_MANY_REQUESTS, "and on node 1");
    let (code, _) = sign_in(&browser(&c, "127.0.0.7"), EMAIL, PASSWORD, "").await;
    assert_eq!(code, StatusCode::SEE_OTHER, "another address is not");
}

#[tokio::test]
async fn over_long_passwords_touch_no_accounts_counter() {
    let c = TestCluster::start(1).await;
    ui_user(&c).await;
    let ui = browser(&c, "127.0.0.5");
    let long = "p".repeat(eventrelay::users::MAX_PASSWORD_LEN + 1);
    for _ in 0..eventrelay::users::MAX_FAILURES + 2 {
        let (code, _) = sign_in(&ui, EMAIL, &long, "").await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
    }
    let counted: i64 =
        sqlx::query_scalar("SELECT count(*) FROM signin_failures WHERE scope <> 'addr'")
            .fetch_one(&c.pool)
            .await
            .unwrap();
    assert_eq!(counted, 0, "an account's counter moved");
    assert_eq!(
        sign_in(&ui, EMAIL, PASSWORD, "").await.0,
        StatusCode::SEE_OTHER
    );
}
