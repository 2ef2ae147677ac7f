//! `model: "auto"`: the whole conversation classified into `economy`, `standard` or `premium`, in process,
//! deterministic, without a model call.
//!
//! A score in [0, 1] adds up what makes a request hard: whether it asks for a piece of work (write,
//! explain, review…) rather than a lookup, words that ask for reasoning, design or proof and the
//! subjects of hard problems, its length (the system prompt at less weight than the conversation),
//! code (fenced blocks and code-looking lines), the history's depth, tool definitions and tool results,
//! images, and an explicit reasoning effort; words of simple tasks (greetings, a translation, a
//! definition) take some away from a short conversation. The tiers' boundaries are `router.auto_economy_below` and `router.auto_premium_from`. One pass over the
//! text (an Aho-Corasick automaton of every marker, case-insensitive): linear in the conversation's size (see `switchyard auto-eval`
//! for accuracy on the labelled set in `tests/auto/conversations.jsonl` and the cost per request).

use serde::Serialize;

use crate::schema::{ChatRequest, Content, Role};

/// The tier `auto` chose, its score and what it saw.
#[derive(Debug, Clone, Serialize)]
pub struct AutoDecision {
    pub tier: &'static str,
    pub score: f64,
    pub features: AutoFeatures,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AutoFeatures {
    /// Characters of the conversation (user, assistant and tool turns).
    pub conversation_chars: usize,
    pub system_chars: usize,
    pub turns: usize,
    pub code_blocks: usize,
    pub code_lines: usize,
    pub tools: usize,
    pub tool_results: usize,
    pub reasoning_markers: usize,
    pub simple_markers: usize,
    pub task_markers: usize,
    pub images: usize,
    /// `reasoning_effort` (or `reasoning.effort`) of `medium` or `high`.
    pub effort: bool,
}

/// The boundaries between tiers.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub economy_below: f64,
    pub premium_from: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { economy_below: 0.2, premium_from: 0.5 }
    }
}

/// Words that ask for depth: reasoning, design, proof, hard debugging, optimisation.
const REASONING: &[&str] = &[
    "prove",
    "proof",
    "step by step",
    "step-by-step",
    "derive",
    "theorem",
    "architecture",
    "architect",
    "trade-off",
    "tradeoff",
    "design a",
    "design an",
    "system design",
    "optimi",
    "complexity",
    "algorithm",
    "race condition",
    "deadlock",
    "concurren",
    "refactor",
    "root cause",
    "debug",
    "stack trace",
    "traceback",
    "analy",
    "evaluate",
    "compare and contrast",
    "rigorous",
    "formal",
    "distributed",
    "scalab",
    "security audit",
    "vulnerab",
    "migration plan",
    "strategy",
    "research",
    "think carefully",
    "edge case",
    "invariant",
    "implement a",
    "implement an",
];

/// Words of hard problems' subjects (distributed systems, concurrency, mathematics, security).
const HARD_SUBJECTS: &[&str] = &[
    "equation",
    "inequalit",
    "x^",
    "integral",
    "solve",
    "closed form",
    "expected number",
    "equilibrium",
    "protocol",
    "consistency",
    "byzantine",
    "crdt",
    "memory ordering",
    "lock-free",
    "thread-safe",
    "zero downtime",
    "exactly-once",
    "exactly once",
    "idempoten",
    "undecidab",
    "multi-tenant",
    "multi-region",
    "sharded",
    "shard",
    "kernel",
    "encryption",
    "attack",
];

/// Words that ask for a piece of work (not a lookup): what makes a request at least `standard`.
const TASK: &[&str] = &[
    "write",
    "explain",
    "create",
    "draft",
    "how do i",
    "how does",
    "how do you make",
    "compare",
    "describe",
    "outline",
    "review",
    "give me",
    "plan",
    "script",
    "function",
    "query",
    "tests",
    "difference between",
    "pros and cons",
    "tips",
    "adapt",
    "summarize this",
    "summarize the",
    "improve",
    "make it",
    "itinerary",
    "what should i",
    "what does this",
    "how can i",
    "and how do i",
];

/// Words of simple tasks.
const SIMPLE: &[&str] = &[
    "hello",
    "hi ",
    "hey",
    "thanks",
    "thank you",
    "translate",
    "what is the capital",
    "capital of",
    "define ",
    "definition of",
    "spell",
    "synonym",
    "fix the typo",
    "fix typos",
    "one word",
    "yes or no",
    "in one sentence",
    "tl;dr",
    "convert",
    "what time",
    "what day",
    "rephrase",
    "say hello",
    "classify the sentiment",
    "sentiment",
    "extract the",
    "list three",
];

/// Lines that look like code.
fn code_like(line: &str) -> bool {
    let t = line.trim();
    t.len() > 3
        && (t.ends_with(';')
            || t.ends_with('{')
            || t.starts_with("def ")
            || t.starts_with("fn ")
            || t.starts_with("func ")
            || t.starts_with("class ")
            || t.starts_with("import ")
            || t.starts_with("return ")
            || t.starts_with("#include")
            || t.starts_with("const ")
            || t.starts_with("let ")
            || t.contains(" => ")
            || t.contains("()"))
}

