//! Admin UI controls: a webhook subscription's pause, resume, replay (with its field error)
//! and edit through the forms; API key grants with their field errors; the security headers
//! of UI pages; the session cookie's attributes; and the bound on live tails per node.

use crate::helpers::*;
use crate::ui::{EMAIL, PASSWORD, Ui, client, csrf, ui_user};
use reqwest::StatusCode;

#[tokio::test]
async fn ui_webhook_subscription_pause_resume_replay_and_edit() {
    let c = TestCluster::start(1).await;
    ui_user(&c).await;
    create_topic(&c, "orders").await;
    let ui = Ui::new(&c, 0);
    ui.sign_in(PASSWORD).await;
    let t = ui.token().await;
    let form = [
        ("_csrf", t.as_str()),
        ("name", "hook"),
        ("topic", "orders"),
        ("kind", "webhook"),
        ("endpoint_url", "http://127.0.0.1:9/x"),
        ("settings", ""),
    ];
    let (code, _, loc) = ui.post("/subscriptions", &form).await;
    assert_eq!(code, StatusCode::SEE_OTHER);
    let detail = loc.unwrap();
    let (code, page, _) = ui.get(&detail).await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        page.contains("id=\"cursor\"") && page.contains("id=\"lag\""),
        "{page}"
    );

    let (code, _, _) = ui.post(&format!("{detail}/pause"), &[("_csrf", &t)]).await;
    assert_eq!(code, StatusCode::SEE_OTHER);
    assert!(
        ui.get(&detail)
            .await
            .1
            .contains("<dd id=\"state\">paused</dd>")
    );
    ui.post(&format!("{detail}/resume"), &[("_csrf", &t)]).await;
    assert!(
        ui.get(&detail)
            .await
            .1
            .contains("<dd id=\"state\">active</dd>")
    );

    let (code, page, _) = ui
        .post(
            &format!("{detail}/replay"),
            &[("_csrf", &t), ("offset", "99")],
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        page.contains("id=\"f-offset-error\"") && page.contains("past the topic"),
        "{page}"
    );
    let (code, _, _) = ui
        .post(
            &format!("{detail}/replay"),
            &[("_csrf", &t), ("offset", "0")],
        )
        .await;
    assert_eq!(code, StatusCode::SEE_OTHER);

    let edit = [
        ("_csrf", t.as_str()),
        ("name", "hook2"),
        ("identifier", ""),
        ("endpoint_url", ""),
        ("settings", ""),
    ];
    let (code, page, _) = ui.post(&format!("{detail}/edit"), &edit).await;
    assert_eq!(
        code,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a webhook needs its URL"
    );
    assert!(page.contains("id=\"f-endpoint_url-error\""));
    let edit = [
        ("_csrf", t.as_str()),
        ("name", "hook2"),
        ("identifier", "42"),
        ("endpoint_url", "https://example.com/h"),
        ("settings", "max_attempts=3"),
    ];
    let (code, _, _) = ui.post(&format!("{detail}/edit"), &edit).await;
    assert_eq!(code, StatusCode::SEE_OTHER);
    let page = ui.get(&detail).await.1;
    assert!(
        page.contains("orders:42") && page.contains("https://example.com/h"),
        "{page}"
    );
}

#[tokio::test]
async fn ui_key_grants_show_field_errors_and_pages_forbid_framing() {
    let c = TestCluster::start(1).await;
    ui_user(&c).await;
    let ui = Ui::new(&c, 0);
    ui.sign_in(PASSWORD).await;
    let r = ui
        .http
        .get(format!("{}/keys", ui.base))
        .send()
        .await
        .unwrap();
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert_eq!(r.headers()["x-frame-options"], "DENY");

    let t = ui.token().await;
    let form = [
        ("_csrf", t.as_str()),
        ("name", "p"),
        ("key_type", "producer"),
        ("topics", "Bad Topic"),
        ("subscriptions", ""),
    ];
    let (code, page, _) = ui.post("/keys", &form).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("id=\"f-topics-error\""));
    let keys = count_rows(&c.pool, "api_keys").await;
    assert_eq!(keys, 1, "only the cluster's admin key exists");

    let form = [
        ("_csrf", t.as_str()),
        ("name", "p"),
        ("key_type", "producer"),
        ("topics", "users"),
        ("subscriptions", ""),
    ];
    let (code, page, _) = ui.post("/keys", &form).await;
    assert_eq!(code, StatusCode::CREATED);
    // "Manage this key" links to the key's page.
    let at = page.find("href=\"/keys/").unwrap() + 6;
    let key_path = page[at..].split('"').next().unwrap().to_owned();
    let grants = format!("{key_path}/grants");
    let (code, page, _) = ui
        .post(
            &grants,
            &[("_csrf", &t), ("op", "add_topic"), ("value", "NOPE!")],
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        page.contains("id=\"add_topic-error\"") && page.contains("value=\"NOPE!\""),
        "{page}"
    );
    let (code, _, _) = ui
        .post(
            &grants,
            &[("_csrf", &t), ("op", "add_topic"), ("value", "orders:7")],
        )
        .await;
    assert_eq!(code, StatusCode::SEE_OTHER);
    let page = ui.get(&key_path).await.1;
    assert!(page.contains("orders:7") && page.contains("users"));
    let (code, page, _) = ui
        .post(
            &grants,
            &[
                ("_csrf", &t),
                ("op", "add_subscription"),
                ("value", "0190e000-0000-7000-8000-000000000000"),
            ],
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("id=\"add_subscription-error\""));
}

#[tokio::test]
async fn ui_cookie_is_http_only_strict_secure_behind_https_and_lasts_the_configured_hours() {
    let c = TestCluster::start_with(1, |c| c.ui_session_hours = 2).await;
    ui_user(&c).await;
    let http = client();
    let base = format!("http://{}", c.nodes[0].http);
    let page = http
        .get(format!("{base}/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = http
        .post(format!("{base}/login"))
        .header("x-forwarded-proto", "https")
        .form(&[
            ("_csrf", csrf(&page).as_str()),
            ("email", EMAIL),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("er_session="))
        .expect("session cookie");
    for attr in [
        "HttpOnly",
        "SameSite=Strict",
        "Secure",
        "Max-Age=7200",
        "Path=/",
    ] {
        assert!(cookie.contains(attr), "{attr} missing in {cookie}");
    }
    let left: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM max(expires_at) - now())::float8 FROM sessions",
    )
    .fetch_one(&c.pool)
    .await
    .unwrap();
    assert!(
        (7000.0..=7200.0).contains(&left),
        "the session row expires with the cookie: {left}"
    );
}

#[tokio::test]
async fn ui_live_tails_per_node_are_bounded() {
    let c = TestCluster::start(1).await;
    ui_user(&c).await;
    create_topic(&c, "busy").await;
    let ui = Ui::new(&c, 0);
    ui.sign_in(PASSWORD).await;
    let url = format!("{}/topics/busy/tail/stream", ui.base);
    let mut open = Vec::new();
    for _ in 0..eventrelay::http::ui::MAX_TAILS {
        let r = ui.http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        open.push(r);
    }
    let r = ui.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    open.pop();
    // The dropped stream's permit comes back once the server notices the closed connection.
    let mut ok = false;
    for _ in 0..200 {
        if ui.http.get(&url).send().await.unwrap().status() == StatusCode::OK {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ok, "a closed tail frees its place");
}
