//! TLS material for tests, made with the `openssl` command (installed by
//! deploy/install-deps.sh): a CA, a certificate for 127.0.0.1 and
//! localhost (IP and DNS SANs) used by the proxy and the redis-servers, a
//! client certificate the CA signed, and a second CA with a client
//! certificate of its own, which nothing trusts. Removed when dropped.
//! Also TLS-only redis-servers and `redis-cli --tls`.

use super::redis::Redis;
use super::{free_port, port_open, temp_dir, wait_until, ProcessGuard};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The files of one test's TLS setup.
pub struct Certs {
    pub dir: PathBuf,
}

/// A certificate and its key.
#[derive(Clone, Copy)]
pub enum Identity {
    /// For 127.0.0.1 and localhost, signed by the CA.
    Server,
    /// A client certificate signed by the CA.
    Client,
    /// A client certificate signed by the other CA.
    Stranger,
}

impl Certs {
    /// Makes every file; takes well under a second (EC P-256 keys).
    pub fn generate() -> Certs {
        let dir = temp_dir("tls");
        let certs = Certs { dir };
        certs.make_ca("ca");
        certs.make_ca("other-ca");
        certs.make_leaf("server", "ca", "localhost");
        certs.make_leaf("client", "ca", "shardproxy test client");
        certs.make_leaf("stranger", "other-ca", "stranger");
        certs
    }

    /// The CA that signed the server and client certificates.
    pub fn ca(&self) -> String {
        self.path("ca.pem")
    }

    /// A CA that signed nothing the tests trust.
    pub fn other_ca(&self) -> String {
        self.path("other-ca.pem")
    }

    /// The certificate file of `who`.
    pub fn cert(&self, who: Identity) -> String {
        self.path(&format!("{}.pem", name(who)))
    }

    /// The key file of `who`.
    pub fn key(&self, who: Identity) -> String {
        self.path(&format!("{}.key", name(who)))
    }

    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).to_str().unwrap().to_string()
    }

    fn make_ca(&self, stem: &str) {
        self.new_key_and_request(
            stem,
            &format!("/CN=shardproxy test {stem}"),
            &[
                "-x509",
                "-days",
                "2",
                "-out",
                &format!("{stem}.pem"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
    }

    /// `openssl req` making a fresh P-256 key `<stem>.key` for subject
    /// `subj`; `rest` says what to write (a self-signed certificate, or a
    /// signing request).
    fn new_key_and_request(&self, stem: &str, subj: &str, rest: &[&str]) {
        let key = format!("{stem}.key");
        let mut args = vec![
            "req",
            "-new",
            "-nodes",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-subj",
            subj,
            "-keyout",
            &key,
        ];
        args.extend_from_slice(rest);
        openssl(&self.dir, &args);
    }

    fn make_leaf(&self, stem: &str, ca: &str, cn: &str) {
        let ext = format!("{stem}.ext");
        std::fs::write(
            self.dir.join(&ext),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth,clientAuth\n\
             subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        self.new_key_and_request(
            stem,
            &format!("/CN={cn}"),
            &["-out", &format!("{stem}.csr")],
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{stem}.csr"),
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &format!("{stem}.pem"),
            ],
        );
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn name(who: Identity) -> &'static str {
    match who {
        Identity::Server => "server",
        Identity::Client => "client",
        Identity::Stranger => "stranger",
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl must be installed (deploy/install-deps.sh)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A redis-server that speaks TLS only (`--port 0`), with the server
/// certificate; `extra` are more `--option value` arguments (by default
/// clients need no certificate: `--tls-auth-clients no`).
pub fn start_redis(certs: &Certs, extra: &[&str]) -> Redis {
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &port.to_string()])
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--tls-cert-file", &certs.cert(Identity::Server)])
        .args(["--tls-key-file", &certs.key(Identity::Server)])
        .args(["--tls-ca-cert-file", &certs.ca()])
        .args(["--repl-diskless-sync-delay", "0"])
        .arg("--dir")
        .arg(temp_dir("redis-tls"))
        .args(if extra.contains(&"--tls-auth-clients") {
            &[][..]
        } else {
            &["--tls-auth-clients", "no"][..]
        })
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (deploy/install-deps.sh)");
    let guard = ProcessGuard::new(format!("redis-tls:{port}"), child);
    wait_until(
        "TLS redis-server to listen",
        Duration::from_secs(10),
        || port_open(port),
    );
    Redis { port, guard }
}

/// Runs `redis-cli --tls` against `port`, trusting `ca`, presenting
/// `identity` when given; the whole output.
pub fn cli(port: u16, ca: &str, identity: Option<(&str, &str)>, args: &[&str]) -> Output {
    let mut command = Command::new("redis-cli");
    command
        .args([
            "--tls",
            "--cacert",
            ca,
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdin(Stdio::null());
    if let Some((cert, key)) = identity {
        command.args(["--cert", cert, "--key", key]);
    }
    command.args(args).output().expect("run redis-cli")
}

/// [`cli`]'s stdout and stderr, trimmed, together.
pub fn cli_text(port: u16, ca: &str, identity: Option<(&str, &str)>, args: &[&str]) -> String {
    let out = cli(port, ca, identity, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.trim().to_string()
}

/// `redis-cli --tls` to a TLS redis-server of these tests (the CA, the
/// client certificate for `tls-auth-clients yes`).
pub fn redis_cmd(certs: &Certs, redis: &Redis, args: &[&str]) -> String {
    let identity = (certs.cert(Identity::Client), certs.key(Identity::Client));
    cli_text(
        redis.port,
        &certs.ca(),
        Some((&identity.0, &identity.1)),
        args,
    )
}