/// Which list a marker comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Reasoning,
    Simple,
    Task,
}

/// Every marker in one automaton (matched case-insensitively), with its list.
static MARKERS: std::sync::LazyLock<Option<(aho_corasick::AhoCorasick, Vec<Kind>)>> = std::sync::LazyLock::new(|| {
    let lists =
        [(REASONING, Kind::Reasoning), (HARD_SUBJECTS, Kind::Reasoning), (SIMPLE, Kind::Simple), (TASK, Kind::Task)];
    let patterns: Vec<&str> = lists.iter().flat_map(|(l, _)| l.iter().copied()).collect();
    let kinds: Vec<Kind> = lists.iter().flat_map(|(l, k)| std::iter::repeat_n(*k, l.len())).collect();
    let automaton = aho_corasick::AhoCorasick::builder().ascii_case_insensitive(true).build(patterns).ok()?;
    Some((automaton, kinds))
});

/// Occurrences of each marker in `text`, added to `counts` (each marker counts at most twice).
fn scan(text: &str, counts: &mut Vec<u8>) {
    let Some((automaton, kinds)) = MARKERS.as_ref() else { return };
    counts.resize(kinds.len(), 0);
    for m in automaton.find_overlapping_iter(text) {
        let c = &mut counts[m.pattern().as_usize()];
        *c = (*c + 1).min(2);
    }
}

/// The markers of one kind found.
fn total(counts: &[u8], kind: Kind) -> usize {
    let Some((_, kinds)) = MARKERS.as_ref() else { return 0 };
    counts.iter().zip(kinds).filter(|(_, k)| **k == kind).map(|(c, _)| usize::from(*c)).sum()
}

fn saturate(x: f64, at: f64) -> f64 {
    (x / at).min(1.0)
}

/// Classifies `req` for `auto`.
pub fn classify(req: &ChatRequest, thresholds: Thresholds) -> AutoDecision {
    let mut f = AutoFeatures { tools: req.tools.as_ref().map_or(0, Vec::len), ..AutoFeatures::default() };
    let mut counts: Vec<u8> = Vec::new();
    let mut system_counts: Vec<u8> = Vec::new();
    let mut in_fence = false;
    for m in &req.messages {
        let system = matches!(m.role, Role::System | Role::Developer);
        if !system {
            f.turns += 1;
        }
        if m.role == Role::Tool || m.role == Role::Function {
            f.tool_results += 1;
        }
        let mut add = |text: &str| {
            if system {
                f.system_chars += text.len();
                scan(text, &mut system_counts);
                return;
            }
            f.conversation_chars += text.len();
            for line in text.lines() {
                if line.trim_start().starts_with("```") {
                    if !in_fence {
                        f.code_blocks += 1;
                    }
                    in_fence = !in_fence;
                } else if in_fence || code_like(line) {
                    f.code_lines += 1;
                }
            }
            scan(text, &mut counts);
        };
        match &m.content {
            Some(Content::Text(t)) => add(t),
            Some(Content::Parts(parts)) => {
                for p in parts {
                    if p.image_url.is_some() {
                        f.images += 1;
                    }
                    if let Some(t) = &p.text {
                        add(t);
                    }
                }
            }
            None => {}
        }
        for call in m.tool_calls.iter().flatten() {
            add(&call.function.arguments);
        }
    }
    f.reasoning_markers = total(&counts, Kind::Reasoning) + total(&system_counts, Kind::Reasoning) / 3;
    f.simple_markers = total(&counts, Kind::Simple);
    f.task_markers = total(&counts, Kind::Task);
    let effort = req
        .extra
        .get("reasoning_effort")
        .or_else(|| req.extra.get("reasoning").and_then(|r| r.get("effort")))
        .and_then(|v| v.as_str());
    f.effort = matches!(effort, Some("medium" | "high" | "xhigh"));

    let short = 1.0 - saturate(f.conversation_chars as f64, 2000.0);
    let mut score = 0.08
        + if f.task_markers > 0 { 0.17 } else { 0.0 }
        + 0.45 * saturate(f.reasoning_markers as f64, 3.0)
        + 0.15 * saturate(f.conversation_chars as f64, 6000.0)
        + 0.06 * saturate(f.system_chars as f64, 6000.0)
        + 0.10 * saturate(f.code_blocks as f64, 2.0)
        + 0.12 * saturate(f.code_lines as f64, 40.0)
        + 0.08 * saturate(f.turns.saturating_sub(1) as f64, 10.0)
        + 0.10 * saturate(f.tools as f64, 6.0)
        + 0.10 * saturate(f.tool_results as f64, 4.0)
        + 0.05 * saturate(f.images as f64, 1.0)
        + if f.effort { 0.30 } else { 0.0 };
    score -= 0.12 * saturate(f.simple_markers as f64, 2.0) * short;
    if f.conversation_chars < 48 && f.reasoning_markers == 0 {
        score -= 0.05;
    }
    let score = (score.clamp(0.0, 1.0) * 1000.0).round() / 1000.0;
    let tier = if score < thresholds.economy_below {
        "economy"
    } else if score >= thresholds.premium_from {
        "premium"
    } else {
        "standard"
    };
    AutoDecision { tier, score, features: f }
}

