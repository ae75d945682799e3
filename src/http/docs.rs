//! API documentation generated from the commented proto: the node renders the descriptor set
//! it was built with (comments included, thanks to protox's source info) into one HTML page at
//! `/docs`, so the documentation can never drift from the API the node serves.

use crate::proto::FILE_DESCRIPTOR_SET;
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{FieldDescriptorProto, FileDescriptorProto, FileDescriptorSet};
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::OnceLock;

/// The rendered page, built once.
pub fn page() -> &'static str {
    static PAGE: OnceLock<String> = OnceLock::new();
    PAGE.get_or_init(|| match FileDescriptorSet::decode(FILE_DESCRIPTOR_SET) {
        Ok(set) => render(&set),
        Err(e) => format!(
            "<p>descriptor set unreadable: {}</p>",
            escape(&e.to_string())
        ),
    })
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Leading comments by source path (see descriptor.proto's SourceCodeInfo.Location.path).
fn comments(file: &FileDescriptorProto) -> HashMap<Vec<i32>, String> {
    let mut out = HashMap::new();
    for loc in file.source_code_info.iter().flat_map(|i| &i.location) {
        let text = loc.leading_comments().trim();
        if !text.is_empty() {
            out.insert(loc.path.clone(), text.to_owned());
        }
    }
    out
}

fn type_name(f: &FieldDescriptorProto) -> String {
    let base = match f.r#type() {
        Type::Message | Type::Enum => {
            let n = f.type_name().trim_start_matches(".eventrelay.");
            return format!(
                "{}<a href=\"#{n}\">{n}</a>",
                if f.label() == Label::Repeated {
                    "repeated "
                } else {
                    ""
                }
            );
        }
        Type::String => "string",
        Type::Int32 => "int32",
        Type::Int64 => "int64",
        Type::Bool => "bool",
        Type::Bytes => "bytes",
        Type::Double => "double",
        Type::Float => "float",
        Type::Uint32 => "uint32",
        Type::Uint64 => "uint64",
        _ => "scalar",
    };
    if f.label() == Label::Repeated {
        format!("repeated {base}")
    } else {
        base.to_owned()
    }
}

fn render(set: &FileDescriptorSet) -> String {
    let mut h = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>EventRelay API</title>\
         <style>body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}\
         table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}\
         code,td:nth-child(2){font-family:ui-monospace,monospace}h3{margin-top:2rem}</style></head><body>\
         <h1>EventRelay gRPC API</h1>",
    );
    for file in set.file.iter().filter(|f| f.package() == "eventrelay") {
        let c = comments(file);
        let doc = |path: &[i32]| escape(c.get(path).map(String::as_str).unwrap_or(""));
        let _ = write!(h, "<p>{}</p>", doc(&[12]).replace("\n\n", "</p><p>"));
        for (si, svc) in file.service.iter().enumerate() {
            let si = si as i32;
            let _ = write!(
                h,
                "<h2>service {}</h2><p>{}</p><table><tr><th>RPC</th><th>request → response</th><th>description</th></tr>",
                escape(svc.name()),
                doc(&[6, si])
            );
            for (mi, m) in svc.method.iter().enumerate() {
                let (req, resp) = (
                    m.input_type().trim_start_matches(".eventrelay."),
                    m.output_type().trim_start_matches(".eventrelay."),
                );
                let stream = if m.server_streaming() { "stream " } else { "" };
                let _ = write!(
                    h,
                    "<tr><td id=\"rpc-{n}\"><b>{n}</b></td><td><a href=\"#{req}\">{req}</a> → {stream}<a href=\"#{resp}\">{resp}</a></td><td>{d}</td></tr>",
                    n = escape(m.name()),
                    d = doc(&[6, si, 2, mi as i32]),
                );
            }
            h.push_str("</table>");
        }
        h.push_str("<h2>Messages</h2>");
        for (mi, msg) in file.message_type.iter().enumerate() {
            let mi = mi as i32;
            let _ = write!(
                h,
                "<h3 id=\"{n}\">{n}</h3><p>{}</p>",
                doc(&[4, mi]),
                n = escape(msg.name())
            );
            if msg.field.is_empty() {
                continue;
            }
            h.push_str("<table><tr><th>field</th><th>type</th><th>#</th><th>description</th></tr>");
            for (fi, f) in msg.field.iter().enumerate() {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(f.name()),
                    type_name(f),
                    f.number(),
                    doc(&[4, mi, 2, fi as i32])
                );
            }
            h.push_str("</table>");
        }
        h.push_str("<h2>Enums</h2>");
        for (ei, e) in file.enum_type.iter().enumerate() {
            let ei = ei as i32;
            let _ = write!(
                h,
                "<h3 id=\"{n}\">{n}</h3><p>{}</p><table>",
                doc(&[5, ei]),
                n = escape(e.name())
            );
            for (vi, v) in e.value.iter().enumerate() {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(v.name()),
                    v.number(),
                    doc(&[5, ei, 2, vi as i32])
                );
            }
            h.push_str("</table>");
        }
    }
    h.push_str("</body></html>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_every_rpc_and_message_with_comments() {
        let p = page();
        for rpc in [
            "PublishEvents",
            "PullEvents",
            "CreateJWT",
            "ListDeadLetters",
        ] {
            assert!(p.contains(&format!("id=\"rpc-{rpc}\"")), "{rpc} missing");
        }
        assert!(p.contains("id=\"PullEventsResponse\""));
        assert!(
            p.contains("ceil(total_count / batch_size)"),
            "field comments are rendered"
        );
        assert!(
            p.contains("Publish events to one topic."),
            "method comments are rendered"
        );
    }
}
