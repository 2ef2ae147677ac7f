//! OpenAI's Responses door: `POST /v1/responses` for any model, and the stored responses
//! (`GET`/`DELETE /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`).
//!
//! A request's conversation is resolved here, from this organisation's stored responses: the turns of
//! `previous_response_id` before its input, each `item_reference` replaced by the item it names. The
//! pipeline then walks the targets: a provider that speaks Responses gets the request natively, any
//! other the canonical chat translation (`protocols::responses`). What answered is returned, whole or as
//! the Responses event stream, and kept (unless `store: false`) before its last byte is sent, so the very
//! next request can continue from it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::observe::RequestId;
use super::pipeline::{Call, Intake, Pipeline, Served};
use super::relay::{self, Relayed};
use super::resume::{Continuable, Progress, add_earlier};
use super::{GatewayError, body, input};
use crate::app::AppState;
use crate::protocols::responses::inbound::{self, ResponsesStream, new_item_id};
use crate::protocols::responses::native::{self, NativeEvent, NativeMapper, NativeStream, Rewrite};
use crate::protocols::responses::wire::{
    Content, Deleted, Input, Item, ItemList, Part, Response as ResponseObject, ResponsesRequest,
};
use crate::protocols::{ChunkTranslator, Invalid, Native, NativeCall, bad_request};
use crate::providers::exec::{self, ChunkStream};
use crate::providers::{ErrorKind, ProviderError};
use crate::response_store::{History, MAX_TURNS, ResponseStore, Sourced, StoredResponse, new_response_id};
use crate::routing::{ModelEntry, RequestFeatures};
use crate::schema::{ChatChunk, ChatRequest, ChatResponse};
use crate::tenancy::ActiveKey;
use crate::usage::{Prices, Segment, UsageGuard};

/// Whose stored responses a caller sees: its organisation's, or the master key's own.
fn scope(key: &Option<Extension<Arc<ActiveKey>>>) -> String {
    key.as_ref().map(|Extension(k)| k.organization_id.clone()).unwrap_or_default()
}

