//! A topic's retention page: what the topic keeps (by age, count, size, or forever, and
//! whether it waits for webhook subscriptions), where it stands (retained events, first
//! retained offset and time, bytes on disk, events and attempts pruned), and the form that
//! changes the policy. Every field is parsed before anything is saved.

use super::forms::{Errors, Input, field};
use super::session::CurrentUser;
use super::{UiResult, as_admin, layout, respond, see_other};
use crate::app::App;
use crate::error::Error;
use crate::events::format_time;
use crate::retention::TopicRetention;
use crate::topics::Policy;
use crate::topics::TopicName;
use crate::topics::policy::{self, format_bytes, format_duration};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Form, Router};
use maud::{Markup, html};
use serde::Deserialize;

/// Routes of this file.
pub fn routes() -> Router<App> {
    Router::new().route("/topics/{topic}/retention", get(show).post(save))
}

const DROP: [(&str, &str); 2] = [
    (
        "false",
        "No: wait until webhook subscriptions have delivered",
    ),
    (
        "true",
        "Yes: remove them; subscriptions record the skipped offsets",
    ),
];

/// The form as posted (and as shown again with its errors).
#[derive(Deserialize, Default, Clone)]
struct RetentionForm {
    #[serde(default)]
    max_age: String,
    #[serde(default)]
    max_events: String,
    #[serde(default)]
    max_bytes: String,
    #[serde(default)]
    drop_undelivered: String,
}

impl RetentionForm {
    fn of(p: &Policy) -> Self {
        RetentionForm {
            max_age: p.max_age.map(format_duration).unwrap_or_default(),
            max_events: p.max_events.map(|n| n.to_string()).unwrap_or_default(),
            max_bytes: p.max_bytes.map(format_bytes).unwrap_or_default(),
            drop_undelivered: p.drop_undelivered.to_string(),
        }
    }

    /// The policy, or every field's error.
    fn parse(&self, errors: &mut Errors) -> Option<Policy> {
        let max_age = errors.check("max_age", policy::parse_duration(&self.max_age));
        let max_events = errors.check("max_events", policy::parse_count(&self.max_events));
        let max_bytes = errors.check("max_bytes", policy::parse_bytes(&self.max_bytes));
        let drop_undelivered = match self.drop_undelivered.as_str() {
            "true" => Some(true),
            "false" | "" => Some(false),
            _ => {
                errors.add("drop_undelivered", "choose yes or no");
                None
            }
        };
        Some(Policy {
            max_age: max_age?,
            max_events: max_events?,
            max_bytes: max_bytes?,
            drop_undelivered: drop_undelivered?,
        })
    }
}

async fn show(
    State(app): State<App>,
    Extension(user): Extension<CurrentUser>,
    Path(topic): Path<String>,
) -> UiResult {
    let name = TopicName::parse(&topic)?;
    let r = app.retention.topic(name.as_str()).await?;
    let form = RetentionForm::of(&r.policy);
    render(
        &app,
        &user,
        &name,
        &r,
        &form,
        &Errors::new(),
        StatusCode::OK,
    )
}

