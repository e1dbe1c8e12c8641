//! A server on a loopback port for the integration tests.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use latentdb::Database;
use latentdb_server::pb::latent_db_client::LatentDbClient;
use latentdb_server::{ServeError, ServerConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// A running server: its address, its database directory and a way to stop it.
pub struct TestServer {
    pub addr: SocketAddr,
    pub db: Arc<Database>,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl TestServer {
    /// Starts a server on 127.0.0.1:0 over a fresh database.
    pub async fn start(config: ServerConfig) -> TestServer {
        Self::start_with(config, latentdb::DatabaseOptions::new()).await
    }

    /// Starts a server on 127.0.0.1:0 over a fresh database opened with `options`.
    pub async fn start_with(
        config: ServerConfig,
        options: latentdb::DatabaseOptions,
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Arc::new(Database::open_with(dir.path(), options).expect("open"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(latentdb_server::serve_with_listener(
            Arc::clone(&db),
            config,
            listener,
            async {
                let _ = stopped.await;
            },
        ));
        TestServer {
            addr,
            db,
            dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The `http://` URL of the server.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A channel to the server.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .expect("url")
            .connect()
            .await
            .expect("connect")
    }

    /// A latentdb client (no API key).
    pub async fn client(&self) -> LatentDbClient<Channel> {
        LatentDbClient::new(self.channel().await)
    }

    /// Stops the server gracefully and returns what `serve` returned.
    pub async fn stop(self) -> Result<(), ServeError> {
        self.stop_keep_dir().await.0
    }

    /// Stops the server gracefully; returns what `serve` returned, the database handle and
    /// the directory (kept alive).
    pub async fn stop_keep_dir(
        mut self,
    ) -> (Result<(), ServeError>, Arc<Database>, tempfile::TempDir) {
        let result = self.shutdown().await;
        (result, self.db, self.dir)
    }

    async fn shutdown(&mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(t) => t.await.expect("server task"),
            None => Ok(()),
        }
    }
}

/// A vector of `dim` components derived from `seed`.
pub fn vector(seed: u64, dim: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..dim)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 2000) as f32 / 1000.0 - 1.0
        })
        .collect()
}