/// The bounds of `[input]`, on the whole conversation (its history included) and on what the
/// translation leaves out (hosted tools, metadata), named as Responses spells them.
fn check_input(state: &AppState, req: &ResponsesRequest, chat: &ChatRequest) -> Result<(), GatewayError> {
    fn names(canonical: &'static str) -> &'static str {
        match canonical {
            "messages" => "input",
            "response_format" => "text.format",
            other => other,
        }
    }
    let live = state.live();
    let limits = &live.config.input;
    let mut checked = input::check_tools(limits, req.tools.as_ref().map_or(0, Vec::len));
    if let (Ok(()), Some(metadata)) = (&checked, &req.metadata) {
        checked = input::check_metadata(limits, metadata);
    }
    if checked.is_ok() {
        checked = input::check_chat(limits, live.config.server.max_choices, chat);
    }
    checked.map_err(|e| e.into_error(names))
}

/// `POST /v1/responses`.
pub async fn create_response(
    State(state): State<Arc<AppState>>,
    Extension(request_id): Extension<RequestId>,
    key: Option<Extension<Arc<ActiveKey>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let started = Instant::now();
    let mut req: ResponsesRequest = body::read_json(&headers, body, state.live().body_limits).await?;
    if req.model.is_empty() {
        return Err(GatewayError::invalid_value("'model' is required.", "model"));
    }
    let scope = scope(&key);
    let history = match &req.previous_response_id {
        None => Vec::new(),
        Some(previous) => match state.responses.history(&scope, previous).await.map_err(store_unavailable)? {
            History::Found(items) => items,
            History::Missing => return Err(GatewayError::previous_response_not_found(previous)),
            History::TooLong => {
                return Err(GatewayError::invalid_value(
                    format!("The conversation is longer than {MAX_TURNS} turns; start a new one."),
                    "previous_response_id",
                ));
            }
        },
    };
    let input = resolve_input(&state.responses, &scope, req.input.take(), history.is_empty()).await?;
    let translated = inbound::to_chat(&req, history.iter().map(|s| &s.item), input.iter().map(|s| &s.item));
    check_input(&state, &req, &translated.chat)?;
    let pipeline = {
        let features = RequestFeatures::for_chat(&translated.chat)
            .map_err(|field| GatewayError::invalid_value(format!("'{field}' has an invalid value."), &field))?;
        let intake = Intake {
            model: &req.model,
            features: &features,
            prompts: 1,
            choices: 1,
            streamed: req.is_streaming(),
            started,
            operation: "chat",
        };
        Pipeline::admit(&state, &request_id, key.as_deref(), &headers, intake).await?
    };
    let id = new_response_id();
    let created_at = crate::protocols::unix_now();
    let keeper = Keeper {
        store: req.is_stored().then(|| state.responses.clone()),
        id: id.clone(),
        scope,
        key_id: key.as_ref().map(|Extension(k)| k.id.clone()),
        previous_response_id: req.previous_response_id.clone(),
        input: stored_input(input.iter().map(|s| s.item.clone()).collect()),
    };
    let rewrite = Rewrite {
        id: id.clone(),
        model: req.model.clone(),
        store: req.is_stored(),
        previous_response_id: req.previous_response_id.clone(),
        show_encrypted: req.includes(native::ENCRYPTED_REASONING),
    };
    let envelope = inbound::envelope(&req, &id, created_at, &req.model);
    let custom_tools = translated.custom_tools.clone();
    let streamed = req.is_streaming();
    let mut chat = translated.chat;
    crate::schema::strip_own_fields(&mut chat.extra);
    let mut door = Attempts { req, history, input, chat, problem: translated.problem, streamed };
    let Served { value, target, mut usage, headers, rest, deadline } = pipeline.run(&mut door).await?;
    let prices = target.prices();
    Ok(match value {
        Either::Whole(Answer::Native(mut body)) => {
            if let Some(u) = native::usage_of(&body) {
                usage.provider_usage(&u);
            }
            add_native_cost(&mut body, prices);
            rewrite.response(&mut body);
            let output = output_items(&body);
            rewrite.for_client(&mut body);
            keeper.keep(&body, output, &target.provider.name);
            Served { value: (), target, usage, headers, rest, deadline }.json(body.to_string().into_bytes())
        }
        Either::Whole(Answer::Translated(mut resp)) => {
            if let Some(u) = resp.usage.as_mut() {
                usage.provider_usage(u);
                relay::add_cost(u, prices);
            }
            let object = inbound::from_chat(&resp, envelope, &custom_tools);
            let body = serde_json::to_value(&object).unwrap_or_default();
            keeper.keep(&body, object.output, &target.provider.name);
            Served { value: (), target, usage, headers, rest, deadline }.json(body.to_string().into_bytes())
        }
        Either::Stream(Opened::Native(stream, leading)) => {
            // Passed through, it goes on in chat from another target, when chat can carry the request.
            let resume: Option<Box<dyn super::resume::Resumable<NativeEvent>>> =
                (!rest.is_empty() && door.problem.is_none()).then(|| {
                    let mut chat = door.chat;
                    chat.stream_options.get_or_insert_with(Default::default).include_usage = Some(true);
                    let r = super::resume::Resume::<NativeEvent>::new(
                        chat,
                        target.clone(),
                        rest.clone(),
                        state.live().router.breaker,
                        deadline,
                    );
                    Box::new(r) as _
                });
            let (shown, provider) = (rewrite.clone(), target.provider.name.clone());
            let on_complete = Box::new(move |response: &Value| {
                let output = output_items(response);
                let mut response = response.clone();
                shown.for_client(&mut response);
                keeper.keep(&response, output, &provider);
            });
            let encoder = NativeStream::new(rewrite, on_complete);
            let served = Served { value: (stream, leading), target, usage, headers, rest, deadline };
            relay::respond_resumable(&state, served, Box::new(encoder), resume)
        }
        Either::Stream(Opened::Translated(stream, leading)) => {
            let provider = target.provider.name.clone();
            let on_complete = Box::new(move |response: &ResponseObject| {
                keeper.keep(&serde_json::to_value(response).unwrap_or_default(), response.output.clone(), &provider);
            });
            let encoder = ResponsesStream::new(envelope, custom_tools, on_complete);
            // Translated through chat: the stream can go on from another target if its provider fails.
            let resume: Option<Box<dyn super::resume::Resumable<crate::schema::ChatChunk>>> =
                (!rest.is_empty()).then(|| {
                    let r = super::resume::Resume::<ChatChunk>::new(
                        door.chat,
                        target.clone(),
                        rest.clone(),
                        state.live().router.breaker,
                        deadline,
                    );
                    Box::new(r) as _
                });
            let served = Served { value: (stream, leading), target, usage, headers, rest, deadline };
            relay::respond_resumable(&state, served, Box::new(encoder), resume)
        }
    })
}

/// The output items of a response object (every object is an item: unknown fields and types are kept).
fn output_items(response: &Value) -> Vec<Item> {
    let items = response.get("output").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    items.iter().filter_map(|i| serde_json::from_value(i.clone()).ok()).collect()
}

/// Adds the gateway's `cost` (USD at catalog prices) beside a native response's usage.
fn add_native_cost(response: &mut Value, prices: Prices) {
    let Some(u) = native::usage_of(response) else { return };
    if let Some(micros) = prices.cost_micros(u.prompt_tokens, u.cached_tokens(), u.completion_tokens)
        && let Some(usage) = response.get_mut("usage").and_then(Value::as_object_mut)
    {
        relay::put_cost(usage, micros);
    }
}

/// The most `item_reference`s one request may hold.
const MAX_REFERENCES: usize = 1_024;

/// This request's input as items: each `item_reference` replaced by the stored item it names, and a
/// reasoning item the caller sent back without its encrypted content by the stored one that has it.
async fn resolve_input(
    store: &ResponseStore,
    scope: &str,
    input: Option<Input>,
    required: bool,
) -> Result<Vec<Sourced>, GatewayError> {
    let items = match input {
        Some(Input::Text(text)) => vec![Item {
            kind: Some("message".into()),
            role: Some("user".into()),
            content: Some(Content::Text(text)),
            ..Item::default()
        }],
        Some(Input::Items(items)) => items,
        None if required => return Err(GatewayError::invalid_value("'input' is required.", "input")),
        None => Vec::new(),
    };
    let references = items.iter().filter(|i| i.kind() == "item_reference").count();
    if references > MAX_REFERENCES {
        return Err(GatewayError::invalid_value(
            format!("At most {MAX_REFERENCES} item references per request."),
            "input",
        ));
    }
    let wanted: Vec<&str> = items
        .iter()
        .filter(|i| i.kind() == "item_reference" || (i.kind() == "reasoning" && i.encrypted_content.is_none()))
        .filter_map(|i| i.id.as_deref())
        .take(MAX_REFERENCES)
        .collect();
    let mut stored = if wanted.is_empty() {
        HashMap::new()
    } else {
        store.items(scope, &wanted).await.map_err(store_unavailable)?
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let id = item.id.as_deref().unwrap_or_default();
        match item.kind() {
            "item_reference" => match stored.get(id) {
                Some(found) => out.push(found.clone()),
                None => {
                    return Err(GatewayError::invalid_value(
                        format!(
                            "Item with id '{id}' not found (stored responses are kept per organisation, and not with store: false)."
                        ),
                        &format!("input[{i}].id"),
                    ));
                }
            },
            "reasoning" if item.encrypted_content.is_none() => match stored.remove(id) {
                Some(found) if found.item.kind() == "reasoning" => out.push(found),
                _ => out.push(Sourced { item, provider: None }),
            },
            _ => out.push(Sourced { item, provider: None }),
        }
    }
    Ok(out)
}

/// The input items as stored and listed: each with an id (the SDKs page through input items by id),
/// messages in the full form OpenAI lists them in (a type, a status, content as parts), and reasoning
/// without its encrypted content (that stays with the turn that produced it, and its provider).
fn stored_input(mut items: Vec<Item>) -> Vec<Item> {
    for item in &mut items {
        if item.kind() == "reasoning" {
            item.encrypted_content = None;
        }
        if item.kind() == "message" {
            item.kind = Some("message".into());
            item.status.get_or_insert_with(|| "completed".into());
            if let Some(Content::Text(text)) = &item.content {
                let part = if item.role.as_deref() == Some("assistant") {
                    Part::output_text(text.clone())
                } else {
                    Part { kind: "input_text".into(), text: Some(text.clone()), ..Part::default() }
                };
                item.content = Some(Content::Parts(vec![part]));
            }
        }
        if item.id.is_none() {
            let prefix = match item.kind() {
                "message" => "msg",
                "function_call" => "fc",
                "function_call_output" => "fco",
                "custom_tool_call_output" => "ctco",
                _ => "item",
            };
            item.id = Some(new_item_id(prefix));
        }
    }
    items
}

fn store_unavailable(e: crate::store::StoreError) -> GatewayError {
    tracing::error!(error = %e, "the response store cannot be read");
    GatewayError::store_unavailable()
}

/// Keeps the finished response, unless the caller said `store: false`.
struct Keeper {
    store: Option<Arc<ResponseStore>>,
    id: String,
    scope: String,
    key_id: Option<String>,
    previous_response_id: Option<String>,
    input: Vec<Item>,
}

impl Keeper {
    /// Stores the response as the caller was shown it (what `GET` returns) and its output items as
    /// `provider` gave them (what the next turn sends back).
    fn keep(&self, shown: &Value, output: Vec<Item>, provider: &str) {
        let Some(store) = &self.store else { return };
        let created_at = store.now();
        store.put(StoredResponse {
            id: self.id.clone(),
            scope: self.scope.clone(),
            key_id: self.key_id.clone(),
            provider: Some(provider.to_owned()),
            previous_response_id: self.previous_response_id.clone(),
            created_at,
            expires_at: store.expires_at(created_at),
            input: self.input.clone(),
            output,
            response: shown.clone(),
        });
    }
}

/// A whole answer: the provider's own response object, or a chat answer to translate.
enum Answer {
    Native(Value),
    Translated(Box<ChatResponse>),
}

/// An opened stream, past its preamble.
enum Opened {
    Native(ChunkStream<NativeEvent>, VecDeque<NativeEvent>),
    Translated(ChunkStream, VecDeque<ChatChunk>),
}

/// How one attempt is made: natively to a provider that speaks Responses, else translated.
struct Attempts {
    req: ResponsesRequest,
    history: Vec<Sourced>,
    input: Vec<Sourced>,
    chat: ChatRequest,
    /// Why the request cannot be translated, if it cannot.
    problem: Option<Invalid>,
    streamed: bool,
}

impl Attempts {
    /// The native body for `target`: the whole conversation, earlier reasoning only where the provider
    /// can read it back (encrypted, by this provider or given by the caller), the target's model id.
    fn native(&mut self, target: &ModelEntry) -> Bytes {
        let provider = &target.provider.name;
        let readable = |s: &&Sourced| {
            s.item.kind() != "reasoning"
                || (s.item.encrypted_content.is_some() && s.provider.as_ref().is_none_or(|p| p == provider))
        };
        let items = self.history.iter().chain(&self.input).filter(readable).map(|s| s.item.clone()).collect();
        let mut body = native::upstream_body(&self.req, items);
        body.insert("model".into(), json!(target.upstream));
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }

    fn translated(&mut self, target: &ModelEntry) -> Result<&ChatRequest, ProviderError> {
        if let Some(p) = &self.problem {
            return Err(bad_request(p.message.clone(), &p.param));
        }
        self.chat.model.clone_from(&target.upstream);
        if self.streamed {
            self.chat.stream_options.get_or_insert_with(Default::default).include_usage = Some(true);
        }
        Ok(&self.chat)
    }
}

impl Call for Attempts {
    type Output = Either;

    async fn call(&mut self, target: &ModelEntry, deadline: Instant) -> Result<Either, ProviderError> {
        let (provider, timeouts) = (&target.provider, &target.timeouts);
        let adapter = provider.adapter();
        if adapter.speaks(Native::Responses) {
            let body = self.native(target);
            let streamed = self.streamed;
            let build = |ep: &crate::providers::Endpoint<'_>| {
                let call = NativeCall { model: &target.upstream, stream: streamed, body, forwarded: &HeaderMap::new() };
                adapter.native_request(Native::Responses, call, ep)
            };
            if !self.streamed {
                let raw = exec::call(provider, timeouts, build, deadline).await?;
                let value = serde_json::from_slice(&raw).map_err(|e| {
                    ProviderError::new(
                        ErrorKind::InvalidResponse,
                        format!("the provider's response is not a Responses object: {e}"),
                    )
                })?;
                return Ok(Either::Whole(Answer::Native(value)));
            }
            let stream = exec::open_stream_with(provider, timeouts, build, Box::new(NativeMapper), deadline).await?;
            let (stream, leading) = relay::past_preamble(stream).await?;
            return Ok(Either::Stream(Opened::Native(stream, leading)));
        }
        let streamed = self.streamed;
        let chat = self.translated(target)?;
        if !streamed {
            return Ok(Either::Whole(Answer::Translated(Box::new(
                exec::complete(provider, timeouts, chat, deadline).await?,
            ))));
        }
        let (stream, leading) =
            relay::past_preamble(exec::open_stream(provider, timeouts, chat, deadline).await?).await?;
        Ok(Either::Stream(Opened::Translated(stream, leading)))
    }
}

