//! `wasi:http/proxy` components served as HTTP, as runwasi's wasmtime shim and `wasmtime
//! serve` do: a component that exports `wasi:http/incoming-handler` is not run once but
//! answers requests on the address that the spec's `WASMTIME_HTTP_PROXY_SOCKET_ADDR` names
//! (runwasi's variable; `0.0.0.0:8080` when unset), HTTP/1.1, each request in a new instance
//! of the pre-instantiated component, requests served concurrently on a tokio runtime.
//!
//! The listening socket is bound in the container's init before it gives up its capabilities
//! (so a spec that keeps `CAP_NET_BIND_SERVICE` may serve port 80), in the container's network
//! namespace. Outgoing requests (`wasi:http/outgoing-handler`) follow the task's network
//! policy ([`crate::runner::Network`]): refused with `HTTP-request-denied` unless it is
//! `inherit`, and then HTTP/1.1 over TCP or, for `https`, over TLS (rustls) verified against
//! the container's own CA bundle, as a program in the container would verify it
//! ([`client_tls`]): an untrusted certificate is `TLS-certificate-error`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::server::conn::http1;
use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
    WasiHttpView,
};

use crate::runner::{Limits, TaskConfig};

/// The spec's environment variable that names the address to serve on (runwasi's).
pub const ADDRESS_ENV: &str = "WASMTIME_HTTP_PROXY_SOCKET_ADDR";
/// Where a proxy component is served when the spec does not say.
pub const DEFAULT_ADDRESS: &str = "0.0.0.0:8080";
/// The export that makes a component an HTTP proxy.
const HANDLER: &str = "wasi:http/incoming-handler@0.2";

/// Whether `component` exports `wasi:http/incoming-handler` (0.2.x).
pub fn is_proxy(engine: &Engine, component: &Component) -> bool {
    component
        .component_type()
        .exports(engine)
        .any(|(name, _)| name.starts_with(HANDLER))
}

/// The engine of a served component: the task's settings ([`crate::runner::engine`]) with
/// wasmtime's pooling instance allocator, as `wasmtime serve` has by default: every request
/// instantiates the component anew, and the pool reuses the instances' memories instead of
/// mapping and unmapping them each time.
pub fn engine() -> wasmtime::Result<Engine> {
    let mut c = crate::runner::config();
    c.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(
        wasmtime::PoolingAllocationConfig::default(),
    ));
    Engine::new(&c)
}

/// The address the task serves on: the spec's [`ADDRESS_ENV`], else [`DEFAULT_ADDRESS`].
pub fn address(cfg: &TaskConfig) -> wasmtime::Result<SocketAddr> {
    let value = cfg
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == ADDRESS_ENV)
        .map(|(_, v)| v.as_str())
        .unwrap_or(DEFAULT_ADDRESS);
    value.parse().map_err(|e| {
        wasmtime::format_err!(
            "{ADDRESS_ENV}={value:?}: {e}; it names the address and port to serve on, e.g. {DEFAULT_ADDRESS}"
        )
    })
}

/// A request's store data.
pub struct HttpState {
    ctx: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limits: Limits,
    hooks: Hooks,
}

impl WasiView for HttpState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HttpState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// The task's policy for outgoing requests.
struct Hooks {
    network: bool,
    /// How `https` requests are verified (the container's trust roots).
    tls: Arc<rustls::ClientConfig>,
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _body_written: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> SendFuture {
        let (network, tls) = (self.network, self.tls.clone());
        Box::new(async move {
            if !network {
                return Err(HttpError::HttpRequestDenied);
            }
            send(request, options, tls).await
        })
    }
}

