//! Server sockets that notice a silent network.
//!
//! A partition or a frozen host sends no RST and no FIN: a session waiting
//! for a reply would wait for TCP's retransmission timeout, many minutes.
//! Keepalive probes find an idle connection dead, `TCP_USER_TIMEOUT` one
//! with data unacknowledged; and when the health loop declares the server
//! down it shuts every connection to it ([`LiveSockets`]).

use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

#[cfg(test)]
use crate::topology::LiveSockets;

use tokio::net::TcpStream;

/// Keepalive after `idle` without traffic (then probes every `idle / 3`,
/// three of them), and `user_timeout` for unacknowledged data; zero turns
/// either off.
pub(super) fn tune(
    stream: &TcpStream,
    idle: Duration,
    user_timeout: Duration,
) -> std::io::Result<()> {
    let fd = stream.as_raw_fd();
    if !idle.is_zero() {
        let secs = idle.as_secs().max(1) as libc::c_int;
        setsockopt(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
        setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, secs)?;
        setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_KEEPINTVL,
            (secs / 3).max(1),
        )?;
        setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3)?;
    }
    if !user_timeout.is_zero() {
        let ms = user_timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, ms)?;
    }
    Ok(())
}

fn setsockopt(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> std::io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_shut_socket_ends_its_owners_pending_read() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let _server = listener.accept().await.unwrap();
        tune(&client, Duration::from_secs(10), Duration::from_secs(15)).unwrap();
        let live = std::sync::Arc::new(LiveSockets::default());
        live.add(client.as_raw_fd());
        let l = std::sync::Arc::clone(&live);
        let read = tokio::spawn(async move {
            let mut b = [0u8; 1];
            client.read(&mut b).await.map(|n| (n, client))
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(l.shut_all(), 1);
        let (n, client) = tokio::time::timeout(Duration::from_secs(2), read)
            .await
            .expect("the read ended")
            .unwrap()
            .unwrap();
        assert_eq!(n, 0, "EOF");
        live.remove(client.as_raw_fd());
        assert_eq!(live.shut_all(), 0);
    }
}
