//! What one request may hold beyond the body's size (`[input]` and `server.max_choices`): messages,
//! tools, schema sizes, stop sequences, `logit_bias`, metadata, choices, embedding inputs.
//!
//! The bounds are checked on the canonical request every generation door builds (chat, Messages,
//! Gemini, Responses, completions), so each door refuses the same things; a door names the field in its
//! own dialect (`Rename`), so a Gemini caller reads `contents`, not `messages`. Checked before admission:
//! a refused request takes nothing from its key's limits.

use serde::Serialize;
use serde_json::Value;

use super::GatewayError;
use crate::config::InputLimits;
use crate::schema::{ChatRequest, Stop};

/// A bound a request passed: the canonical field, and what is wrong with it (without the field's name).
#[derive(Debug)]
pub struct Exceeded {
    pub param: &'static str,
    pub detail: String,
}

/// How a door spells a canonical field.
pub type Rename = fn(&'static str) -> &'static str;

/// OpenAI's chat spells the canonical fields as they are.
pub fn as_is(param: &'static str) -> &'static str {
    param
}

impl Exceeded {
    fn new(param: &'static str, detail: String) -> Self {
        Self { param, detail }
    }

    /// A 400 naming the field as the door's caller spells it.
    pub fn into_error(self, rename: Rename) -> GatewayError {
        let param = rename(self.param);
        GatewayError::invalid_value(format!("'{param}' {}", self.detail), param)
    }
}

/// A conversation with at least one message (Responses, whose history may live upstream, does not ask).
pub fn check_not_empty(req: &ChatRequest) -> Result<(), Exceeded> {
    if req.messages.is_empty() {
        return Err(Exceeded::new("messages", "must contain at least one message.".into()));
    }
    Ok(())
}

/// Every bound of a canonical chat request, and that it asks for at least one choice.
pub fn check_chat(limits: &InputLimits, max_choices: u32, req: &ChatRequest) -> Result<(), Exceeded> {
    count("messages", "messages", req.messages.len(), limits.max_messages)?;
    check_choices(req.n.unwrap_or(1), max_choices)?;
    if let Some(tools) = &req.tools {
        count("tools", "tools", tools.len(), limits.max_tools)?;
        for tool in tools {
            let Some(f) = &tool.function else { continue };
            if let Some(schema) = &f.parameters {
                let size = json_len(schema);
                if size > limits.max_schema_bytes {
                    return Err(Exceeded::new(
                        "tools",
                        format!(
                            "holds a tool ('{}') whose parameter schema is {size} bytes; at most {} are accepted.",
                            f.name, limits.max_schema_bytes
                        ),
                    ));
                }
            }
        }
    }
    if let Some(schema) =
        req.response_format.as_ref().and_then(|f| f.extra.get("json_schema")).and_then(|j| j.get("schema"))
    {
        let size = json_len(schema);
        if size > limits.max_schema_bytes {
            return Err(Exceeded::new(
                "response_format",
                format!("holds a schema of {size} bytes; at most {} are accepted.", limits.max_schema_bytes),
            ));
        }
    }
    if let Some(Stop::Many(stops)) = &req.stop {
        count("stop", "stop sequences", stops.len(), limits.max_stop_sequences)?;
    }
    if let Some(bias) = req.extra.get("logit_bias").and_then(Value::as_object) {
        count("logit_bias", "entries", bias.len(), limits.max_logit_bias)?;
    }
    if let Some(metadata) = req.extra.get("metadata") {
        check_metadata(limits, metadata)?;
    }
    Ok(())
}

/// `n`: at least one choice, and no more than the gateway's cap (each may cost a whole answer).
pub fn check_choices(n: u32, max_choices: u32) -> Result<(), Exceeded> {
    if n == 0 {
        return Err(Exceeded::new("n", "must be at least 1.".into()));
    }
    if n > max_choices {
        return Err(Exceeded::new("n", format!("may be at most {max_choices}.")));
    }
    Ok(())
}

/// How many tools a request offers, counted where the door knows more tools than the canonical request
/// carries (hosted tools a translation leaves out).
pub fn check_tools(limits: &InputLimits, tools: usize) -> Result<(), Exceeded> {
    count("tools", "tools", tools, limits.max_tools)
}

pub fn check_metadata(limits: &InputLimits, metadata: &impl Serialize) -> Result<(), Exceeded> {
    let size = json_len(metadata);
    if size > limits.max_metadata_bytes {
        return Err(Exceeded::new(
            "metadata",
            format!("is {size} bytes; at most {} are accepted.", limits.max_metadata_bytes),
        ));
    }
    Ok(())
}

pub fn check_embedding_inputs(limits: &InputLimits, inputs: usize) -> Result<(), Exceeded> {
    count("input", "inputs", inputs, limits.max_embedding_inputs)
}

pub fn check_rerank_documents(limits: &InputLimits, documents: usize) -> Result<(), Exceeded> {
    count("documents", "documents", documents, limits.max_rerank_documents)
}

fn count(param: &'static str, what: &str, n: usize, max: usize) -> Result<(), Exceeded> {
    if n > max {
        return Err(Exceeded::new(param, format!("holds {n} {what}; at most {max} are accepted.")));
    }
    Ok(())
}

/// A value's size as compact JSON, counted without writing it anywhere.
fn json_len(v: &impl Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_len_is_the_compact_serialized_size() {
        for v in [json!({}), json!({"a": [1, 2, "x"]}), json!("é"), json!(null)] {
            assert_eq!(json_len(&v), serde_json::to_vec(&v).unwrap().len());
        }
    }
}