/// Where distributions keep their CA bundle (Debian, Ubuntu and Alpine; Fedora and RHEL;
/// others), the places OpenSSL and Go look.
const CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The TLS client of outgoing `https` requests: the trust roots of the container (read where
/// the task runs, its root being the container's), from the file the spec's `SSL_CERT_FILE`
/// names or else the first of [`CA_BUNDLES`] there is; with none, every certificate is
/// untrusted, which stderr says once.
fn client_tls(cfg: &TaskConfig) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let named = cfg
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "SSL_CERT_FILE")
        .map(|(_, v)| v.as_str());
    let file = named.or_else(|| {
        CA_BUNDLES
            .iter()
            .copied()
            .find(|p| std::path::Path::new(p).is_file())
    });
    let mut roots = rustls::RootCertStore::empty();
    if let Some(file) = file {
        if let Ok(certs) = CertificateDer::pem_file_iter(file) {
            roots.add_parsable_certificates(certs.flatten());
        }
    }
    if roots.is_empty() {
        eprintln!(
            "strata-wasm: no CA certificate in {} of the container: outgoing https requests \
             will fail their certificate check",
            file.unwrap_or(CA_BUNDLES[0])
        );
    }
    // ring, not aws-lc-rs (rustls' default, which needs cmake and a C build several times
    // the size): rustls deprecates ring's provider for lacking post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// An outgoing request over HTTP/1.1, on TCP or (`https`) TLS: connect (through the
/// container's resolver and network), hand the request to hyper, return the response once its
/// head is in and the connection's own future, which the caller drives to the body's end.
async fn send(
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    tls: Arc<rustls::ClientConfig>,
) -> Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ),
    HttpError,
> {
    let https = request.uri().scheme() == Some(&http::uri::Scheme::HTTPS);
    let authority = request
        .uri()
        .authority()
        .ok_or(HttpError::HttpRequestUriInvalid)?
        .clone();
    let target = match authority.port() {
        Some(_) => authority.to_string(),
        None => format!("{authority}:{}", if https { 443 } else { 80 }),
    };
    let wait = |t: Option<Duration>| t.unwrap_or(Duration::from_secs(600));
    let connect = wait(options.and_then(|o| o.connect_timeout));
    let first_byte = wait(options.and_then(|o| o.first_byte_timeout));
    let stream = tokio::time::timeout(connect, tokio::net::TcpStream::connect(&target))
        .await
        .map_err(|_| HttpError::ConnectionTimeout)?
        .map_err(HttpError::Connect)?;
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    *request.uri_mut() = path.parse().map_err(|_| HttpError::HttpRequestUriInvalid)?;
    if !https {
        return exchange(stream, request, first_byte).await;
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|_| HttpError::HttpRequestUriInvalid)?;
    let stream = tokio::time::timeout(
        connect,
        tokio_rustls::TlsConnector::from(tls).connect(name, stream),
    )
    .await
    .map_err(|_| HttpError::ConnectionTimeout)?
    .map_err(|e| {
        let tls = e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
        match tls {
            Some(rustls::Error::InvalidCertificate(_)) => HttpError::TlsCertificateError,
            Some(rustls::Error::AlertReceived(a)) => HttpError::TlsAlertReceived {
                alert_id: Some(u8::from(*a)),
                alert_message: Some(format!("{a:?}")),
            },
            _ => HttpError::TlsProtocolError,
        }
    })?;
    exchange(stream, request, first_byte).await
}

/// One request and its response on a connected `stream`.
async fn exchange<S>(
    stream: S,
    request: http::Request<WasiBody>,
    first_byte: Duration,
) -> Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ),
    HttpError,
>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let response = tokio::time::timeout(first_byte, sender.send_request(request))
        .await
        .map_err(|_| HttpError::ConnectionReadTimeout)??;
    let done = async move {
        match conn.await {
            Ok(r) => r.map_err(HttpError::from),
            Err(e) => Err(HttpError::InternalError(Some(e.to_string()))),
        }
    };
    Ok((
        response.map(|b| b.map_err(HttpError::from).boxed_unsync()),
        Box::new(done),
    ))
}

/// A proxy component linked against WASI and wasi:http.
pub struct Server {
    pre: ProxyPre<HttpState>,
    address: SocketAddr,
    listener: Option<std::net::TcpListener>,
}

