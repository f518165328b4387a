//! A provider's answer as it might arrive, for property tests of the parsers that read one.
//! Shared by the domain's edge parsers and infra's usage figures (included by path).

use proptest::prelude::*;

/// JSON-ish and SSE-ish bytes: usage fields with any numbers, frames cut anywhere.
pub(crate) fn answer() -> impl Strategy<Value = Vec<u8>> {
    let number = prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        Just("-1".to_owned()),
        Just("1e400".to_owned()),
        Just("null".to_owned())
    ];
    let usage = (number.clone(), number).prop_map(|(a, b)| {
        format!(r#"{{"model":"m","usage":{{"prompt_tokens":{a},"completion_tokens":{b},"input_tokens":{a}}},"usageMetadata":{{"promptTokenCount":{b}}}}}"#)
    });
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..400),
        usage.clone().prop_map(String::into_bytes),
        (usage, 0usize..200).prop_map(|(json, cut)| {
            let framed =
                format!(": keep-alive\n\nevent: message_delta\ndata: {json}\n\ndata: [DONE]\n\n");
            framed.as_bytes()[..cut.min(framed.len())].to_vec()
        }),
    ]
}
