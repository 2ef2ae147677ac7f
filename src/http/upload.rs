//! Multipart uploads (`audio/transcriptions`, `audio/translations`, `images/edits`, `files`): read once
//! as they arrive, text fields kept, each file spooled to an unnamed temporary file (the kernel removes it
//! when it is closed, whatever happens to the process), so no upload is held whole in memory. Every
//! attempt sends a fresh multipart body streamed from the spool, its `model` the target's upstream id: a
//! fallback re-sends what the caller sent, and `model` may come after the file, as the Node SDK sends it.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use http::{HeaderMap, HeaderValue};
use tokio::io::AsyncWriteExt;

use super::GatewayError;
use crate::protocols::ForwardBody;

/// The most fields one upload may have, and the largest text field.
const MAX_FIELDS: usize = 64;
const MAX_TEXT_BYTES: usize = 64 * 1024;

/// An upload read whole: its parts in the caller's order.
#[derive(Debug)]
pub struct Upload {
    parts: Vec<Part>,
}

#[derive(Debug)]
struct Part {
    name: String,
    filename: Option<String>,
    content_type: Option<String>,
    body: PartBody,
}

#[derive(Debug)]
enum PartBody {
    Text(String),
    /// Shared by every attempt's body, each reading at its own offsets (never the file's cursor, which a
    /// late read of an abandoned attempt could move).
    File {
        file: Arc<std::fs::File>,
        len: u64,
    },
}

/// How much of a spooled file one read takes.
const READ_BYTES: usize = 64 * 1024;

/// `len` bytes of `file` from the start, read at their own offsets.
fn read_spool(file: Arc<std::fs::File>, len: u64) -> BoxStream<'static, Result<Bytes, std::io::Error>> {
    futures_util::stream::try_unfold(0u64, move |offset| {
        let file = file.clone();
        async move {
            if offset >= len {
                return Ok(None);
            }
            let want = READ_BYTES.min((len - offset) as usize);
            let chunk = tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0; want];
                file.read_exact_at(&mut buf, offset).map(|()| buf)
            })
            .await
            .map_err(std::io::Error::other)??;
            Ok(Some((Bytes::from(chunk), offset + want as u64)))
        }
    })
    .boxed()
}

fn unreadable(e: multer::Error, limit: u64) -> GatewayError {
    match e {
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            GatewayError::body_too_large(usize::try_from(limit).unwrap_or(usize::MAX))
        }
        e => GatewayError::invalid_body(format!("The multipart body could not be read: {e}."), None),
    }
}

/// One step of reading the form, within `idle`; its error in the caller's terms.
async fn within<T>(
    idle: Duration,
    limit: u64,
    step: impl Future<Output = Result<T, multer::Error>>,
) -> Result<T, GatewayError> {
    match tokio::time::timeout(idle, step).await {
        Err(_) => Err(GatewayError::body_timeout()),
        Ok(r) => r.map_err(|e| unreadable(e, limit)),
    }
}

fn spool_failed(e: std::io::Error) -> GatewayError {
    tracing::error!(error = %e, "an upload could not be spooled");
    GatewayError::internal()
}

/// How an upload is read: at most `bytes`, each piece within `idle` of the last, the whole within `total`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub bytes: u64,
    pub idle: Duration,
    pub total: Duration,
}

impl Limits {
    pub fn of(state: &crate::app::AppState) -> Limits {
        let live = state.live();
        Limits {
            bytes: live.config.server.upload_limit_bytes,
            idle: live.body_limits.read_timeout,
            total: Duration::from_millis(live.config.server.upload_timeout_ms),
        }
    }
}

/// Reads a `multipart/form-data` body within `limits`.
pub async fn read(headers: &HeaderMap, body: Body, limits: Limits) -> Result<Upload, GatewayError> {
    tokio::time::timeout(limits.total, read_within(headers, body, limits.bytes, limits.idle))
        .await
        .unwrap_or_else(|_| Err(GatewayError::body_timeout()))
}