async fn save(
    State(app): State<App>,
    Extension(user): Extension<CurrentUser>,
    Path(topic): Path<String>,
    Form(form): Form<RetentionForm>,
) -> UiResult {
    let name = TopicName::parse(&topic)?;
    let t = app
        .topics
        .get_by_name(&name)
        .await?
        .ok_or_else(|| Error::not_found("Topic not found"))?;
    let mut errors = Errors::new();
    if let Some(policy) = form.parse(&mut errors) {
        app.retention.update(&as_admin(), t.id, policy).await?;
        return Ok(see_other(&format!("/topics/{name}/retention")));
    }
    let r = app.retention.topic(name.as_str()).await?;
    render(
        &app,
        &user,
        &name,
        &r,
        &form,
        &errors,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
}

fn render(
    app: &App,
    user: &CurrentUser,
    name: &TopicName,
    r: &TopicRetention,
    form: &RetentionForm,
    errors: &Errors,
    code: StatusCode,
) -> UiResult {
    let interval = app.retention.settings().interval.as_secs_f64();
    let body = html! {
        p.links {
            a href={ "/topics/" (name) "/events" } { "Events" } " · "
            a href={ "/topics/" (name) "/tail" } { "Live tail" } " · "
            a href="/topics" { "All topics" }
        }
        section aria-labelledby="now-h" {
            h2 #now-h { "Now" }
            (facts(r))
        }
        section aria-labelledby="edit-h" {
            h2 #edit-h { "Keep" }
            p { "Currently: " strong #policy { (r.policy.describe()) } ". "
                "Limits combine: an event goes as soon as any of them says so. Empty keeps "
                "events forever by that measure. Changes apply within "
                (format!("{interval:.0}")) " s, on every node at once." }
            form method="post" action={ "/topics/" (name) "/retention" } novalidate {
                (user.csrf())
                (errors.summary())
                (field(errors, "max_age", "Maximum age", Input::Text("text"), &form.max_age,
                    Some("e.g. 7d, 12h, 90m or seconds; empty: no limit by age")))
                (field(errors, "max_events", "Maximum events", Input::Text("text"), &form.max_events,
                    Some("keep only the newest this many; empty: no limit by count")))
                (field(errors, "max_bytes", "Maximum size", Input::Text("text"), &form.max_bytes,
                    Some("stored size of the newest events kept, e.g. 500MB, 10GB; empty: no limit by size")))
                (field(errors, "drop_undelivered", "Remove events webhooks have not delivered yet?",
                    Input::Select(&DROP), &form.drop_undelivered, None))
                button type="submit" { "Save retention" }
            }
        }
    };
    Ok(respond(
        code,
        layout(user, "/topics", &format!("Retention of {name}"), body),
    ))
}

fn facts(r: &TopicRetention) -> Markup {
    let s = &r.stats;
    let time = |t: &Option<chrono::DateTime<chrono::Utc>>| {
        t.as_ref().map(format_time).unwrap_or_else(|| "—".into())
    };
    html! {
        dl.facts {
            dt { "Events retained" } dd #retained { (s.bounds.retained()) }
            dt { "First retained offset" } dd #first-offset { (s.bounds.first) }
            dt { "Last offset" } dd #last-offset { (s.bounds.last) }
            dt { "Oldest retained event stored" } dd { (time(&s.oldest_at)) }
            dt { "On disk" } dd #bytes { (human_bytes(s.bytes_on_disk)) }
            dt { "Events removed by retention" } dd #pruned { (s.pruned_events) }
            dt { "Webhook attempts removed" } dd { (s.pruned_attempts) }
            dt { "Last removal" } dd { (time(&s.pruned_at)) }
            dt { "Layout" } dd {
                @if s.partitioned { "partitioned (retention drops whole partitions)" }
                @else { "plain table, being converted to partitions" }
            }
        }
    }
}

/// 1.5 GB, 12.0 MB, 840 B: for reading, not for typing back.
fn human_bytes(b: i64) -> String {
    let mut v = b as f64;
    for unit in ["B", "KB", "MB", "GB"] {
        if v < 1024.0 {
            return if unit == "B" {
                format!("{b} B")
            } else {
                format!("{v:.1} {unit}")
            };
        }
        v /= 1024.0;
    }
    format!("{v:.1} TB")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_parse_every_field_and_report_each_error() {
        let ok = RetentionForm {
            max_age: "7d".into(),
            max_events: "1,000".into(),
            max_bytes: "".into(),
            drop_undelivered: "true".into(),
        };
        let mut e = Errors::new();
        let p = ok.parse(&mut e).unwrap();
        assert!(e.is_empty());
        assert_eq!(p.max_events, Some(1000));
        assert!(p.drop_undelivered && p.max_bytes.is_none());
        assert_eq!(RetentionForm::of(&p).max_age, "1w");
        let bad = RetentionForm {
            max_age: "soon".into(),
            max_events: "-3".into(),
            max_bytes: "lots".into(),
            drop_undelivered: "maybe".into(),
        };
        let mut e = Errors::new();
        assert!(bad.parse(&mut e).is_none());
        for f in ["max_age", "max_events", "max_bytes", "drop_undelivered"] {
            assert!(e.get(f).is_some(), "{f} has its error");
        }
        assert_eq!(human_bytes(840), "840 B");
        assert_eq!(human_bytes(1536), "1.5 KB");
    }
}
