//! Tool calls in answers made of indexed content blocks (Anthropic's Messages, Bedrock's Converse): the
//! forced tool that carries a JSON answer, and, in a stream, which block is which OpenAI tool call.
//!
//! Neither API has a JSON mode, but a tool's input is always JSON: `response_format` becomes a tool the
//! model is made to call, and that tool's input comes back as the answer's content.

use serde_json::{Map, Value, json};

use crate::schema::{ChatRequest, Delta, FunctionCallDelta, ToolCallDelta};

/// The forced tool's name when the request asks for a JSON answer (`json_schema` or `json_object`).
pub fn json_tool_name(req: &ChatRequest) -> Option<String> {
    let format = req.response_format.as_ref().filter(|f| matches!(f.kind.as_str(), "json_schema" | "json_object"))?;
    let name = format.extra.get("json_schema").and_then(|s| s.get("name")).and_then(Value::as_str);
    Some(name.unwrap_or("json_response").to_owned())
}

/// The forced tool's input schema: the caller's, else any object.
pub fn json_tool_schema(req: &ChatRequest) -> Value {
    req.response_format
        .as_ref()
        .and_then(|f| f.extra.get("json_schema"))
        .and_then(|s| s.get("schema"))
        .cloned()
        .unwrap_or_else(|| json!({"type": "object"}))
}

/// A stream's tool-use blocks: content block index → tool-call index in the OpenAI stream.
#[derive(Debug, Default)]
pub struct ToolBlocks {
    json_tool: Option<String>,
    json_block: Option<u32>,
    calls: Vec<u32>,
}

impl ToolBlocks {
    pub fn for_request(req: &ChatRequest) -> ToolBlocks {
        ToolBlocks { json_tool: json_tool_name(req), ..ToolBlocks::default() }
    }

    /// Whether the answer is the forced JSON tool's input (a `tool_use` stop is then a plain stop).
    pub fn json_mode(&self) -> bool {
        self.json_tool.is_some()
    }

    /// A tool-use block opens: the delta that opens its tool call, or `None` for the JSON tool, whose
    /// input is the answer's content.
    pub fn open(&mut self, block: u32, id: Option<String>, name: String) -> Option<Delta> {
        if Some(&name) == self.json_tool.as_ref() {
            self.json_block = Some(block);
            return None;
        }
        let index = self.calls.len() as u32;
        self.calls.push(block);
        let call = ToolCallDelta {
            index,
            id,
            kind: Some("function".to_owned()),
            function: Some(FunctionCallDelta { name: Some(name), arguments: Some(String::new()), extra: Map::new() }),
            extra: Map::new(),
        };
        Some(Delta { tool_calls: Some(vec![call]), ..Delta::default() })
    }

    /// A piece of a tool block's input: content for the JSON tool, its call's arguments otherwise, `None`
    /// for a block that never opened as a tool.
    pub fn input(&self, block: u32, json: Option<String>) -> Option<Delta> {
        if self.json_block == Some(block) {
            return Some(Delta { content: json, ..Delta::default() });
        }
        let index = self.calls.iter().position(|b| *b == block)? as u32;
        let call = ToolCallDelta {
            index,
            id: None,
            kind: None,
            function: Some(FunctionCallDelta { name: None, arguments: json, extra: Map::new() }),
            extra: Map::new(),
        };
        Some(Delta { tool_calls: Some(vec![call]), ..Delta::default() })
    }
}
