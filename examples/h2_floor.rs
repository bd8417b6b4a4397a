//! Run with: `cargo run --release --example h2_floor -- --listen 127.0.0.1:17104 --upstream 127.0.0.1:17101`
//!
//! The cheapest gRPC relay this project's HTTP/2 stack allows, to measure
//! what the stack itself costs per call (`bench/instructions.sh`,
//! `bench/run.sh`). It is not a router: no policy, no registry, no request
//! parsing, no metadata, no deadlines, no logging, and a client that goes
//! away is noticed only at the next send. Each stream arriving on
//! the listener (the `h2` crate's server, without hyper) is sent as it came
//! (headers and body) on one HTTP/2 connection to one upstream (the `h2`
//! crate's client), and the response's headers, data and trailers are sent
//! back as they came. One thread, one task per connection and per stream,
//! as the router runs with `--worker-threads 1`.
//!
//! Whatever this costs per call, Switchyard cannot cost less on the same
//! stack: the difference between the two is what the router's own work and
//! hyper add.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;

use std::task::Poll;

use bytes::{Bytes, BytesMut};
use clap::Parser;
use h2::client::SendRequest;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{Request, Response};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Parser)]
#[command(about = "A minimal gRPC relay on the h2 crate: the stack's cost floor")]
struct Args {
    /// Address to serve on.
    #[arg(long)]
    listen: SocketAddr,
    /// The gRPC server every call is relayed to.
    #[arg(long)]
    upstream: SocketAddr,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let args = Args::parse();
    // No logging. A dispatcher must still be set: with none, every span
    // h2 makes is also offered to the `log` crate (the `tracing/log`
    // feature, which axum turns on), a fifth of the instructions per call.
    tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default())?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> Result<(), Error> {
    // The same windows as the router's upstream connections.
    let tcp = TcpStream::connect(args.upstream).await?;
    tcp.set_nodelay(true)?;
    let (upstream, connection) = h2::client::Builder::new()
        .initial_window_size(2 * 1024 * 1024)
        .initial_connection_window_size(5 * 1024 * 1024)
        .handshake::<_, Bytes>(tcp)
        .await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("upstream connection ended: {e}");
        }
    });

    let listener = TcpListener::bind(args.listen).await?;
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        tokio::spawn(serve(tcp, upstream.clone()));
    }
}

/// Accepts streams on one client connection, each relayed on its own task.
async fn serve(tcp: TcpStream, upstream: SendRequest<Bytes>) {
    let mut connection = match h2::server::handshake(tcp).await {
        Ok(connection) => connection,
        Err(e) => return eprintln!("handshake failed: {e}"),
    };
    while let Some(accepted) = connection.accept().await {
        match accepted {
            Ok((request, respond)) => {
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Err(e) = relay(request, respond, upstream).await {
                        eprintln!("relay failed: {e}");
                    }
                });
            }
            Err(e) => return eprintln!("connection failed: {e}"),
        }
    }
}

async fn relay(
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    upstream: SendRequest<Bytes>,
) -> Result<(), Error> {
    // The request body whole first (a gRPC unary request is one message),
    // so headers and body leave upstream in one write, as the router does.
    let (head, mut body) = request.into_parts();
    let mut message = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        message.push(chunk);
    }

    let mut upstream = upstream.ready().await?;
    let (response, mut send) = upstream.send_request(Request::from_parts(head, ()), false)?;
    let last = message.len().saturating_sub(1);
    for (i, chunk) in message.into_iter().enumerate() {
        send.send_data(chunk, i == last)?;
    }

    let (head, mut body) = response.await?.into_parts();
    let mut out = respond.send_response(Response::from_parts(head, ()), false)?;
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        let chunk = coalesce(&mut body, chunk)?;
        send_with_capacity(&mut out, chunk).await?;
    }
    match body.trailers().await? {
        Some(trailers) => out.send_trailers(trailers)?,
        None => out.send_data(Bytes::new(), true)?,
    }
    Ok(())
}

/// `first` joined with the DATA payloads that have already arrived behind
/// it (up to 16 KiB), so a burst of tokens leaves as one frame, as the
/// router does.
fn coalesce(body: &mut RecvStream, first: Bytes) -> Result<Bytes, Error> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut joined: Option<BytesMut> = None;
    while joined.as_ref().map_or(first.len(), BytesMut::len) < 16 * 1024 {
        let Poll::Ready(Some(more)) = body.poll_data(&mut cx) else {
            break;
        };
        let more = more?;
        let _ = body.flow_control().release_capacity(more.len());
        joined
            .get_or_insert_with(|| BytesMut::from(&first[..]))
            .extend_from_slice(&more);
    }
    Ok(joined.map_or(first, BytesMut::freeze))
}

/// Sends `chunk` within the client's flow-control window, waiting for the
/// window to open as far as needed (as hyper does).
async fn send_with_capacity(out: &mut SendStream<Bytes>, mut chunk: Bytes) -> Result<(), Error> {
    while !chunk.is_empty() {
        out.reserve_capacity(chunk.len());
        let granted = match out.capacity() {
            0 => std::future::poll_fn(|cx| out.poll_capacity(cx))
                .await
                .ok_or("the client reset the stream")??,
            n => n,
        };
        let now = chunk.split_to(granted.min(chunk.len()));
        out.send_data(now, false)?;
    }
    Ok(())
}