/// What an attempt produced, whole or streamed as the request asked.
#[expect(clippy::large_enum_variant, reason = "one per request, moved once into the response")]
enum Either {
    Whole(Answer),
    Stream(Opened),
}

impl Relayed for NativeEvent {
    fn prepare(&mut self, _public_model: &str, prices: Prices, usage: &mut UsageGuard) {
        if let Some(delta) = self.data.get("delta").and_then(Value::as_str) {
            usage.streamed_text(delta.len());
        }
        if crate::protocols::StreamItem::is_final(self)
            && let Some(response) = self.response_mut()
        {
            if let Some(u) = native::usage_of(response) {
                usage.provider_usage(&u);
            }
            add_native_cost(response, prices);
        }
    }
}

/// Where a Responses stream stands beyond its text.
#[derive(Debug, Default)]
pub(super) struct ResponseMark {
    /// The last response snapshot the stream carried (`response.created`, `response.in_progress`).
    snapshot: Option<Value>,
    /// The last `sequence_number` sent.
    sequence: Option<u64>,
    /// The message item still open: its output index, id and text so far.
    open: Option<(u32, String, String)>,
    /// The output items done so far.
    done: Vec<Value>,
    /// The output index a new item takes.
    next_index: u32,
}

impl Continuable for NativeEvent {
    type Mark = ResponseMark;

