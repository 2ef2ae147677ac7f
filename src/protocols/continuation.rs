//! Mid-stream continuation, the pure part: the request that asks another provider to continue a partial
//! answer, and where its text joins the text the client already has.
//!
//! - [`request`]: the conversation plus the partial answer, in the form the target takes: a final
//!   assistant turn it continues (Anthropic), the same with `prefix: true` (Mistral) or
//!   `continue_final_message` (vLLM), else the partial answer followed by a user turn asking to continue
//!   from exactly there.
//! - [`seam`]: how much of the continuation's beginning repeats the end of what was sent (a model told
//!   to continue often restates the last words, or starts the sentence again), so it is trimmed.
//!
//! Not here: when to continue, the stream's bookkeeping (`http::resume`).

use serde_json::Value;

use crate::config::presets::Prefill;
use crate::schema::{ChatRequest, Content, Message, Role};

/// Of the partial answer, at most this many bytes are quoted back in the instruction.
const QUOTED_TAIL: usize = 200;

/// An overlap shorter than this is taken as chance ("the" ending one attempt and starting the next), not
/// a repeat, unless it is the whole of what was sent.
pub const MIN_OVERLAP: usize = 12;

/// The request for a target continuing `sent`, the assistant's partial answer to `original`.
pub fn request(original: &ChatRequest, sent: &str, style: Prefill) -> ChatRequest {
    let mut req = original.clone();
    let assistant = |text: String| Message {
        role: Role::Assistant,
        content: Some(Content::Text(text)),
        name: None,
        tool_calls: None,
        tool_call_id: None,
        extra: Default::default(),
    };
    match style {
        // Anthropic refuses a final assistant turn ending in whitespace; the seam restores it.
        Prefill::AssistantTurn => req.messages.push(assistant(sent.trim_end().to_owned())),
        Prefill::PrefixFlag => {
            let mut m = assistant(sent.to_owned());
            m.extra.insert("prefix".to_owned(), Value::Bool(true));
            req.messages.push(m);
        }
        Prefill::ContinueFinalMessage => {
            req.messages.push(assistant(sent.to_owned()));
            req.extra.insert("continue_final_message".to_owned(), Value::Bool(true));
            req.extra.insert("add_generation_prompt".to_owned(), Value::Bool(false));
        }
        Prefill::Instruction => {
            req.messages.push(assistant(sent.to_owned()));
            let tail = tail(sent, QUOTED_TAIL);
            req.messages.push(Message {
                role: Role::User,
                content: Some(Content::Text(format!(
                    "Your previous reply was cut off. Continue it from exactly where it stopped: do not repeat \
                     any of it, do not comment on the interruption, and do not start over. It ended with:\n\n\
                     {tail}"
                ))),
                name: None,
                tool_calls: None,
                tool_call_id: None,
                extra: Default::default(),
            });
        }
    }
    req
}

/// The last `max` bytes of `text` or fewer, starting on a character boundary.
fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// How many bytes at the start of `next` to drop so that `sent` followed by the rest reads on without
/// repeating: the longest beginning of `next` that `sent` ends with (at least [`MIN_OVERLAP`] bytes, or
/// all of `sent`), and then, when `sent` ends in whitespace, the whitespace `next` starts with.
/// Never drops text `sent` does not end with.
pub fn seam(sent: &str, next: &str) -> usize {
    // A restatement may open with the space that would have separated it from the text before.
    let lead = next.len() - next.trim_start().len();
    let overlap = |next: &str| {
        (1..=sent.len().min(next.len()))
            .rev()
            .filter(|&k| next.is_char_boundary(k))
            .find(|&k| (k >= MIN_OVERLAP || k == sent.len()) && sent.ends_with(&next[..k]))
    };
    let cut = match (overlap(next), overlap(&next[lead..])) {
        (Some(a), Some(b)) => a.max(lead + b),
        (Some(a), None) => a,
        (None, Some(b)) => lead + b,
        (None, None) => 0,
    };
    let rest = &next[cut..];
    if sent.ends_with(char::is_whitespace) {
        return cut + (rest.len() - rest.trim_start().len());
    }
    cut
}

/// Bytes of continuation to hold back before deciding the seam: enough to see a repeat of what was sent
/// (up to this bound: a model restarting a long answer from its very beginning is not recognised).
pub fn seam_window(sent: &str) -> usize {
    sent.len().min(1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn joined(sent: &str, next: &str) -> String {
        format!("{sent}{}", &next[seam(sent, next)..])
    }

    #[test]
    fn repeated_words_at_the_seam_are_trimmed_and_chance_overlaps_kept() {
        let sent = "The gateway routes every request to the";
        assert_eq!(joined(sent, " right model."), "The gateway routes every request to the right model.");
        assert_eq!(
            joined(sent, "every request to the right model."),
            "The gateway routes every request to the right model."
        );
        assert_eq!(
            joined(sent, "The gateway routes every request to the right model."),
            "The gateway routes every request to the right model.",
            "a continuation that starts over"
        );
        // "the" alone is a chance overlap: kept.
        assert_eq!(joined("over the", "the end"), "over thethe end");
        assert_eq!(joined("Reaches a real", " Reaches a real model"), "Reaches a real model", "restated after a space");
        // Whitespace the prefill lost is not doubled.
        assert_eq!(joined("Hello world ", " again"), "Hello world again");
        assert_eq!(joined("Hello world", " again"), "Hello world again");
    }

    #[test]
    fn each_prefill_style_shapes_the_request() {
        let original: ChatRequest =
            serde_json::from_value(serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
                .unwrap();
        let r = request(&original, "Partial answer ", Prefill::AssistantTurn);
        assert_eq!(r.messages.len(), 2);
        assert!(matches!(&r.messages[1].content, Some(Content::Text(t)) if t == "Partial answer"));
        let r = request(&original, "Partial", Prefill::PrefixFlag);
        assert_eq!(r.messages[1].extra["prefix"], true);
        let r = request(&original, "Partial", Prefill::ContinueFinalMessage);
        assert_eq!(r.extra["continue_final_message"], true);
        assert_eq!(r.extra["add_generation_prompt"], false);
        let r = request(&original, "Partial", Prefill::Instruction);
        assert_eq!(r.messages.len(), 3);
        assert!(matches!(r.messages[2].role, Role::User));
        assert!(matches!(&r.messages[2].content, Some(Content::Text(t)) if t.ends_with("Partial")));
        assert_eq!(original.messages.len(), 1, "the original is left as it was");
    }

    proptest! {
        /// Text the continuation adds is never dropped, and a repeat of at least MIN_OVERLAP bytes is
        /// dropped whole (`fresh` starts with a letter `sent` never has, so it cannot be an overlap).
        #[test]
        fn the_seam_drops_only_a_repeat(sent in "[a-z ]{0,80}", fresh in "[A-Z][a-z ]{0,40}", k in 0usize..60) {
            let k = k.min(sent.len());
            let next = format!("{}{fresh}", &sent[sent.len() - k..]);
            let kept = &next[seam(&sent, &next)..];
            prop_assert!(kept.ends_with(&fresh), "kept {kept:?} of {next:?} after {sent:?}");
            if k >= MIN_OVERLAP {
                prop_assert_eq!(kept, fresh.as_str());
            }
        }
    }
}
