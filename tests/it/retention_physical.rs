//! What retention does to the tables: partitions are made ahead of the topic's end and at once
//! when a burst outruns them; a prune whose detach waits for an old reader blocks neither
//! publishing nor pulling; expired attempt partitions, dead letters and live spill go while
//! fresh ones stay; and the admin UI shows and edits a topic's retention.

use crate::helpers::*;
use crate::receiver::Receiver;
use crate::retention::*;
use crate::ui::{Ui, ui_user};
use crate::webhooks::create_webhook;
use eventrelay::proto::TopicRetention;
use eventrelay::topics::{TopicName, partitions};
use reqwest::StatusCode;

#[tokio::test]
async fn a_burst_past_the_partitions_made_ahead_is_stored_and_more_are_made_ahead() {
    let c = retention_cluster(1, 5).await;
    create_topic(&c, "burst").await;
    // The topic starts with [1, 6) and [6, 11); one request of 60 events needs ten more.
    let stored = publish(
        &c,
        0,
        "burst",
        (0..60).map(|i| event(&format!("e{i}"), "{}")).collect(),
    )
    .await;
    let got: Vec<i64> = stored.iter().map(|e| e.offset64).collect();
    assert_eq!(
        got,
        (1..=60).collect::<Vec<_>>(),
        "contiguous, none skipped"
    );
    assert!(partition_exists(&c, "burst_e12").await, "[56, 61) was made");
    // The owner keeps two partitions past the end: [61, 66) and [66, 71).
    eventually("partitions ahead of offset 60", || async {
        partition_exists(&c, "burst_e14").await
    })
    .await;
    assert_eq!(pull_from(&c, "burst", 0).await.total_count64, 60);
}

#[tokio::test]
async fn publishing_and_pulling_go_on_while_a_detach_waits_for_an_old_reader() {
    let c = retention_cluster(1, 4).await;
    let t = create_topic(&c, "busy").await;
    publish_each(&c, "busy", 12).await;
    // A long reader: its snapshot must end before a partition can leave the table.
    let mut reader = c.pool.begin().await.unwrap();
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *reader)
        .await
        .unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM busy_events")
        .fetch_one(&mut *reader)
        .await
        .unwrap();
    assert_eq!(seen, 12);

    let two = TopicRetention {
        max_events: 2,
        ..Default::default()
    };
    set_retention(&c, &t.id, two).await;
    wait_first(&c, "busy", 11).await;
    eventually("a detach to wait for the reader", || async {
        children(&c, "busy_events")
            .await
            .iter()
            .any(|(_, half)| *half)
    })
    .await;
    // Meanwhile the topic serves as usual, and retention keeps moving its mark.
    publish_each(&c, "busy", 5).await;
    wait_first(&c, "busy", 16).await;
    let r = pull_from(&c, "busy", 0).await;
    let got: Vec<i64> = r.events.iter().map(|e| e.offset64).collect();
    assert_eq!(got, [16, 17]);
    assert!(
        children(&c, "busy_events")
            .await
            .iter()
            .any(|(_, half)| *half),
        "the detach was still waiting while we published and pulled"
    );

    reader.commit().await.unwrap();
    eventually("partitions below the mark to be gone", || async {
        !partition_exists(&c, "busy_e1").await
            && !partition_exists(&c, "busy_e2").await
            && !partition_exists(&c, "busy_e3").await
    })
    .await;
    assert!(
        children(&c, "busy_events")
            .await
            .iter()
            .all(|(_, half)| !half)
    );
}

