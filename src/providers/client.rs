//! The upstream HTTP client: hyper's pooled client over a connector that speaks TLS (rustls, the
//! platform's trust store plus a provider's own CA file) and, when configured, goes through an egress
//! proxy: a CONNECT tunnel for `https` providers, absolute-form requests for `http` ones.
//!
//! Why not reqwest: it parses every request's URL twice (its redirect layer and its response) and runs
//! redirect and retry layers the gateway never uses; together a tenth of a request's CPU. The pool,
//! HTTP/2 over ALPN and the proxy tunnel below are the same hyper-util parts reqwest is built on.
//!
//! Whether a provider goes through a proxy is decided once, from its base URL: its `proxy` setting,
//! else `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` minus `NO_PROXY`, as reqwest and curl read them.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Uri};
use http_body_util::Full;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpStream;
use tower::Service;

type BoxError = Box<dyn StdError + Send + Sync>;
type Tcp = MaybeHttpsStream<TokioIo<TcpStream>>;

/// A request body: whole (a JSON document), or streamed (an upload read from the gateway's spool).
pub type OutBody = http_body_util::Either<Full<Bytes>, http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>>;

/// A whole request body.
pub fn whole(body: Bytes) -> OutBody {
    http_body_util::Either::Left(Full::new(body))
}

pub type UpstreamClient = Client<Connector, OutBody>;

/// How one provider's connections are made.
enum Route {
    Direct,
    /// An `http` provider through a proxy: connections go to the proxy, requests in absolute form.
    Forward {
        proxy: Uri,
        auth: Option<HeaderValue>,
        connector: HttpsConnector<HttpConnector>,
    },
    /// An `https` provider through a proxy: CONNECT, then TLS with the provider inside the tunnel.
    Tunnel(HttpsConnector<Tunnel<HttpsConnector<HttpConnector>>>),
}

/// What a provider's clients are built from (one client per thread, see `HttpClients`).
pub struct ClientSettings {
    connect_timeout: Duration,
    tls: Arc<ClientConfig>,
    route: Arc<Route>,
}

impl ClientSettings {
    /// `proxy`: the provider's own proxy URL, if it has one; `ca_file`: PEM certificates to trust
    /// besides the platform's.
    pub fn new(
        base_url: &str,
        connect_timeout: Duration,
        proxy: Option<&str>,
        ca_file: Option<&str>,
    ) -> Result<ClientSettings, String> {
        let tls = match ca_file {
            None => default_tls()?,
            Some(path) => Arc::new(tls_config(crate::config::load_certificates(path)?)?),
        };
        let base: Uri = base_url.parse().map_err(|e| format!("the base URL is not valid: {e}"))?;
        let matcher = match proxy {
            Some(url) => Matcher::builder().all(url.to_owned()).build(),
            None => Matcher::from_env(),
        };
        let route = match matcher.intercept(&base) {
            None => Route::Direct,
            Some(via) => {
                let auth = via.basic_auth().cloned().map(|mut v| {
                    v.set_sensitive(true);
                    v
                });
                if base.scheme_str() == Some("https") {
                    let mut tunnel = Tunnel::new(via.uri().clone(), proxy_connector(&tls));
                    if let Some(auth) = auth {
                        tunnel = tunnel.with_auth(auth);
                    }
                    Route::Tunnel(tls_builder(&tls).wrap_connector(tunnel))
                } else {
                    Route::Forward { proxy: via.uri().clone(), auth, connector: proxy_connector(&tls) }
                }
            }
        };
        Ok(ClientSettings { connect_timeout, tls, route: Arc::new(route) })
    }

    /// A client with its own pool (each thread has one, so a connection stays on the thread that
    /// drives it).
    pub fn client(&self) -> UpstreamClient {
        let connector = Connector {
            direct: https_connector(&self.tls),
            route: self.route.clone(),
            connect_timeout: self.connect_timeout,
        };
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector)
    }

    /// The `Proxy-Authorization` an `http` provider's requests carry through its proxy.
    pub fn proxy_authorization(&self) -> Option<&HeaderValue> {
        match &*self.route {
            Route::Forward { auth, .. } => auth.as_ref(),
            _ => None,
        }
    }
}

fn https_connector(tls: &Arc<ClientConfig>) -> HttpsConnector<HttpConnector> {
    tls_builder(tls).wrap_connector(tcp_connector())
}