impl Server {
    /// Links `component` (compiled with [`engine`]); errors say what it lacks.
    pub fn link(
        engine: &Engine,
        component: &Component,
        cfg: &TaskConfig,
        name: &str,
    ) -> wasmtime::Result<Server> {
        let address = address(cfg)?;
        let mut linker = wasmtime::component::Linker::<HttpState>::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        let pre = linker
            .instantiate_pre(component)
            .and_then(ProxyPre::new)
            .map_err(|e| {
                wasmtime::format_err!(
                    "{name} exports wasi:http/incoming-handler but is not a wasi:http/proxy component this host can serve: {e:#}"
                )
            })?;
        Ok(Server {
            pre,
            address,
            listener: None,
        })
    }

    pub fn engine(&self) -> &Engine {
        self.pre.engine()
    }

    /// Binds the address, in the container's network namespace.
    pub fn bind(&mut self) -> Result<(), String> {
        let l = std::net::TcpListener::bind(self.address)
            .map_err(|e| format!("serve on {} ({ADDRESS_ENV}): {e}", self.address))?;
        l.set_nonblocking(true)
            .map_err(|e| format!("serve on {}: {e}", self.address))?;
        self.listener = Some(l);
        Ok(())
    }

    /// Serves until the process ends (a signal: [`crate::runner::run_to_exit`]); returns an
    /// error only when it cannot serve at all.
    pub fn serve(self, cfg: &TaskConfig) -> Result<(), String> {
        let listener = self.listener.ok_or("the server's address is not bound")?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("strata-wasm-http")
            .build()
            .map_err(|e| format!("the HTTP server's runtime: {e}"))?;
        let shared = Arc::new(Shared {
            pre: self.pre,
            cfg: cfg.clone(),
            tls: client_tls(cfg)?,
        });
        rt.block_on(async move {
            let listener =
                tokio::net::TcpListener::from_std(listener).map_err(|e| format!("serve: {e}"))?;
            loop {
                let (conn, _) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors or memory: wait, as a server does, then go on.
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // A response goes out in several writes (head, chunks): no Nagle delay.
                let _ = conn.set_nodelay(true);
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { shared.handle(req).await }
                    });
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(conn), service)
                        .await;
                });
            }
        })
    }
}

/// What every request's instance is made from.
struct Shared {
    pre: ProxyPre<HttpState>,
    cfg: TaskConfig,
    tls: Arc<rustls::ClientConfig>,
}

impl Shared {
    /// One request: a new store and instance, `handle` called in a task of its own so that
    /// the body can stream after the head; a guest that traps before setting the response
    /// answers 500.
    async fn handle(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> wasmtime::Result<hyper::Response<HyperOutgoingBody>> {
        let cfg = &self.cfg;
        let mut store = Store::new(
            self.pre.engine(),
            HttpState {
                ctx: crate::runner::wasi_builder(cfg, false, 0)?.build(),
                http: WasiHttpCtx::new(),
                table: ResourceTable::new(),
                limits: Limits::new(cfg.memory_limit),
                hooks: Hooks {
                    network: cfg.network.allowed(),
                    tls: self.tls.clone(),
                },
            },
        );
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(1);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let pre = self.pre.clone();
        let task = tokio::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
        });
        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => Ok(error_response(format!("{code:?}"))),
            Err(_) => {
                let why = match task.await {
                    Ok(Ok(())) => "the component never set a response".to_string(),
                    Ok(Err(e)) => format!("{e:?}"),
                    Err(e) => e.to_string(),
                };
                eprintln!("Error: {why}");
                Ok(error_response(why))
            }
        }
    }
}

/// A 500 whose body says why.
fn error_response(why: String) -> hyper::Response<HyperOutgoingBody> {
    let body = http_body_util::Full::new(bytes::Bytes::from(why + "\n"))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut r = hyper::Response::new(body);
    *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
    r
}
