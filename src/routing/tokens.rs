//! Prompt token estimates with a real tokenizer (o200k, the GPT-4o/GPT-5 encoding), used only where an
//! estimate decides something: the context-window guard and budget reservations. Providers' own counts
//! remain the authority for billing.

use std::sync::OnceLock;

use tiktoken_rs::CoreBPE;

fn bpe() -> Option<&'static CoreBPE> {
    static BPE: OnceLock<Option<CoreBPE>> = OnceLock::new();
    BPE.get_or_init(|| tiktoken_rs::o200k_base().ok()).as_ref()
}

/// Builds the tokenizer ahead of the first request that needs it (it takes a moment).
pub fn warm_up() {
    let _ = bpe();
}

/// Tokens in `texts`, plus OpenAI's per-message framing overhead.
pub fn count(texts: &[&str]) -> u64 {
    let framing = 3 + 4 * texts.len() as u64;
    match bpe() {
        Some(bpe) => texts.iter().map(|t| bpe.encode_ordinary(t).len() as u64).sum::<u64>() + framing,
        // Without the tokenizer, bytes are a safe upper bound: every token is at least one byte.
        None => texts.iter().map(|t| t.len() as u64).sum::<u64>() + framing,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_tokens_with_the_o200k_encoding() {
        let n = super::count(&["Hello, world! This is a test of the tokenizer."]);
        assert!((10..=20).contains(&n), "{n}");
        assert!(super::count(&["x".repeat(4000).as_str()]) < 4000);
    }
}
