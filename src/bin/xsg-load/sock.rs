//! UDP sockets with large kernel buffers, so that at high rates the tool's own sockets
//! are not where messages are dropped (the default loopback receive buffer of ~200 KiB
//! holds only a few hundred NOTIFYs).

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Requested send and receive buffer size; the kernel caps it at `net.core.rmem_max`
/// / `wmem_max`.
pub const BUFFER_BYTES: usize = 4 << 20;

/// A bound, blocking std UDP socket with [`BUFFER_BYTES`] buffers (best effort).
pub fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: a smaller buffer still works, it only drops sooner.
    let _ = socket.set_recv_buffer_size(BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(BUFFER_BYTES);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The same, as a tokio socket.
pub fn bind_tokio_udp(addr: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    let s = bind_udp(addr)?;
    s.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_gets_a_buffer_larger_than_the_default() {
        let s = bind_udp("127.0.0.1:0".parse().expect("addr")).expect("binds");
        let size = socket2::SockRef::from(&s).recv_buffer_size().expect("size");
        // Linux doubles the requested value for bookkeeping and caps it at rmem_max.
        assert!(size > 256 * 1024, "receive buffer {size}");
    }
}
