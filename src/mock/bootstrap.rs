//! The mock's PD rendezvous: a tiny line protocol over TCP that proves the
//! router handed a prefill and a decode worker matching bootstrap values.
//!
//! The prefill mock listens on its bootstrap port and remembers the rooms of
//! the calls it receives. The decode mock connects to the `bootstrap_host`
//! and `bootstrap_port` it was sent and asks `ROOM <n>`; the prefill side
//! answers `OK <n>` once it has seen that room, or `UNKNOWN <n>` if it does
//! not within the timeout. Wrong host, port or room all fail the call.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Rooms the prefill side has been sent and not yet paired.
#[derive(Debug, Default)]
pub struct Rooms {
    open: Mutex<HashSet<u64>>,
    changed: Notify,
}

impl Rooms {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A prefill call for `room` arrived.
    pub fn record(&self, room: u64) {
        self.lock().insert(room);
        self.changed.notify_waiters();
    }

    /// Waits up to `timeout` for `room`; pairing removes it.
    async fn pair(&self, room: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            if self.lock().remove(&room) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return false;
            }
        }
    }
}

/// Serves the prefill side of the rendezvous on `listener` until aborted.
pub fn serve(listener: TcpListener, rooms: Arc<Rooms>, timeout: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let rooms = rooms.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut line = String::new();
                if BufReader::new(read).read_line(&mut line).await.is_err() {
                    return;
                }
                let reply = match line
                    .trim()
                    .strip_prefix("ROOM ")
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    Some(room) if rooms.pair(room, timeout).await => format!("OK {room}\n"),
                    Some(room) => format!("UNKNOWN {room}\n"),
                    None => "ERROR expected ROOM <n>\n".to_string(),
                };
                let _ = write.write_all(reply.as_bytes()).await;
            });
        }
    })
}

/// Why the decode side could not rendezvous.
#[derive(Debug, thiserror::Error)]
pub enum RendezvousError {
    /// Nothing answered at the bootstrap address.
    #[error("cannot reach the prefill bootstrap at {addr}: {reason}")]
    Unreachable {
        /// host:port tried.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The prefill side never saw the room.
    #[error("bootstrap rendezvous failed: the prefill worker at {addr} never saw room {room} (wrong host, port or room?)")]
    UnknownRoom {
        /// host:port asked.
        addr: String,
        /// The room.
        room: u64,
    },
}

/// Asks the prefill side at `host:port` for `room`, within `timeout`.
pub async fn ask(
    host: &str,
    port: u32,
    room: u64,
    timeout: Duration,
) -> Result<(), RendezvousError> {
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let unreachable = |reason: String| RendezvousError::Unreachable {
        addr: addr.clone(),
        reason,
    };
    let target: SocketAddr = tokio::net::lookup_host(&addr)
        .await
        .map_err(|e| unreachable(e.to_string()))?
        .next()
        .ok_or_else(|| unreachable("no address".into()))?;
    let exchange = async {
        let mut socket = TcpStream::connect(target)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        socket
            .write_all(format!("ROOM {room}\n").as_bytes())
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let mut line = String::new();
        BufReader::new(socket)
            .read_line(&mut line)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        if line.trim() == format!("OK {room}") {
            Ok(())
        } else {
            Err(RendezvousError::UnknownRoom {
                addr: addr.clone(),
                room,
            })
        }
    };
    // The prefill side waits up to `timeout` itself; allow for the trip.
    tokio::time::timeout(timeout + Duration::from_secs(1), exchange)
        .await
        .unwrap_or_else(|_| {
            Err(RendezvousError::UnknownRoom {
                addr: addr.clone(),
                room,
            })
        })
}