async fn read_within(headers: &HeaderMap, body: Body, limit: u64, idle: Duration) -> Result<Upload, GatewayError> {
    let content_type = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let boundary = multer::parse_boundary(content_type).map_err(|_| {
        GatewayError::invalid_body("This endpoint takes a multipart/form-data body (with its boundary).", None)
    })?;
    if let Some(encoding) = headers.get(http::header::CONTENT_ENCODING)
        && !encoding.as_bytes().eq_ignore_ascii_case(b"identity")
    {
        return Err(GatewayError::unsupported_encoding());
    }
    let declared =
        headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(GatewayError::body_too_large(usize::try_from(limit).unwrap_or(usize::MAX)));
    }
    let constraints = multer::Constraints::new().size_limit(multer::SizeLimit::new().whole_stream(limit));
    let mut multipart = multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
    let mut parts = Vec::new();
    loop {
        let Some(mut field) = within(idle, limit, multipart.next_field()).await? else { break };
        if parts.len() == MAX_FIELDS {
            return Err(GatewayError::invalid_body(format!("An upload has at most {MAX_FIELDS} fields."), None));
        }
        let name = field.name().unwrap_or_default().to_owned();
        let filename = field.file_name().map(str::to_owned);
        let content_type = field.content_type().map(ToString::to_string);
        let body = if filename.is_some() {
            if name == "model" {
                return Err(GatewayError::invalid_value("'model' must be a text field, not a file.", "model"));
            }
            let file = tokio::task::spawn_blocking(tempfile::tempfile)
                .await
                .map_err(|_| GatewayError::internal())?
                .map_err(spool_failed)?;
            let mut spool = tokio::fs::File::from_std(file);
            let mut len = 0u64;
            while let Some(chunk) = within(idle, limit, field.chunk()).await? {
                len += chunk.len() as u64;
                spool.write_all(&chunk).await.map_err(spool_failed)?;
            }
            spool.flush().await.map_err(spool_failed)?;
            PartBody::File { file: Arc::new(spool.into_std().await), len }
        } else {
            let mut text = Vec::new();
            while let Some(chunk) = within(idle, limit, field.chunk()).await? {
                if text.len() + chunk.len() > MAX_TEXT_BYTES {
                    return Err(GatewayError::invalid_value(
                        format!("'{name}' is longer than {MAX_TEXT_BYTES} bytes."),
                        &name,
                    ));
                }
                text.extend_from_slice(&chunk);
            }
            let text = String::from_utf8(text)
                .map_err(|_| GatewayError::invalid_value(format!("'{name}' is not UTF-8 text."), &name))?;
            // A field given twice would be read one way here and perhaps another upstream (lists of
            // files come as `name[]`).
            if !name.ends_with("[]") && parts.iter().any(|p: &Part| p.name == name) {
                return Err(GatewayError::invalid_value(format!("'{name}' is given more than once."), &name));
            }
            PartBody::Text(text)
        };
        parts.push(Part { name, filename, content_type, body });
    }
    Ok(Upload { parts })
}

impl Upload {
    /// The first text field called `name`.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.parts.iter().find_map(|p| match &p.body {
            PartBody::Text(t) if p.name == name => Some(t.as_str()),
            _ => None,
        })
    }

    /// Whether a file was sent in a field called `name` (or `name[]`, as for several images).
    pub fn has_file(&self, name: &str) -> bool {
        self.parts.iter().any(|p| {
            matches!(p.body, PartBody::File { .. })
                && (p.name == name || p.name.strip_suffix("[]").is_some_and(|n| n == name))
        })
    }

    /// The bytes of all files.
    #[cfg(test)]
    fn file_bytes(&self) -> u64 {
        self.parts.iter().map(|p| if let PartBody::File { len, .. } = p.body { len } else { 0 }).sum()
    }

    /// The upload as a new multipart body, with `model` (when given) in place of the caller's: its
    /// `content-type`, its length, and the body, streamed from the spool.
    pub fn body(&self, model: Option<&str>) -> std::io::Result<(HeaderValue, ForwardBody)> {
        let boundary = format!("switchyard-{}", uuid::Uuid::new_v4().simple());
        let mut pieces: Vec<BoxStream<'static, Result<Bytes, std::io::Error>>> = Vec::new();
        let mut len = 0u64;
        let mut push = |(piece, n): (BoxStream<'static, _>, u64)| {
            len += n;
            pieces.push(piece);
        };
        let mut model_sent = false;
        for p in &self.parts {
            let mut head = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"", quoted(&p.name));
            if let Some(f) = &p.filename {
                head.push_str(&format!("; filename=\"{}\"", quoted(f)));
            }
            head.push_str("\r\n");
            if let Some(t) = &p.content_type {
                head.push_str(&format!("Content-Type: {}\r\n", t.replace(['\r', '\n'], "")));
            }
            head.push_str("\r\n");
            push(once(Bytes::from(head)));
            push(match (&p.body, model) {
                (PartBody::Text(_), Some(model)) if p.name == "model" => {
                    model_sent = true;
                    once(Bytes::from(model.to_owned()))
                }
                (PartBody::Text(t), _) => once(Bytes::from(t.clone())),
                (PartBody::File { file, len }, _) => (read_spool(file.clone(), *len), *len),
            });
            push(once(Bytes::from_static(b"\r\n")));
        }
        if let (false, Some(model)) = (model_sent, model) {
            let part = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{model}\r\n");
            push(once(Bytes::from(part)));
        }
        push(once(Bytes::from(format!("--{boundary}--\r\n"))));
        let content_type = HeaderValue::from_str(&format!("multipart/form-data; boundary={boundary}"))
            .map_err(std::io::Error::other)?;
        let stream = futures_util::stream::iter(pieces).flatten();
        Ok((content_type, ForwardBody::Streamed { stream: Box::pin(stream), len }))
    }
}

