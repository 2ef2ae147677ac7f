//! Switchyard's canonical wire types: OpenAI's chat-completions shapes.
//!
//! Every front door decodes into these and every adapter translates from them. Each struct types only the
//! fields the gateway reads, validates or translates, and keeps everything else in `extra`, so a field we do
//! not model is forwarded untouched in both directions. This module is a leaf: it imports nothing of ours.
//! Not here: provider-specific shapes (they live, private, in their adapter).

use std::borrow::Cow;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub type Extra = Map<String, Value>;

/// Switchyard's own request fields (`prefer`, `models`): they travel in a request's extras to the router,
/// which reads them, and are never sent to a provider.
pub const OWN_FIELDS: [&str; 2] = ["prefer", "models"];

/// Removes Switchyard's own fields from a request's extras, before it goes to a provider.
pub fn strip_own_fields(extra: &mut Extra) {
    for field in OWN_FIELDS {
        extra.remove(field);
    }
}

/// `Deserialize` for a struct whose named fields are typed and whose other fields go, untouched, into
/// its `extra` map. serde's `#[serde(flatten)]` does the same by first buffering every field of the
/// object as a generic value and then decoding each from that buffer, which was a tenth of a request's
/// CPU; this decodes each known field in place and buffers only the unknown ones.
///
/// `field as "json_name"` renames; `field = path` gives a function that supplies a missing field. Any
/// other missing field is `None` if it is an `Option` and an error (`missing field`) otherwise. A known
/// field given twice is an error, as it is for serde's derive: two values for `model` are ambiguous.
macro_rules! with_extra {
    ($ty:ident { $($field:ident $(as $key:literal)? $(= $default:path)?),* $(,)? }) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct FieldsVisitor;
                impl<'de> Visitor<'de> for FieldsVisitor {
                    type Value = $ty;

                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str(concat!("a JSON object (", stringify!($ty), ")"))
                    }

                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$ty, A::Error> {
                        $(let mut $field = None;)*
                        let mut extra = Extra::new();
                        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                            match &*key {
                                $(with_extra!(@key $field $($key)?) => {
                                    if $field.is_some() {
                                        return Err(de::Error::duplicate_field(with_extra!(@key $field $($key)?)));
                                    }
                                    $field = Some(map.next_value()?);
                                })*
                                _ => {
                                    let value: Value = map.next_value()?;
                                    extra.insert(key.into_owned(), value);
                                }
                            }
                        }
                        Ok($ty {
                            $($field: match $field {
                                Some(value) => value,
                                None => with_extra!(@missing $field $($key)? ; $($default)?),
                            },)*
                            extra,
                        })
                    }
                }
                deserializer.deserialize_map(FieldsVisitor)
            }
        }
    };
    (@key $field:ident) => { stringify!($field) };
    (@key $field:ident $key:literal) => { $key };
    (@missing $field:ident $($key:literal)? ; $default:path) => { $default() };
    (@missing $field:ident $($key:literal)? ; ) => {
        Deserialize::deserialize(Missing::<A::Error>(with_extra!(@key $field $($key)?), PhantomData))?
    };
}