    fn note(&self, p: &mut Progress, mark: &mut ResponseMark) {
        let data = &self.data;
        if let Some(n) = data.get("sequence_number").and_then(Value::as_u64) {
            mark.sequence = Some(n);
        }
        let index = data.get("output_index").and_then(Value::as_u64).map(|i| i as u32);
        match self.kind.as_str() {
            "response.created" | "response.in_progress" => mark.snapshot = data.get("response").cloned(),
            "response.output_item.added" => {
                let item = data.get("item").unwrap_or(&Value::Null);
                let index = index.unwrap_or(mark.next_index);
                mark.next_index = mark.next_index.max(index + 1);
                match item.get("type").and_then(Value::as_str) {
                    Some("message") => {
                        let id = item.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
                        mark.open = Some((index, id, String::new()));
                    }
                    Some("reasoning") => p.reasoning_open = true,
                    _ => p.blocked = Some("a tool call was being streamed"),
                }
            }
            "response.output_text.delta" => {
                let delta = data.get("delta").and_then(Value::as_str).unwrap_or_default();
                p.sent.push_str(delta);
                if let Some((_, _, text)) = &mut mark.open {
                    text.push_str(delta);
                }
            }
            "response.content_part.added" if data.get("content_index").and_then(Value::as_u64) > Some(0) => {
                // A second part in one message: the continuation could not say which it goes on in.
                p.blocked = Some("a message of several parts");
            }
            "response.output_item.done" => {
                mark.open = None;
                p.reasoning_open = false;
                if let Some(item) = data.get("item") {
                    mark.done.push(item.clone());
                }
            }
            "response.completed" | "response.incomplete" => p.finished = true,
            _ => {}
        }
    }

