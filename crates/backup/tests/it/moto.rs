//! A real S3 implementation on loopback: `moto_server` (PyPI `moto[server]`), started per test
//! and killed when the guard drops.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use latentdb_backup::{S3Config, Target};

/// A running moto server; killed on drop.
pub struct Moto {
    child: Child,
    port: u16,
}

/// How to start moto here: `moto_server` on the PATH, else `python3 -m moto.server`.
fn moto_command() -> Option<Command> {
    let on_path = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| dir.join("moto_server").is_file())
    });
    if on_path {
        return Some(Command::new("moto_server"));
    }
    let importable = Command::new("python3")
        .args(["-c", "import moto.server"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    importable.then(|| {
        let mut c = Command::new("python3");
        c.args(["-m", "moto.server"]);
        c
    })
}

impl Moto {
    /// Starts moto on a free loopback port and waits until it answers. `None` (with the reason
    /// printed) when moto is not installed, unless `CI` is set: then the test fails.
    pub fn start() -> Option<Moto> {
        let Some(mut command) = moto_command() else {
            let why = "moto is not installed (pip install 'moto[server]'): S3 tests skipped";
            assert!(std::env::var_os("CI").is_none(), "{why}, and CI is set");
            eprintln!("SKIP: {why}");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn moto");
        let mut moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = moto.child.try_wait().unwrap() {
                panic!("moto_server exited at startup: {status}");
            }
            if moto
                .request("GET", "/")
                .is_some_and(|r| r.starts_with("HTTP/1."))
            {
                return Some(moto);
            }
            assert!(Instant::now() < deadline, "moto did not answer within 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One plain HTTP/1.1 request without a body; the response, or `None` if it failed.
    fn request(&self, method: &str, path: &str) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        );
        stream.write_all(head.as_bytes()).ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        Some(response)
    }

    /// Creates `bucket` (moto accepts unsigned requests).
    pub fn create_bucket(&self, bucket: &str) {
        let response = self.request("PUT", &format!("/{bucket}")).unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An explicit configuration for this server.
    pub fn config(&self) -> S3Config {
        S3Config {
            endpoint: Some(self.endpoint()),
            region: Some("us-east-1".into()),
            access_key_id: Some("testing".into()),
            secret_access_key: Some("testing".into()),
            allow_http: true,
        }
    }

    /// `s3://bucket/prefix` on this server.
    pub fn target(&self, url: &str) -> Target {
        Target::s3_with(url, self.config()).unwrap()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
