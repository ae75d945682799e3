//! Form building blocks shared by the UI pages: labelled fields that show their error beside
//! them (linked with `aria-describedby` so screen readers read it), and the per-form error map
//! a handler fills while it parses the posted values before calling any service, so a form
//! with an error saves nothing.

use crate::error::Error;
use maud::{Markup, html};
use std::collections::BTreeMap;

/// Errors of one posted form, by field name.
#[derive(Default, Debug)]
pub struct Errors(BTreeMap<&'static str, String>);

impl Errors {
    /// No errors yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an error for a field (the first one wins).
    pub fn add(&mut self, field: &'static str, msg: impl Into<String>) {
        self.0.entry(field).or_insert_with(|| msg.into());
    }

    /// Keeps the value of a parse, or records its error against `field`.
    pub fn check<T>(&mut self, field: &'static str, r: crate::error::Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.add(field, message(&e));
                None
            }
        }
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The error of a field.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0.get(field).map(String::as_str)
    }

    /// The summary shown above a form that was refused.
    pub fn summary(&self) -> Markup {
        html! {
            @if !self.0.is_empty() {
                p.error role="alert" { "Nothing was saved: please correct the fields marked below." }
            }
        }
    }
}

/// What a user sees of a domain error (internal causes stay in the logs).
pub fn message(e: &Error) -> String {
    if let Error::Internal(cause) = e {
        tracing::error!(error = ?cause, "internal error in the UI");
    }
    e.to_string()
}

/// Kinds of input [`field`] can render.
pub enum Input<'a> {
    /// A one-line input of that HTML type.
    Text(&'a str),
    /// A multi-line text area.
    Area,
    /// A select with (value, label) options.
    Select(&'a [(&'a str, &'a str)]),
}

/// A labelled input named `name`, with its current value, hint and error.
pub fn field(
    errors: &Errors,
    name: &'static str,
    label: &str,
    input: Input<'_>,
    value: &str,
    hint: Option<&str>,
) -> Markup {
    let id = format!("f-{name}");
    let err = errors.get(name);
    let err_id = format!("{id}-error");
    let hint_id = format!("{id}-hint");
    let described = match (err.is_some(), hint.is_some()) {
        (true, true) => Some(format!("{err_id} {hint_id}")),
        (true, false) => Some(err_id.clone()),
        (false, true) => Some(hint_id.clone()),
        (false, false) => None,
    };
    let invalid = err.map(|_| "true");
    html! {
        div.field {
            label for=(id) { (label) }
            @match input {
                Input::Text(kind) => {
                    input id=(id) type=(kind) name=(name) value=(value)
                        aria-invalid=[invalid] aria-describedby=[described.as_deref()];
                }
                Input::Area => {
                    textarea id=(id) name=(name) rows="3"
                        aria-invalid=[invalid] aria-describedby=[described.as_deref()] { (value) }
                }
                Input::Select(options) => {
                    select id=(id) name=(name) aria-invalid=[invalid] aria-describedby=[described.as_deref()] {
                        @for (v, l) in options {
                            option value=(v) selected[*v == value] { (l) }
                        }
                    }
                }
            }
            @if let Some(e) = err {
                p.field-error id=(err_id) { (e) }
            }
            @if let Some(h) = hint {
                p.hint id=(hint_id) { (h) }
            }
        }
    }
}

/// Previous/next links of a page-numbered list; `base` already ends in `?...&` or `?`.
pub fn pager(base: &str, page: i64, previous: i64, next: i64, total_pages: i64) -> Markup {
    html! {
        nav.pager aria-label="Pages" {
            @if previous > 0 { a href={ (base) "page=" (previous) } rel="prev" { "← Previous" } }
            span { "Page " (page) " of " (total_pages.max(1)) }
            @if next > 0 { a href={ (base) "page=" (next) } rel="next" { "Next →" } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_the_first_message_and_render_beside_the_field() {
        let mut e = Errors::new();
        e.add("name", "first");
        e.add("name", "second");
        assert_eq!(e.get("name"), Some("first"));
        let html = field(&e, "name", "Name", Input::Text("text"), "<x>", None).into_string();
        assert!(html.contains("first") && html.contains("aria-invalid=\"true\""));
        assert!(html.contains("&lt;x&gt;"), "values are escaped: {html}");
    }
}