    fn translator(mark: &ResponseMark) -> Box<dyn ChunkTranslator<NativeEvent>> {
        let mut snapshot = mark.snapshot.clone().unwrap_or_else(|| json!({}));
        snapshot["output"] = Value::Array(mark.done.clone());
        let response = serde_json::from_value::<ResponseObject>(snapshot)
            .unwrap_or_else(|_| inbound::envelope(&Default::default(), &new_response_id(), 0, ""));
        let sequence = mark.sequence.map_or(0, |n| n + 1);
        Box::new(native::Continuing::new(inbound::ResponsesEvents::continuing(
            response,
            sequence,
            mark.open.clone(),
            mark.next_index,
        )))
    }

    fn as_first(&mut self, _mark: &ResponseMark, earlier: &[Segment]) {
        if !crate::protocols::StreamItem::is_final(self) {
            return;
        }
        let Some(usage) = self.response_mut().and_then(|r| r.get_mut("usage")).and_then(Value::as_object_mut) else {
            return;
        };
        let count =
            |usage: &serde_json::Map<String, Value>, name: &str| usage.get(name).and_then(Value::as_u64).unwrap_or(0);
        let (mut input, mut output) = (count(usage, "input_tokens"), count(usage, "output_tokens"));
        add_earlier(earlier, &mut input, &mut output, usage);
        usage.insert("input_tokens".into(), json!(input));
        usage.insert("output_tokens".into(), json!(output));
        usage.insert("total_tokens".into(), json!(input + output));
    }
}

