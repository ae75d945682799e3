//! Property tests of the frame parser: what the encoder writes decodes to the same fields in
//! both versions, whatever the strings hold; v1 key order and unknown keys do not matter; a
//! cut or corrupted message never panics and never yields an over-long name; over-long names
//! and references are always refused.

use super::*;
use proptest::prelude::*;
use serde_json::{Value, json};

fn reference() -> impl Strategy<Value = Ref> {
    prop_oneof![
        Just(Ref::Null),
        ".{0,24}".prop_map(Ref::Text),
        any::<i64>().prop_map(Ref::Number),
    ]
}

fn name() -> impl Strategy<Value = String> {
    // Any characters: quotes, backslashes, controls and non-ASCII must survive encoding.
    ".{0,40}"
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(".{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn vsn() -> impl Strategy<Value = Vsn> {
    prop_oneof![Just(Vsn::V1), Just(Vsn::V2)]
}

fn ref_json(r: &Ref) -> Value {
    match r {
        Ref::Null => Value::Null,
        Ref::Text(s) => Value::from(s.as_str()),
        Ref::Number(n) => Value::from(*n),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn what_is_encoded_decodes_to_the_same_fields(
        vsn in vsn(), join_ref in reference(), reference in reference(),
        topic in name(), event in name(), payload in json_value(),
    ) {
        let text = payload.to_string();
        let wire = encode_raw(vsn, &join_ref, &reference, &topic, &event, &text);
        let f = Frame::decode(&wire, vsn).unwrap();
        prop_assert_eq!(&f.join_ref, &join_ref);
        prop_assert_eq!(&f.reference, &reference);
        prop_assert_eq!(&f.topic, &topic);
        prop_assert_eq!(&f.event, &event);
        prop_assert_eq!(f.payload.get(), text.as_str());
        // The other version never accepts it.
        let other = if vsn == Vsn::V1 { Vsn::V2 } else { Vsn::V1 };
        prop_assert!(Frame::decode(&wire, other).is_err());
    }

    #[test]
    fn v1_key_order_and_unknown_keys_do_not_matter(
        join_ref in reference(), reference in reference(), topic in name(), event in name(),
        payload in json_value(), extra in prop::collection::btree_map("x[a-z]{0,4}", json_value(), 0..3),
        order in Just((0..5).collect::<Vec<usize>>()).prop_shuffle(),
    ) {
        let fields = [
            ("join_ref", ref_json(&join_ref)),
            ("ref", ref_json(&reference)),
            ("topic", Value::from(topic.as_str())),
            ("event", Value::from(event.as_str())),
            ("payload", payload.clone()),
        ];
        // Written by hand so the shuffled order is the order on the wire.
        let mut parts: Vec<String> = order
            .iter()
            .map(|&i| format!("{}:{}", json!(fields[i].0), fields[i].1))
            .collect();
        parts.extend(extra.iter().map(|(k, v)| format!("{}:{v}", json!(k))));
        let wire = format!("{{{}}}", parts.join(","));
        let f = Frame::decode(&wire, Vsn::V1).unwrap();
        prop_assert_eq!(f.join_ref, join_ref);
        prop_assert_eq!(f.reference, reference);
        prop_assert_eq!((f.topic, f.event), (topic, event));
        let decoded: Value = serde_json::from_str(f.payload.get()).unwrap();
        prop_assert_eq!(decoded, payload);
    }

    #[test]
    fn cut_or_corrupted_messages_never_panic_nor_pass_long_names(
        vsn in vsn(), topic in name(), event in name(), payload in json_value(),
        cut in any::<prop::sample::Index>(), at in any::<prop::sample::Index>(),
        junk in "[\\[\\]{}\",:\\\\0-9a-z \u{0}-\u{1f}\u{80}-\u{10ffff}]{1,4}",
    ) {
        let wire = encode_raw(vsn, &Ref::Null, &Ref::Text("1".into()), &topic, &event, &payload.to_string());
        // Every strict prefix lacks the closing bracket or brace: always refused.
        let cuts: Vec<usize> = (0..wire.len()).filter(|i| wire.is_char_boundary(*i)).collect();
        let prefix = &wire[..cuts[cut.index(cuts.len())]];
        prop_assert!(Frame::decode(prefix, vsn).is_err());
        // Junk inserted anywhere: whatever the answer, no panic and no over-long name.
        let bounds: Vec<usize> = (0..=wire.len()).filter(|i| wire.is_char_boundary(*i)).collect();
        let i = bounds[at.index(bounds.len())];
        let corrupted = format!("{}{junk}{}", &wire[..i], &wire[i..]);
        if let Ok(f) = Frame::decode(&corrupted, vsn) {
            prop_assert!(f.topic.len() <= MAX_NAME && f.event.len() <= MAX_NAME);
        }
    }

    #[test]
    fn any_text_is_answered_without_panicking(text in "\\PC{0,64}", vsn in vsn()) {
        let _ = Frame::decode(&text, vsn);
    }

    #[test]
    fn over_long_names_and_references_are_refused(
        vsn in vsn(), extra in 1usize..64, which in 0usize..3,
    ) {
        let long = "n".repeat(MAX_NAME + extra);
        let (r, topic, event) = match which {
            0 => (Ref::Text(long), "t".to_owned(), "e".to_owned()),
            1 => (Ref::Null, long, "e".to_owned()),
            _ => (Ref::Null, "t".to_owned(), long),
        };
        let wire = encode_raw(vsn, &Ref::Null, &r, &topic, &event, "{}");
        prop_assert!(Frame::decode(&wire, vsn).is_err());
    }
}
