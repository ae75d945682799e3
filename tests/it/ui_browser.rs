//! The admin UI in a real headless Chromium: boots a two-node cluster, creates the UI user
//! through the library, and runs `node tests/browser/ui.test.mjs` against node 0. When the
//! script's live tail is open it asks (a `@@publish <topic>` line on stdout) and this test
//! publishes over gRPC on node 1, so the event must cross nodes to reach the page.
//! It also creates a webhook subscription pointing at a real receiver, replays it from
//! offset 0 and waits for the delivered attempt on the subscription page.
//! Screenshots land in `artifacts/ui/`. Installs Chromium (apt) and playwright-core (npm ci)
//! when they are missing; never downloads a browser through npm.

use crate::helpers::*;
use crate::receiver::Receiver;
use crate::ui::{EMAIL, PASSWORD, ui_user};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Installs what the browser test needs when it is missing.
async fn ensure_tools() {
    let chromium = std::env::var("ER_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        let ok = Command::new("apt-get")
            .args(["install", "-y", "chromium"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .await
            .is_ok_and(|s| s.success());
        assert!(
            ok && Path::new(&chromium).exists(),
            "Chromium is missing and `apt-get install -y chromium` failed"
        );
    }
    let dir = root().join("tests/browser");
    if !dir.join("node_modules/playwright-core").exists() {
        let ok = Command::new("npm")
            .arg("ci")
            .current_dir(&dir)
            .status()
            .await
            .is_ok_and(|s| s.success());
        assert!(ok, "`npm ci` in tests/browser failed");
    }
}

#[tokio::test]
async fn ui_browser_end_to_end() {
    ensure_tools().await;
    let c = TestCluster::start_with(2, |c| {
        c.webhook_allowed_networks = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    ui_user(&c).await;
    let hook = Receiver::start().await;
    let artifacts = root().join("artifacts/ui");
    let mut child = Command::new("node")
        .arg(root().join("tests/browser/ui.test.mjs"))
        .env("ER_UI_URL", format!("http://{}", c.nodes[0].http))
        .env("ER_UI_EMAIL", EMAIL)
        .env("ER_UI_PASSWORD", PASSWORD)
        .env("ER_ARTIFACTS_DIR", &artifacts)
        .env("ER_WEBHOOK_URL", hook.url("/hook"))
        .env("ER_EXPECT_DELIVERIES", "1")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run node (Node.js 20 or later is required)");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let drive = async {
        let mut published = false;
        while let Some(line) = lines.next_line().await.unwrap() {
            eprintln!("browser: {line}");
            if let Some(topic) = line.strip_prefix("@@publish ") {
                publish(
                    &c,
                    1,
                    topic.trim(),
                    vec![event("browser.clicked", r#"{"button": "<b>buy</b>"}"#)],
                )
                .await;
                published = true;
            }
        }
        published
    };
    let published = tokio::time::timeout(Duration::from_secs(240), drive)
        .await
        .expect("browser test finished in time");
    let status = child.wait().await.unwrap();
    assert!(
        status.success(),
        "the browser test failed (see the output above); screenshots in {}",
        artifacts.display()
    );
    assert!(published, "the browser asked for a publish");
    assert!(artifacts.join("05-live-tail.png").exists());
    assert!(!hook.log().is_empty(), "the webhook received the event");
}
