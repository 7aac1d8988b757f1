use super::*;
use crate::config::Config;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// A client connected to one session of a pool whose server is never
/// contacted: the requests here are answered by the proxy itself.
async fn connect() -> (TcpStream, watch::Sender<bool>) {
    let config = Config::parse(
        "p:\n  listen: 127.0.0.1:22121\n  redis: true\n  servers:\n   - 127.0.0.1:1:1\n",
    )
    .unwrap();
    let pool = Arc::new(Pool::new(&config.pools[0]));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        serve(pool, stream, shutdown).await;
    });
    (TcpStream::connect(addr).await.unwrap(), stop)
}

#[tokio::test]
async fn a_pipeline_longer_than_a_batch_gets_every_reply() {
    let (mut client, _stop) = connect().await;
    let n = 2 * crate::proxy::window::MAX_PENDING + 100;
    let pipeline = b"*1\r\n$4\r\nPING\r\n".repeat(n);
    client.write_all(&pipeline).await.unwrap();
    let want = b"+PONG\r\n".repeat(n);
    let mut got = vec![0; want.len()];
    tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut got))
        .await
        .expect("every reply, without sending more")
        .unwrap();
    assert_eq!(got, want);
}

#[tokio::test]
async fn a_stopping_proxy_answers_then_closes() {
    let (mut client, stop) = connect().await;
    client.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
    let mut reply = [0; 7];
    client.read_exact(&mut reply).await.unwrap();
    stop.send(true).unwrap();
    client.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut rest))
        .await
        .expect("the session closes after its grace period")
        .unwrap();
    assert_eq!(rest, b"+PONG\r\n");
}