/// An object key, borrowed from the input when it can be (no escapes in it).
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// What a field that is absent decodes from: `None` for an `Option`, `missing field` for anything else
/// (serde's derive does the same for fields without a default).
struct Missing<E>(&'static str, PhantomData<E>);

impl<'de, E: de::Error> Deserializer<'de> for Missing<E> {
    type Error = E;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, E> {
        Err(E::missing_field(self.0))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, E> {
        visitor.visit_none()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit unit_struct
        newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// `POST /v1/chat/completions` request body.
#[derive(Debug, Clone, Serialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ChatRequest {
    pub fn is_streaming(&self) -> bool {
        self.stream == Some(true)
    }

    /// Whether the caller asked for the final usage chunk of a stream.
    pub fn wants_stream_usage(&self) -> bool {
        self.stream_options.as_ref().and_then(|o| o.include_usage) == Some(true)
    }

    /// The caller's cap on generated tokens, whichever spelling it used.
    pub fn max_output_tokens(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
    Function,
}

#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Message content: a plain string or an array of typed parts.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// Decoded in place (serde's `untagged` would buffer the value and then try each form).
impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContentVisitor;
        impl<'de> Visitor<'de> for ContentVisitor {
            type Value = Content;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of content parts")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Content, E> {
                Ok(Content::Text(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Content, E> {
                Ok(Content::Text(v))
            }

            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Content, A::Error> {
                let mut parts = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
                while let Some(part) = seq.next_element()? {
                    parts.push(part);
                }
                Ok(Content::Parts(parts))
            }
        }
        deserializer.deserialize_any(ContentVisitor)
    }
}

impl Delta {
    /// Whether this delta carries anything a client would show or act on.
    pub fn is_empty(&self) -> bool {
        self.content.as_deref().is_none_or(str::is_empty)
            && self.reasoning_content.as_deref().is_none_or(str::is_empty)
            && self.tool_calls.as_ref().is_none_or(Vec::is_empty)
            && self.extra.is_empty()
    }
}

impl ChatChunk {
    /// A chunk of the one choice a translated stream has (index 0): `delta`, and the finish reason when
    /// it ends.
    pub fn single(id: &str, created: u64, model: &str, delta: Delta, finish: Option<&str>) -> ChatChunk {
        ChatChunk {
            id: id.to_owned(),
            object: "chat.completion.chunk".to_owned(),
            created,
            model: model.to_owned(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish.map(str::to_owned),
                extra: Extra::new(),
            }],
            usage: None,
            extra: Extra::new(),
        }
    }

    /// The last chunk of a stream that reports usage: no choices, only the usage.
    pub fn usage_only(id: &str, created: u64, model: &str, usage: Usage) -> ChatChunk {
        let mut chunk = ChatChunk::single(id, created, model, Delta::default(), None);
        chunk.choices.clear();
        chunk.usage = Some(usage);
        chunk
    }

    /// A chunk with nothing to show: only a role, or an empty first delta.
    pub fn is_preamble(&self) -> bool {
        self.usage.is_none() && self.choices.iter().all(|c| c.finish_reason.is_none() && c.delta.is_empty())
    }
}

impl Content {
    /// The text of the content, parts joined; images and other parts contribute nothing.
    pub fn text_len(&self) -> usize {
        match self {
            Content::Text(t) => t.len(),
            Content::Parts(parts) => parts.iter().filter_map(|p| p.text.as_ref()).map(String::len).sum(),
        }
    }

    pub fn to_text(&self) -> String {
        match self {
            Content::Text(t) => t.clone(),
            Content::Parts(parts) => parts.iter().filter_map(|p| p.text.as_deref()).collect::<Vec<_>>().join("\n"),
        }
    }

    pub fn has_image(&self) -> bool {
        matches!(self, Content::Parts(parts) if parts.iter().any(|p| p.image_url.is_some()))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<ImageUrl>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// An image given inline as `data:<mime>;base64,<data>`: its MIME type and base64 payload.
pub fn inline_image(url: &str) -> Option<(&str, &str)> {
    let (meta, data) = url.strip_prefix("data:")?.split_once(',')?;
    Some((meta.strip_suffix(";base64")?, data))
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageUrl {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Serialize)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionDef>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Serialize)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `"none" | "auto" | "required"` or `{"type":"function","function":{"name":…}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    Mode(String),
    Named(Map<String, Value>),
}

impl ToolChoice {
    pub fn is_none(&self) -> bool {
        matches!(self, ToolChoice::Mode(m) if m == "none")
    }

    /// What the caller asked for, or the offending value when it is not one of OpenAI's forms.
    pub fn mode(&self) -> Result<ToolChoiceMode<'_>, String> {
        match self {
            ToolChoice::Mode(m) => match m.as_str() {
                "auto" => Ok(ToolChoiceMode::Auto),
                "required" => Ok(ToolChoiceMode::Required),
                "none" => Ok(ToolChoiceMode::None),
                other => Err(format!("Unsupported tool_choice '{other}'.")),
            },
            ToolChoice::Named(obj) => obj
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .map(ToolChoiceMode::Function)
                .ok_or_else(|| "tool_choice must name a function.".to_owned()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolChoiceMode<'a> {
    Auto,
    Required,
    None,
    Function(&'a str),
}

#[derive(Debug, Clone, Serialize)]
pub struct ResponseFormat {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A complete tool call, in a request's history or a response message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    pub function: FunctionCall,
    #[serde(flatten)]
    pub extra: Extra,
}

fn function_kind() -> String {
    "function".to_owned()
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionCall {
    pub name: String,
    pub arguments: String,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Non-streamed `chat.completion` response.
#[derive(Debug, Clone, Serialize)]
pub struct ChatResponse {
    pub id: String,
    #[serde(default = "completion_object")]
    pub object: String,
    #[serde(default)]
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(flatten)]
    pub extra: Extra,
}

fn completion_object() -> String {
    "chat.completion".to_owned()
}

#[derive(Debug, Clone, Serialize)]
pub struct Choice {
    pub index: u32,
    pub message: ResponseMessage,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResponseMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<String>,
    /// Reasoning text, in the field OpenAI-compatible clients read (DeepSeek's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ResponseMessage {
    /// An assistant's answer from its parts as a translated provider gave them: text (kept, even empty,
    /// when there are no tool calls, as OpenAI does), reasoning, tool calls.
    pub fn assistant(text: String, reasoning: String, calls: Vec<ToolCall>) -> ResponseMessage {
        ResponseMessage {
            role: "assistant".to_owned(),
            content: (!text.is_empty() || calls.is_empty()).then_some(text),
            reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
            tool_calls: (!calls.is_empty()).then_some(calls),
            extra: Map::new(),
        }
    }
}

/// Token usage. Detail objects keep fields we do not read.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Usage {
    pub fn cached_tokens(&self) -> u64 {
        self.prompt_tokens_details.as_ref().and_then(|d| d.cached_tokens).unwrap_or(0)
    }

    pub fn cache_write_tokens(&self) -> u64 {
        self.prompt_tokens_details.as_ref().and_then(|d| d.cache_write_tokens).unwrap_or(0)
    }

    pub fn reasoning_tokens(&self) -> u64 {
        self.completion_tokens_details.as_ref().and_then(|d| d.reasoning_tokens).unwrap_or(0)
    }

    /// Adds another call's usage to this one (an answer made of several calls is billed for each).
    pub fn add(&mut self, other: &Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
        let (cached, written, reasoning) =
            (other.cached_tokens(), other.cache_write_tokens(), other.reasoning_tokens());
        if cached + written > 0 {
            let d = self.prompt_tokens_details.get_or_insert_with(Default::default);
            d.cached_tokens = Some(d.cached_tokens.unwrap_or(0) + cached);
            d.cache_write_tokens = Some(d.cache_write_tokens.unwrap_or(0) + written);
        }
        if reasoning > 0 {
            let d = self.completion_tokens_details.get_or_insert_with(Default::default);
            d.reasoning_tokens = Some(d.reasoning_tokens.unwrap_or(0) + reasoning);
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens read from the provider's cache (included in `prompt_tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
    /// Prompt tokens written to the provider's cache (Anthropic's cache creation; included in `prompt_tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_tokens: Option<u64>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CompletionTokensDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One streamed `chat.completion.chunk`.
#[derive(Debug, Clone, Serialize)]
pub struct ChatChunk {
    #[serde(default)]
    pub id: String,
    #[serde(default = "chunk_object")]
    pub object: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(flatten)]
    pub extra: Extra,
}

fn chunk_object() -> String {
    "chat.completion.chunk".to_owned()
}

#[derive(Debug, Clone, Serialize)]
pub struct ChunkChoice {
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub delta: Delta,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ToolCallDelta {
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCallDelta>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FunctionCallDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `POST /v1/embeddings` request body.
#[derive(Debug, Clone, Serialize)]
pub struct EmbeddingRequest {
    pub model: String,
    pub input: EmbeddingInput,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<EncodingFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<u32>),
    TokenBatches(Vec<Vec<u32>>),
}

impl EmbeddingInput {
    /// The inputs as texts; token-id inputs have none.
    pub fn texts(&self) -> Option<Vec<&str>> {
        match self {
            EmbeddingInput::One(s) => Some(vec![s.as_str()]),
            EmbeddingInput::Many(v) => Some(v.iter().map(String::as_str).collect()),
            EmbeddingInput::Tokens(_) | EmbeddingInput::TokenBatches(_) => None,
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            EmbeddingInput::One(s) => s.is_empty(),
            EmbeddingInput::Many(v) => v.is_empty() || v.iter().any(String::is_empty),
            EmbeddingInput::Tokens(v) => v.is_empty(),
            EmbeddingInput::TokenBatches(v) => v.is_empty() || v.iter().any(Vec::is_empty),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    Float,
    Base64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EmbeddingResponse {
    #[serde(default = "list_object")]
    pub object: String,
    pub data: Vec<Embedding>,
    #[serde(default)]
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<EmbeddingUsage>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl EmbeddingResponse {
    /// A list of float vectors, in input order, for `model`, with the input's token count.
    pub fn floats(model: &str, vectors: impl IntoIterator<Item = Vec<f64>>, tokens: u64) -> EmbeddingResponse {
        EmbeddingResponse {
            object: list_object(),
            data: vectors
                .into_iter()
                .enumerate()
                .map(|(i, values)| Embedding {
                    object: embedding_object(),
                    index: i as u32,
                    embedding: EmbeddingVector::Float(values),
                    extra: Extra::new(),
                })
                .collect(),
            model: model.to_owned(),
            usage: Some(EmbeddingUsage { prompt_tokens: tokens, total_tokens: tokens, extra: Extra::new() }),
            extra: Extra::new(),
        }
    }
}

fn list_object() -> String {
    "list".to_owned()
}

#[derive(Debug, Clone, Serialize)]
pub struct Embedding {
    #[serde(default = "embedding_object")]
    pub object: String,
    pub index: u32,
    pub embedding: EmbeddingVector,
    #[serde(flatten)]
    pub extra: Extra,
}

fn embedding_object() -> String {
    "embedding".to_owned()
}

/// A vector as floats, or as base64 of little-endian `f32`s (what the OpenAI SDKs ask for by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingVector {
    Float(Vec<f64>),
    Base64(String),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EmbeddingUsage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `POST /v1/moderations` request body; the response is relayed as the provider wrote it.
#[derive(Debug, Clone, Serialize)]
pub struct ModerationRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub input: Value,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `POST /v1/rerank` request body, in Cohere's shape (which Jina and vLLM also take): documents are
/// strings, or objects with a string `text`.
#[derive(Debug, Clone, Serialize)]
pub struct RerankRequest {
    pub model: String,
    pub query: String,
    pub documents: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_documents: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens_per_doc: Option<u32>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl RerankRequest {
    /// A document's text (`None` for one that is neither a string nor an object with a string `text`).
    pub fn text_of(document: &Value) -> Option<&str> {
        match document {
            Value::String(s) => Some(s),
            Value::Object(o) => o.get("text").and_then(Value::as_str),
            _ => None,
        }
    }
}

/// A rerank answer, read from any of the shapes providers give (Cohere's, Jina's, vLLM's) and written
/// in Cohere's.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RerankResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub results: Vec<RerankResult>,
    /// Cohere's `meta` (`billed_units`, `tokens`), as the provider wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Value>,
    /// Jina's and vLLM's `usage` (`total_tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Value>,
}

impl RerankResponse {
    /// The input tokens the provider reports, wherever its shape puts them.
    pub fn input_tokens(&self) -> Option<u64> {
        let at = |v: &Option<Value>, path: &[&str]| {
            path.iter().try_fold(v.as_ref()?, |v, k| v.get(k)).and_then(Value::as_u64)
        };
        // A rerank generates nothing, so its total is its input; some relays send `prompt_tokens: 0`
        // beside the total. Zero is not a count of a query and its documents: not reported.
        [
            at(&self.usage, &["total_tokens"]),
            at(&self.usage, &["prompt_tokens"]),
            at(&self.meta, &["tokens", "input_tokens"]),
            at(&self.meta, &["billed_units", "input_tokens"]),
        ]
        .into_iter()
        .flatten()
        .find(|&n| n > 0)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RerankResult {
    pub index: usize,
    pub relevance_score: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<Value>,
}

/// The body of every error Switchyard returns: `{"error":{"message","type","param","code"}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorObject {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

with_extra!(ChatRequest {
    model,
    messages,
    stream,
    stream_options,
    max_tokens,
    max_completion_tokens,
    temperature,
    top_p,
    n,
    stop,
    tools,
    tool_choice,
    parallel_tool_calls,
    response_format
});
with_extra!(StreamOptions { include_usage });
with_extra!(Message { role, content, name, tool_calls, tool_call_id });
with_extra!(ContentPart { kind as "type", text, image_url });
with_extra!(ImageUrl { url, detail });
with_extra!(Tool { kind as "type", function });
with_extra!(FunctionDef { name, description, parameters, strict });
with_extra!(ResponseFormat { kind as "type" });
with_extra!(ToolCall { id, kind as "type" = function_kind, function });
with_extra!(FunctionCall { name, arguments });
with_extra!(ChatResponse { id, object = completion_object, created = Default::default, model, choices, usage });
with_extra!(Choice { index, message, finish_reason });
with_extra!(ResponseMessage { role, content, reasoning_content, tool_calls });
with_extra!(Usage { prompt_tokens = Default::default, completion_tokens = Default::default, total_tokens = Default::default, prompt_tokens_details, completion_tokens_details });
with_extra!(PromptTokensDetails { cached_tokens, cache_write_tokens });
with_extra!(CompletionTokensDetails { reasoning_tokens });
with_extra!(ChatChunk { id = Default::default, object = chunk_object, created = Default::default, model = Default::default, choices = Default::default, usage });
with_extra!(ChunkChoice { index = Default::default, delta = Default::default, finish_reason });
with_extra!(Delta { role, content, reasoning_content, tool_calls });
with_extra!(ToolCallDelta { index, id, kind as "type", function });
with_extra!(FunctionCallDelta { name, arguments });
with_extra!(EmbeddingRequest { model, input, encoding_format, dimensions });
with_extra!(EmbeddingResponse { object = list_object, data, model = Default::default, usage });
with_extra!(Embedding { object = embedding_object, index, embedding });
with_extra!(EmbeddingUsage { prompt_tokens = Default::default, total_tokens = Default::default });
with_extra!(ModerationRequest { model, input });
with_extra!(RerankRequest { model, query, documents, top_n, return_documents, max_tokens_per_doc });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_survive_a_round_trip_at_every_level() {
        let body = serde_json::json!({
            "model": "m",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}], "x_msg": 1}],
            "tools": [{"type": "function", "function": {"name": "f", "x_fn": true}, "x_tool": 2}],
            "stream_options": {"include_usage": false, "x_opt": 3},
            "logit_bias": {"50256": -100},
            "metadata": {"a": "b"}
        });
        let req: ChatRequest = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(serde_json::to_value(&req).unwrap(), body);
        // The same from bytes (keys borrowed from the input), escaped keys included.
        let text = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"x\u0079z":1,"stream":true}"#;
        let req: ChatRequest = serde_json::from_str(text).unwrap();
        assert_eq!((req.stream, req.extra.get("xyz")), (Some(true), Some(&serde_json::json!(1))));
    }

    #[test]
    fn known_fields_decode_as_serde_would_and_ambiguity_is_refused() {
        let err = |text: &str| serde_json::from_str::<ChatRequest>(text).unwrap_err().to_string();
        assert!(err(r#"{"messages":[]}"#).starts_with("missing field `model`"));
        assert!(err(r#"{"model":"a","model":"b","messages":[]}"#).starts_with("duplicate field `model`"));
        assert!(err(r#"{"model":"a","messages":[],"max_tokens":"9"}"#).starts_with("invalid type: string \"9\""));
        assert!(
            err(r#"{"model":"a","messages":[{"role":"user","content":7}]}"#)
                .contains("expected a string or an array of content parts")
        );
        assert!(err(r#"["m"]"#).contains("expected a JSON object (ChatRequest)"));
        // Defaults for absent fields; `null` for an optional one is `None`.
        let chunk: ChatChunk =
            serde_json::from_str(r#"{"choices":[{"delta":{"content":"x"},"finish_reason":null}]}"#).unwrap();
        assert_eq!((chunk.object.as_str(), chunk.created, chunk.choices[0].index), ("chat.completion.chunk", 0, 0));
        let call: ToolCall = serde_json::from_str(r#"{"id":"c","function":{"name":"f","arguments":"{}"}}"#).unwrap();
        assert_eq!(call.kind, "function");
        let part: ContentPart = serde_json::from_str(r#"{"type":"text","text":"t","cache_control":{}}"#).unwrap();
        assert_eq!((part.kind.as_str(), part.extra.len()), ("text", 1));
    }
}