/// To a proxy (plain or TLS), HTTP/1.1 only: CONNECT and absolute-form requests are HTTP/1 forms.
fn proxy_connector(tls: &Arc<ClientConfig>) -> HttpsConnector<HttpConnector> {
    HttpsConnectorBuilder::new()
        .with_tls_config((**tls).clone())
        .https_or_http()
        .enable_http1()
        .wrap_connector(tcp_connector())
}

/// TCP only; `Connector::call` bounds the whole set-up (TCP, proxy, TLS) by `connect_ms`.
fn tcp_connector() -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_keepalive(Some(Duration::from_secs(30)));
    http
}

fn tls_builder(tls: &Arc<ClientConfig>) -> HttpsConnectorBuilder<hyper_rustls::builderstates::WantsProtocols3> {
    HttpsConnectorBuilder::new().with_tls_config((**tls).clone()).https_or_http().enable_http1().enable_http2()
}

/// The TLS settings of every provider without a CA file of its own, built once (the platform's roots
/// are loaded once).
fn default_tls() -> Result<Arc<ClientConfig>, String> {
    static DEFAULT: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    DEFAULT.get_or_init(|| tls_config(Vec::new()).map(Arc::new)).clone()
}

fn tls_config(extra_roots: Vec<CertificateDer<'static>>) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = if extra_roots.is_empty() {
        rustls_platform_verifier::Verifier::new(provider.clone())
    } else {
        rustls_platform_verifier::Verifier::new_with_extra_roots(extra_roots, provider.clone())
    }
    .map_err(|e| format!("cannot set up TLS certificate verification: {e}"))?;
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// Connects to a destination along the provider's route.
#[derive(Clone)]
pub struct Connector {
    direct: HttpsConnector<HttpConnector>,
    route: Arc<Route>,
    connect_timeout: Duration,
}

impl Service<Uri> for Connector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(())) // Both connectors are always ready; each call is independent.
    }

    /// `connect_ms` bounds the whole set-up: TCP, the proxy's CONNECT, TLS.
    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting: Self::Future = match &*self.route {
            Route::Direct => {
                let mut direct = self.direct.clone();
                Box::pin(async move { Ok(Conn::Direct(direct.call(dst).await?)) })
            }
            Route::Forward { proxy, connector, .. } => {
                let (proxy, mut connector) = (proxy.clone(), connector.clone());
                Box::pin(async move { Ok(Conn::Forward(connector.call(proxy).await?)) })
            }
            Route::Tunnel(tunnel) => {
                let mut tunnel = tunnel.clone();
                Box::pin(async move { Ok(Conn::Tunnel(Box::new(tunnel.call(dst).await?))) })
            }
        };
        let limit = self.connect_timeout;
        Box::pin(async move {
            match tokio::time::timeout(limit, connecting).await {
                Ok(result) => result,
                Err(_) => {
                    Err(Box::new(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout")) as BoxError)
                }
            }
        })
    }
}

/// A connection along one of the routes.
pub enum Conn {
    Direct(Tcp),
    Forward(Tcp),
    Tunnel(Box<MaybeHttpsStream<Tcp>>),
}

macro_rules! each {
    ($self:expr, $io:ident => $body:expr) => {
        match $self {
            Conn::Direct($io) | Conn::Forward($io) => $body,
            Conn::Tunnel($io) => $body,
        }
    };
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        match self {
            Conn::Direct(io) => io.connected(),
            // Requests to an `http` provider through a proxy are written in absolute form.
            Conn::Forward(io) => io.connected().proxy(true),
            Conn::Tunnel(io) => io.connected(),
        }
    }
}

impl Read for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<std::io::Result<()>> {
        each!(self.get_mut(), io => Pin::new(io).poll_read(cx, buf))
    }
}

impl Write for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        each!(self.get_mut(), io => Pin::new(io).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each!(self.get_mut(), io => Pin::new(io).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each!(self.get_mut(), io => Pin::new(io).poll_shutdown(cx))
    }

    fn is_write_vectored(&self) -> bool {
        each!(self, io => io.is_write_vectored())
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        each!(self.get_mut(), io => Pin::new(io).poll_write_vectored(cx, bufs))
    }
}

/// Whether a failed call is a connect timeout, a connect failure, or something later.
pub fn classify(e: &hyper_util::client::legacy::Error) -> (bool, bool) {
    let mut timed_out = false;
    let mut source: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            timed_out = true;
        }
        source = s.source();
    }
    (e.is_connect(), timed_out)
}
