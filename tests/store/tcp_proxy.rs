//! A TCP proxy that the test can cut and restore, to take a server away from the gateway and
//! give it back without touching the server itself (which other tests share).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct TcpProxy {
    pub addr: SocketAddr,
    open: watch::Sender<bool>,
    /// Connections being forwarded now.
    live: Arc<AtomicUsize>,
    accepting: JoinHandle<()>,
}

impl TcpProxy {
    /// Forwards every connection made to `addr` to `upstream`.
    pub async fn start(upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (open, _) = watch::channel(true);
        let is_open = open.clone();
        let live = Arc::new(AtomicUsize::new(0));
        let counted = live.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                // Cut: the connection is closed at once, as by a server that is gone.
                if !*is_open.borrow() {
                    continue;
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let (counted, open) = (counted.clone(), is_open.subscribe());
                tokio::spawn(async move {
                    forward(client, upstream, open).await;
                    counted.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        TcpProxy {
            addr,
            open,
            live,
            accepting,
        }
    }

    /// Closes every connection and refuses new ones until [`Self::restore`]; returns once
    /// every connection is closed, so that nothing more reaches the server.
    pub async fn cut(&self) {
        self.open.send_replace(false);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.live.load(Ordering::SeqCst) > 0 {
            assert!(std::time::Instant::now() < deadline, "connections close");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    pub fn restore(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.open.send_replace(false);
        self.accepting.abort();
    }
}

async fn forward(mut client: TcpStream, upstream: SocketAddr, mut open: watch::Receiver<bool>) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        _ = open.wait_for(|open| !*open) => {}
    }
}