/// A piece of a body already in memory, and its length.
fn once(b: Bytes) -> (BoxStream<'static, Result<Bytes, std::io::Error>>, u64) {
    let n = b.len() as u64;
    (futures_util::stream::once(async move { Ok(b) }).boxed(), n)
}

/// A name or file name as a quoted string of a part's header (quotes and line breaks escaped).
fn quoted(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "%22").replace('\r', "%0D").replace('\n', "%0A")
}

#[cfg(test)]
mod tests {
    use futures_util::TryStreamExt;
    use proptest::prelude::*;

    use super::*;

    fn form(boundary: &str, parts: &[(String, Option<String>, Vec<u8>)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (name, filename, data) in parts {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes(),
            );
            if let Some(f) = filename {
                body.extend_from_slice(
                    format!("; filename=\"{f}\"\r\nContent-Type: application/octet-stream").as_bytes(),
                );
            }
            body.extend_from_slice(b"\r\n\r\n");
            body.extend_from_slice(data);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        body
    }

    async fn read_bytes(content_type: &str, body: Vec<u8>) -> Result<Upload, GatewayError> {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        let limits = Limits { bytes: 1 << 20, idle: Duration::from_secs(5), total: Duration::from_secs(10) };
        read(&headers, Body::from(body), limits).await
    }

    async fn sent(upload: &Upload, model: Option<&str>) -> Vec<u8> {
        let (content_type, ForwardBody::Streamed { stream, len }) = upload.body(model).unwrap() else { panic!() };
        let bytes: Vec<Bytes> = stream.try_collect().await.unwrap();
        let bytes = bytes.concat();
        assert_eq!(bytes.len() as u64, len, "the declared length is the body's");
        // Read back by the same reader a provider's server would use.
        let again = read_bytes(content_type.to_str().unwrap(), bytes.clone()).await.unwrap();
        let mut out = Vec::new();
        for p in &again.parts {
            out.extend_from_slice(p.name.as_bytes());
            out.push(0);
            if let Some(f) = &p.filename {
                out.extend_from_slice(format!("{f}|{}", p.content_type.as_deref().unwrap_or_default()).as_bytes());
                out.push(0);
            }
            match &p.body {
                PartBody::Text(t) => out.extend_from_slice(t.as_bytes()),
                PartBody::File { file, len } => {
                    let chunks: Vec<Bytes> = read_spool(file.clone(), *len).try_collect().await.unwrap();
                    out.extend_from_slice(&chunks.concat());
                }
            }
            out.push(0);
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Whatever the parts and their order, what is sent on is what came in, `model` replaced, and
        /// each attempt sends it all again.
        #[test]
        fn an_upload_is_sent_on_as_it_came_with_its_model_replaced(
            files in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..5000), 1..3),
            texts in proptest::collection::vec("[a-z ]{0,40}", 0..3),
            model_first in any::<bool>(),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let mut parts: Vec<(String, Option<String>, Vec<u8>)> = files
                    .iter()
                    .enumerate()
                    .map(|(i, f)| (format!("file{i}"), Some(format!("f {i} é.bin")), f.clone()))
                    .collect();
                parts.extend(texts.iter().enumerate().map(|(i, t)| (format!("text{i}"), None, t.as_bytes().to_vec())));
                let model = ("model".to_owned(), None, b"callers-model".to_vec());
                if model_first { parts.insert(0, model) } else { parts.push(model) }
                let boundary = "b0undary";
                let upload = read_bytes(&format!("multipart/form-data; boundary={boundary}"), form(boundary, &parts))
                    .await
                    .unwrap();
                prop_assert_eq!(upload.text("model"), Some("callers-model"));
                prop_assert_eq!(upload.file_bytes(), files.iter().map(|f| f.len() as u64).sum::<u64>());
                let mut expected = Vec::new();
                for (name, filename, data) in &parts {
                    expected.extend_from_slice(name.as_bytes());
                    expected.push(0);
                    if let Some(f) = filename {
                        expected.extend_from_slice(format!("{f}|application/octet-stream").as_bytes());
                        expected.push(0);
                    }
                    expected.extend_from_slice(if name == "model" { b"upstream-id" } else { data });
                    expected.push(0);
                }
                prop_assert_eq!(&sent(&upload, Some("upstream-id")).await, &expected);
                prop_assert_eq!(&sent(&upload, Some("upstream-id")).await, &expected, "a second attempt");
                Ok(())
            })?;
        }
    }

    #[tokio::test]
    async fn an_upload_without_a_model_field_gets_one() {
        let upload =
            read_bytes("multipart/form-data; boundary=x", form("x", &[("file".into(), Some("a".into()), vec![1, 2])]))
                .await
                .unwrap();
        let out = sent(&upload, Some("m")).await;
        assert_eq!(out, b"file\0a|application/octet-stream\0\x01\x02\0model\0m\0");
    }
}