pub const TIERS: [&str; 3] = ["economy", "standard", "premium"];

/// How `classify` does on a labelled set.
#[derive(Debug)]
pub struct Evaluation {
    /// `matrix[label][chosen]`, in [`TIERS`] order.
    pub matrix: [[usize; 3]; 3],
    pub total: usize,
    pub correct: usize,
    /// The conversations it got wrong: line, label, chosen tier, score, the label's reason.
    pub misses: Vec<(usize, &'static str, &'static str, f64, String)>,
    /// Nanoseconds per classification, over the set, and for a 2 KiB conversation.
    pub ns_per_request: f64,
    pub ns_per_2kib: f64,
}

/// Classifies every line of a JSONL set (`{"tier", "why", "request"}`) and compares with its label;
/// with `measure`, also times classification (a benchmark: run it on a release build).
pub fn evaluate(jsonl: &str, thresholds: Thresholds, measure: bool) -> Result<Evaluation, String> {
    #[derive(serde::Deserialize)]
    struct Labelled {
        tier: String,
        why: String,
        request: ChatRequest,
    }
    let mut set = Vec::new();
    for (i, line) in jsonl.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let item: Labelled = serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        let label = TIERS.iter().position(|t| *t == item.tier).ok_or_else(|| format!("line {}: tier", i + 1))?;
        set.push((i + 1, label, item));
    }
    let mut e = Evaluation {
        matrix: [[0; 3]; 3],
        total: set.len(),
        correct: 0,
        misses: Vec::new(),
        ns_per_request: 0.0,
        ns_per_2kib: 0.0,
    };
    for (line, label, item) in &set {
        let d = classify(&item.request, thresholds);
        let chosen = TIERS.iter().position(|t| *t == d.tier).unwrap_or(1);
        e.matrix[*label][chosen] += 1;
        if chosen == *label {
            e.correct += 1;
        } else {
            e.misses.push((*line, TIERS[*label], d.tier, d.score, item.why.clone()));
        }
    }
    if !measure {
        return Ok(e);
    }
    let rounds = 200;
    let started = std::time::Instant::now();
    for _ in 0..rounds {
        for (_, _, item) in &set {
            std::hint::black_box(classify(std::hint::black_box(&item.request), thresholds));
        }
    }
    e.ns_per_request = started.elapsed().as_nanos() as f64 / (rounds * set.len().max(1)) as f64;
    let text = "Please review the following code and explain what it does. ".repeat(40);
    let two_kib: ChatRequest = serde_json::from_value(serde_json::json!({
        "model": "auto",
        "messages": [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": text.get(..2048).unwrap_or(&text)}]
    }))
    .map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    for _ in 0..20_000 {
        std::hint::black_box(classify(std::hint::black_box(&two_kib), thresholds));
    }
    e.ns_per_2kib = started.elapsed().as_nanos() as f64 / 20_000.0;
    Ok(e)
}

/// Whether `model` asks for `auto`: `auto` itself, or Routero's `smart/<prefer>`, with that prefer.
pub fn requested(model: &str) -> Option<Option<&str>> {
    if model == "auto" {
        return Some(None);
    }
    model.strip_prefix("smart/").map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: serde_json::Value) -> ChatRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn small_talk_is_economy_and_a_proof_is_premium_and_the_score_is_deterministic() {
        let hi = chat(serde_json::json!({"model": "auto", "messages": [{"role": "user", "content": "hello! thanks"}]}));
        let d = classify(&hi, Thresholds::default());
        assert_eq!(d.tier, "economy", "{d:?}");
        let proof = chat(serde_json::json!({"model": "auto", "messages": [{"role": "user", "content":
            "Prove step by step that the algorithm's complexity is O(n log n), and analyze the edge cases of its invariant."}]}));
        let d = classify(&proof, Thresholds::default());
        assert_eq!(d.tier, "premium", "{d:?}");
        assert_eq!(classify(&proof, Thresholds::default()).score, d.score);
    }

    #[test]
    fn the_labelled_set_is_classified_well_enough() {
        let set = include_str!("../../tests/auto/conversations.jsonl");
        let e = evaluate(set, Thresholds::default(), false).unwrap();
        assert!(e.total >= 150, "{} labelled conversations", e.total);
        let accuracy = e.correct as f64 / e.total as f64;
        assert!(accuracy >= 0.8, "accuracy {accuracy:.2}; misses: {:#?}", e.misses);
        // Never two tiers off: economy for a premium conversation or the reverse.
        assert_eq!((e.matrix[0][2], e.matrix[2][0]), (0, 0), "{:?}", e.matrix);
    }

    #[test]
    fn auto_and_smart_prefer_are_recognised() {
        assert_eq!(requested("auto"), Some(None));
        assert_eq!(requested("smart/balanced"), Some(Some("balanced")));
        assert_eq!(requested("gpt-4o"), None);
    }
}
