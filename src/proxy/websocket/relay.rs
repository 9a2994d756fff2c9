//! The relay: messages both ways as they come (one message held at a time; fragments are
//! joined by the WebSocket layer, up to the size limit), pings answered on each side, close
//! codes and reasons passed through, and the proxy's own closes with clear reasons.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_util::sync::CancellationToken;

use super::meter::Meter;

/// How long a close frame may take to leave on a side that is not reading.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// How a relay ended, for its log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ending {
    /// The client closed (code as sent, if any).
    ClientClosed(Option<u16>),
    /// The upstream closed (code as sent, if any).
    UpstreamClosed(Option<u16>),
    /// The client's connection ended without a close frame.
    ClientGone,
    /// The upstream's connection ended without a close frame.
    UpstreamGone,
    /// No message either way for the idle timeout.
    Idle,
    /// A side did not take a message within the idle timeout (a client that stopped reading).
    Stalled,
    /// A message over the size limit.
    TooBig,
    /// The proxy is shutting down.
    Shutdown,
}

/// The limits a relay enforces.
#[derive(Debug, Clone, Copy)]
pub(super) struct RelayLimits {
    /// No message either way for this long closes the socket; a message not taken by its
    /// peer within it too.
    pub(super) idle: Duration,
}

/// Relays between `client` and `upstream` until either side closes, a limit is hit, or
/// `stop` is cancelled (then both sides get 1001).
pub(super) async fn run<C, U>(
    mut client: WebSocketStream<C>,
    mut upstream: WebSocketStream<U>,
    limits: RelayLimits,
    stop: CancellationToken,
    mut meter: Meter,
) -> Ending
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let idle = tokio::time::sleep(limits.idle);
    let mut idle = std::pin::pin!(idle);
    // Made once, not in each turn of the loop: a new `cancelled()` future per message would
    // enter and leave the token's list of waiters (a mutex each time) for every message.
    let cancelled = stop.cancelled();
    let mut cancelled = std::pin::pin!(cancelled);
    loop {
        tokio::select! {
            biased;
            () = cancelled.as_mut() => {
                let reason = "foundry-proxy is shutting down; reconnect";
                close(&mut client, CloseCode::Away, reason).await;
                close(&mut upstream, CloseCode::Away, reason).await;
                return Ending::Shutdown;
            }
            () = idle.as_mut() => {
                let reason = format!("no message for {} s (FOUNDRY_PROXY_WS_IDLE_TIMEOUT)", limits.idle.as_secs());
                close(&mut client, CloseCode::Normal, &reason).await;
                close(&mut upstream, CloseCode::Normal, &reason).await;
                return Ending::Idle;
            }
            message = client.next() => {
                idle.as_mut().reset(tokio::time::Instant::now() + limits.idle);
                match message {
                    Some(Ok(Message::Text(text))) => {
                        match meter.client_sent(text.as_str()).await {
                            Ok(rewritten) => {
                                let message = rewritten.map_or(Message::Text(text), Message::text);
                                if !deliver(&mut upstream, message, limits.idle).await {
                                    close(&mut client, CloseCode::Error, "the upstream stopped taking messages").await;
                                    return Ending::Stalled;
                                }
                            }
                            Err(event) => {
                                if !deliver(&mut client, Message::text(event), limits.idle).await {
                                    close(&mut upstream, CloseCode::Away, "the client stopped reading").await;
                                    return Ending::Stalled;
                                }
                            }
                        }
                    }
                    Some(Ok(Message::Binary(data))) => {
                        if !deliver(&mut upstream, Message::Binary(data), limits.idle).await {
                            close(&mut client, CloseCode::Error, "the upstream stopped taking messages").await;
                            return Ending::Stalled;
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let code = frame.as_ref().map(|f| u16::from(f.code));
                        pass_close(&mut upstream, frame).await;
                        let _ = tokio::time::timeout(CLOSE_WAIT, client.close(None)).await;
                        return Ending::ClientClosed(code);
                    }
                    // Pings are answered by the WebSocket layer; flushing sends the pong.
                    Some(Ok(_)) => { let _ = client.flush().await; }
                    Some(Err(Error::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                        let reason = format!("message of {size} bytes is over the limit of {max_size} (FOUNDRY_PROXY_WS_MAX_MESSAGE)");
                        close(&mut client, CloseCode::Size, &reason).await;
                        close(&mut upstream, CloseCode::Away, "the client sent a message over the proxy's size limit").await;
                        return Ending::TooBig;
                    }
                    Some(Err(_)) | None => {
                        close(&mut upstream, CloseCode::Away, "the client went away").await;
                        return Ending::ClientGone;
                    }
                }
            }
            message = upstream.next() => {
                idle.as_mut().reset(tokio::time::Instant::now() + limits.idle);
                match message {
                    Some(Ok(Message::Text(text))) => {
                        meter.upstream_sent(text.as_str());
                        if !deliver(&mut client, Message::Text(text), limits.idle).await {
                            close(&mut upstream, CloseCode::Away, "the client stopped reading").await;
                            return Ending::Stalled;
                        }
                    }
                    Some(Ok(Message::Binary(data))) => {
                        if !deliver(&mut client, Message::Binary(data), limits.idle).await {
                            close(&mut upstream, CloseCode::Away, "the client stopped reading").await;
                            return Ending::Stalled;
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let code = frame.as_ref().map(|f| u16::from(f.code));
                        pass_close(&mut client, frame).await;
                        let _ = tokio::time::timeout(CLOSE_WAIT, upstream.close(None)).await;
                        return Ending::UpstreamClosed(code);
                    }
                    Some(Ok(_)) => { let _ = upstream.flush().await; }
                    Some(Err(Error::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                        let reason = format!("the upstream sent a message of {size} bytes, over the limit of {max_size} (FOUNDRY_PROXY_WS_MAX_MESSAGE)");
                        close(&mut client, CloseCode::Size, &reason).await;
                        close(&mut upstream, CloseCode::Size, "message over the proxy's size limit").await;
                        return Ending::TooBig;
                    }
                    Some(Err(_)) | None => {
                        close(&mut client, CloseCode::Error, "the upstream connection ended without a close frame").await;
                        return Ending::UpstreamGone;
                    }
                }
            }
        }
    }
}

/// Sends one message, waiting at most `limit` for the peer to take it.
async fn deliver<S>(socket: &mut WebSocketStream<S>, message: Message, limit: Duration) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    matches!(
        tokio::time::timeout(limit, socket.send(message)).await,
        Ok(Ok(()))
    )
}

/// Closes with the proxy's own code and reason (a reason is cut to the 123 bytes a close frame
/// holds).
async fn close<S>(socket: &mut WebSocketStream<S>, code: CloseCode, reason: &str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let frame = CloseFrame {
        code,
        reason: reason[..end].into(),
    };
    let _ = tokio::time::timeout(CLOSE_WAIT, socket.close(Some(frame))).await;
}

/// Passes the other side's close frame on as it came (none stays none).
async fn pass_close<S>(socket: &mut WebSocketStream<S>, frame: Option<CloseFrame>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(CLOSE_WAIT, socket.close(frame)).await;
}