/// `GET /v1/responses/{id}`.
pub async fn get_response(
    State(state): State<Arc<AppState>>,
    key: Option<Extension<Arc<ActiveKey>>>,
    Path(id): Path<String>,
) -> Result<Response, GatewayError> {
    let stored = stored(&state, &key, &id).await?;
    Ok(([(http::header::CONTENT_TYPE, "application/json")], stored.response.to_string()).into_response())
}

/// `DELETE /v1/responses/{id}`.
pub async fn delete_response(
    State(state): State<Arc<AppState>>,
    key: Option<Extension<Arc<ActiveKey>>>,
    Path(id): Path<String>,
) -> Result<Response, GatewayError> {
    if !state.responses.delete(&scope(&key), &id).await.map_err(store_unavailable)? {
        return Err(GatewayError::response_not_found(&id));
    }
    Ok(axum::Json(Deleted { id, object: "response".into(), deleted: true }).into_response())
}

#[derive(Debug, Deserialize)]
pub struct ItemsQuery {
    after: Option<String>,
    before: Option<String>,
    limit: Option<usize>,
    order: Option<String>,
}

/// `GET /v1/responses/{id}/input_items`: the turn's input items, newest first unless `order=asc`,
/// `limit` (1-100, default 20) at a time after or before an item id.
pub async fn list_input_items(
    State(state): State<Arc<AppState>>,
    key: Option<Extension<Arc<ActiveKey>>>,
    Path(id): Path<String>,
    Query(q): Query<ItemsQuery>,
) -> Result<Response, GatewayError> {
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(GatewayError::invalid_value("'limit' must be between 1 and 100.", "limit"));
    }
    let ascending = match q.order.as_deref() {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(_) => return Err(GatewayError::invalid_value("'order' must be asc or desc.", "order")),
    };
    let stored = stored(&state, &key, &id).await?;
    let mut items: Vec<&Item> = stored.input.iter().collect();
    if !ascending {
        items.reverse();
    }
    let position = |cursor: &str, param: &str| {
        items
            .iter()
            .position(|i| i.id.as_deref() == Some(cursor))
            .ok_or_else(|| GatewayError::invalid_value(format!("No input item with id '{cursor}'."), param))
    };
    let (start, end) = match (&q.after, &q.before) {
        (Some(after), _) => (position(after, "after")? + 1, items.len()),
        (None, Some(before)) => (0, position(before, "before")?),
        (None, None) => (0, items.len()),
    };
    let window = &items[start.min(end)..end];
    let page: Vec<Item> = if q.before.is_some() && q.after.is_none() {
        window[window.len().saturating_sub(limit)..].iter().map(|i| (*i).clone()).collect()
    } else {
        window.iter().take(limit).map(|i| (*i).clone()).collect()
    };
    let has_more = window.len() > page.len();
    let list = ItemList {
        object: "list".into(),
        first_id: page.first().and_then(|i| i.id.clone()),
        last_id: page.last().and_then(|i| i.id.clone()),
        data: page,
        has_more,
    };
    Ok(axum::Json(list).into_response())
}

async fn stored(
    state: &AppState,
    key: &Option<Extension<Arc<ActiveKey>>>,
    id: &str,
) -> Result<Arc<StoredResponse>, GatewayError> {
    state
        .responses
        .get(&scope(key), id)
        .await
        .map_err(store_unavailable)?
        .ok_or_else(|| GatewayError::response_not_found(id))
}