#[tokio::test]
async fn expired_attempts_dead_letters_and_spill_go_and_fresh_ones_stay() {
    let c = retention_cluster(1, 100).await;
    let rx = Receiver::start().await;
    create_topic(&c, "attempts").await;
    let sub = create_webhook(&c, "attempts_hook", "attempts", &rx.url("/h"), &[]).await;
    publish(&c, 0, "attempts", vec![event("e", "{}")]).await;
    rx.wait_for(20, "one delivery", |log| !log.is_empty()).await;
    eventually("the attempt record", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM attempts_deliveries")
            .fetch_one(&c.pool)
            .await
            .unwrap();
        n == 1
    })
    .await;
    let kept: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM expires_at - attempted_at)::float8 FROM attempts_deliveries",
    )
    .fetch_one(&c.pool)
    .await
    .unwrap();
    assert_eq!(kept, 7.0 * 86_400.0, "a delivered attempt is kept 7 days");

    // An attempt whose day of expiry has passed, in its own partition.
    let topic = TopicName::parse("attempts").unwrap();
    let yesterday = chrono::Utc::now() - chrono::Duration::days(1);
    partitions::ensure_deliveries(&c.pool, &topic, yesterday)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO attempts_deliveries (id, subscription_id, event_offset, event_id, attempt,
             status, expires_at)
         VALUES (gen_random_uuid(), $1, 1, gen_random_uuid(), 1, 'failed', $2)",
    )
    .bind(uuid::Uuid::parse_str(&sub.id).unwrap())
    .bind(yesterday)
    .execute(&c.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO dead_letters (id, topic, topic_name, event, errors, inserted_at) VALUES
           (gen_random_uuid(), 'old', 'old', '{}', '{}', now() - interval '31 days'),
           (gen_random_uuid(), 'new', 'new', '{}', '{}', now());
         ",
    )
    .execute(&c.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO live_spill (payload, created_at)
         VALUES ('old', now() - interval '5 minutes'), ('new', now())",
    )
    .execute(&c.pool)
    .await
    .unwrap();

    let day = partitions::deliveries_partition(&topic, Some(yesterday.date_naive()));
    eventually("yesterday's attempts to be dropped", || async {
        !partition_exists(&c, &day).await
    })
    .await;
    eventually("the dropped attempt to be counted", || async {
        let (left, pruned): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM attempts_deliveries), pruned_attempts
             FROM topic_retention WHERE name = 'attempts'",
        )
        .fetch_one(&c.pool)
        .await
        .unwrap();
        assert_eq!(left, 1, "the fresh attempt stays");
        pruned == 1
    })
    .await;
    eventually("the old dead letter and spill to go", || async {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT topic FROM dead_letters UNION ALL SELECT payload FROM live_spill ORDER BY 1",
        )
        .fetch_all(&c.pool)
        .await
        .unwrap();
        rows == ["new", "new"]
    })
    .await;
    eventually("the housekeeping totals", || async {
        let totals: Vec<(String, i64)> =
            sqlx::query_as("SELECT what, rows FROM retention_totals ORDER BY what")
                .fetch_all(&c.pool)
                .await
                .unwrap();
        totals
            == [
                ("dead_letters".to_string(), 1),
                ("live_spill".to_string(), 1),
            ]
    })
    .await;
}

#[tokio::test]
async fn the_ui_shows_and_edits_a_topics_retention() {
    let c = retention_cluster(1, 4).await;
    ui_user(&c).await;
    create_topic(&c, "shown").await;
    publish_each(&c, "shown", 6).await;
    let ui = Ui::new(&c, 0);
    ui.sign_in(crate::ui::PASSWORD).await;
    let (code, page, _) = ui.get("/topics").await;
    assert_eq!(code, StatusCode::OK);
    assert!(page.contains("/topics/shown/retention"));
    let (code, page, _) = ui.get("/topics/shown/retention").await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        page.contains("<strong id=\"policy\">forever</strong>"),
        "{page}"
    );
    assert!(page.contains("<dd id=\"retained\">6</dd>"), "{page}");

    // Every bad field is reported and nothing is saved.
    let token = ui.token().await;
    let bad = [
        ("_csrf", token.as_str()),
        ("max_age", "soon"),
        ("max_events", "2"),
        ("max_bytes", "lots"),
        ("drop_undelivered", "false"),
    ];
    let (code, page, _) = ui.post("/topics/shown/retention", &bad).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("f-max_age-error") && page.contains("f-max_bytes-error"));
    assert_eq!(pull_from(&c, "shown", 0).await.first_offset, 1);

    let good = [
        ("_csrf", token.as_str()),
        ("max_age", "7d"),
        ("max_events", "2"),
        ("max_bytes", ""),
        ("drop_undelivered", "true"),
    ];
    let (code, _, to) = ui.post("/topics/shown/retention", &good).await;
    assert_eq!(code, StatusCode::SEE_OTHER);
    assert_eq!(to.as_deref(), Some("/topics/shown/retention"));
    wait_first(&c, "shown", 5).await;
    let (_, page, _) = ui.get("/topics/shown/retention").await;
    assert!(page.contains("at most 1w old, 2 events"), "{page}");
    assert!(page.contains("<dd id=\"first-offset\">5</dd>"), "{page}");
}
