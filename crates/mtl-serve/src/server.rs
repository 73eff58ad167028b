//! Starting and stopping the server: the listener, the async runtime on a thread of its own,
//! the batcher thread, graceful shutdown.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use burn::tensor::backend::Backend;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::batcher::{self, Limits};
use crate::config::ServeConfig;
use crate::engine::ServedModel;
use crate::error::ServeError;
use crate::metrics::Metrics;
use crate::routes::{router, AppState};

/// A running server. [`Server::shutdown`] (or SIGINT / SIGTERM with
/// [`ServeConfig::handle_signals`]) stops accepting connections, finishes the requests in
/// flight and the batches queued, and ends both threads.
pub struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    http: Option<JoinHandle<std::io::Result<()>>>,
    batchers: Vec<JoinHandle<()>>,
}

impl Server {
    /// Binds `config.host:config.port` and starts serving `model`.
    pub fn start<B: Backend>(
        model: ServedModel<B>,
        config: ServeConfig,
    ) -> Result<Self, ServeError> {
        for (name, value) in [
            ("max-batch-tokens", config.max_batch_tokens),
            ("max-batch-requests", config.max_batch_requests),
            ("max-client-batch-size", config.max_client_batch_size),
            ("max-concurrent-requests", config.max_concurrent_requests),
            ("max-body-bytes", config.max_body_bytes),
        ] {
            if value == 0 {
                return Err(ServeError::Config(format!("--{name} must be at least 1")));
            }
        }
        let model = match config.max_input_tokens {
            Some(tokens) => model.with_max_input_tokens(tokens)?,
            None => model,
        };
        let addr = format!("{}:{}", config.host, config.port);
        let bind_error = |source| ServeError::Bind {
            addr: addr.clone(),
            source,
        };
        let listener = std::net::TcpListener::bind(&addr).map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let local = listener.local_addr().map_err(bind_error)?;

        let metrics = Arc::new(Metrics::default());
        let (queue, jobs) = mpsc::channel(config.max_concurrent_requests);
        let limits = Limits {
            max_tokens: config.max_batch_tokens,
            max_requests: config.max_batch_requests,
        };
        let state = Arc::new(AppState {
            info: model.info(),
            permits: Arc::new(Semaphore::new(config.max_concurrent_requests)),
            config,
            queue,
            metrics: metrics.clone(),
        });
        // One batcher per worker, each running its batches on one core: a batch's last piece
        // never leaves the other core idle, and while one batcher runs, the other takes
        // what waits.
        let queue = Arc::new(Mutex::new(jobs));
        let workers = model.encoder().settings.workers.max(1);
        let batchers = (0..workers)
            .map(|i| {
                let (model, queue) = (model.clone().with_workers(1), queue.clone());
                let metrics = metrics.clone();
                std::thread::Builder::new()
                    .name(format!("mtl-batcher-{i}"))
                    .spawn(move || batcher::run(model, &queue, limits, metrics))
                    .map_err(ServeError::Runtime)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(ServeError::Runtime)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let signals = state.config.handle_signals;
        let http = std::thread::Builder::new()
            .name("mtl-http".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    let app = router(state);
                    axum::serve(listener, app)
                        .with_graceful_shutdown(shutdown_signal(stopped, signals))
                        .await
                })
            })
            .map_err(ServeError::Runtime)?;
        Ok(Self {
            addr: local,
            stop: Some(stop),
            http: Some(http),
            batchers,
        })
    }

    /// The address the server listens on (with the port chosen when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops gracefully and waits until the requests in flight are answered.
    pub fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.join()
    }

    /// Waits until the server stops (on a signal, with [`ServeConfig::handle_signals`]).
    pub fn wait(mut self) -> std::io::Result<()> {
        self.join()
    }

    fn join(&mut self) -> std::io::Result<()> {
        let served = match self.http.take() {
            Some(http) => http
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the HTTP thread panicked"))),
            None => Ok(()),
        };
        // The routes' queue senders are gone with the HTTP server: the batchers end.
        for batcher in self.batchers.drain(..) {
            let _ = batcher.join();
        }
        served
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
            let _ = self.join();
        }
    }
}

/// Resolves on [`Server::shutdown`], or on SIGINT / SIGTERM when `signals`.
async fn shutdown_signal(stopped: oneshot::Receiver<()>, signals: bool) {
    if !signals {
        let _ = stopped.await;
        return;
    }
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = stopped => {}
        _ = interrupt => {}
        _ = terminate => {}
    }
}
