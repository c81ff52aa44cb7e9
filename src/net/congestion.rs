//! The TCP congestion control of the broker's connections (`--tcp-congestion-control`), and of
//! sable-bench's. BBR, a common system default, paces every flow; where the fq qdisc is missing
//! the kernel paces each burst with a timer of its own, and on the 2-vCPU machine of
//! bench/README loopback Fetch ran at half the bandwidth it reached with cubic, at 1.7x the
//! broker's CPU per byte. Unset, connections keep the system's algorithm.

use std::io;
use std::os::fd::AsFd;

/// Longest algorithm name the kernel takes (`TCP_CA_NAME_MAX` is 16 with the NUL).
pub const NAME_MAX_BYTES: usize = 15;

const AVAILABLE: &str = "/proc/sys/net/ipv4/tcp_available_congestion_control";
const ALLOWED: &str = "/proc/sys/net/ipv4/tcp_allowed_congestion_control";
const SYSTEM_DEFAULT: &str = "/proc/sys/net/ipv4/tcp_congestion_control";

/// Sets the algorithm of one socket.
pub fn set(socket: &impl AsFd, name: &str) -> io::Result<()> {
    socket2::SockRef::from(socket).set_tcp_congestion(name.as_bytes())
}

/// The algorithm a socket uses.
pub fn get(socket: &impl AsFd) -> io::Result<String> {
    let raw = socket2::SockRef::from(socket).tcp_congestion()?;
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    Ok(String::from_utf8_lossy(&raw[..end]).into_owned())
}

/// Checks that this process may use `name`, on a socket of its own, so a wrong name stops the
/// process at start with what the kernel offers instead of failing connection by connection.
/// Reads /proc: call it before any reactor runs.
pub fn check(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > NAME_MAX_BYTES {
        return Err(format!(
            "--tcp-congestion-control {name:?}: a name of 1 to {NAME_MAX_BYTES} bytes"
        ));
    }
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .map_err(|e| format!("--tcp-congestion-control: cannot open a socket to check: {e}"))?;
    set(&socket, name).map_err(|e| {
        let read =
            |path| std::fs::read_to_string(path).map_or("?".into(), |s| s.trim().to_string());
        let hint = match e.raw_os_error() {
            Some(libc::EPERM) => {
                " (without CAP_NET_ADMIN only net.ipv4.tcp_allowed_congestion_control may be used)"
            }
            Some(libc::ENOENT) => " (not available: load its module, e.g. modprobe tcp_NAME)",
            _ => "",
        };
        format!(
            "--tcp-congestion-control {name}: {e}{hint}; available: {}; allowed: {}",
            read(AVAILABLE),
            read(ALLOWED)
        )
    })
}

/// The algorithm new connections get when nothing is set: `net.ipv4.tcp_congestion_control`.
/// Reads /proc: not for a reactor thread.
pub fn system_default() -> Option<String> {
    std::fs::read_to_string(SYSTEM_DEFAULT)
        .ok()
        .map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use super::*;

    // reno is built into every Linux kernel and always allowed.
    #[test]
    fn a_set_algorithm_is_what_a_connected_socket_uses() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (accepted, _) = listener.accept().expect("accept");
        for socket in [&client, &accepted] {
            set(socket, "reno").expect("reno");
            assert_eq!(get(socket).expect("get"), "reno");
        }
    }

    #[test]
    fn unknown_or_malformed_names_are_refused_with_what_is_available() {
        let err = check("no-such-cc").expect_err("unknown");
        assert!(err.contains("available:") && err.contains("reno"), "{err}");
        assert!(check("").is_err());
        assert!(check("a-name-longer-than-fifteen").is_err());
        check("reno").expect("reno is always there");
    }
}
