//! Free ports for test brokers that never collide between the parallel tests of one process.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::{SocketAddr, TcpListener};
use std::sync::Mutex;

/// Ports are drawn below Linux's default ephemeral range (32768..60999), so client sockets of
/// parallel tests never sit on a port we are about to hand to a broker.
const PORT_RANGE_LOW: u16 = 20_000;
const PORT_RANGE_HIGH: u16 = 32_000;
const PORT_PICK_ATTEMPTS_MAX: usize = 200;

/// Port ranges (first port, length) handed out in this test process, so two brokers of parallel
/// tests never overlap even while a picked port is briefly unbound between the bind test and the
/// broker's own bind. Never released: a range stays its broker's across restarts.
static PORTS_TAKEN: Mutex<Vec<(u16, u16)>> = Mutex::new(Vec::new());

/// A first port P with P..P+count all free now and not handed out before in this process.
pub fn pick_consecutive_free(count: u16) -> u16 {
    let mut taken = PORTS_TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    for attempt in 0..PORT_PICK_ATTEMPTS_MAX {
        let base = random_port(attempt, count);
        let overlaps = taken
            .iter()
            .any(|&(t, t_count)| base < t + t_count && t < base + count);
        if overlaps {
            continue;
        }
        let all_free = (base..base + count)
            .all(|port| TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).is_ok());
        if all_free {
            taken.push((base, count));
            return base;
        }
    }
    panic!("found no {count} consecutive free ports in {PORT_RANGE_LOW}..{PORT_RANGE_HIGH}");
}

/// A port P in the test range with room for `count` ports from P; differs per attempt and per
/// process, so parallel test binaries (and other users of the machine) rarely pick alike.
fn random_port(attempt: usize, count: u16) -> u16 {
    let mut h = RandomState::new().build_hasher();
    h.write_usize(attempt);
    h.write_u32(std::process::id());
    let range = u64::from(PORT_RANGE_HIGH - PORT_RANGE_LOW - count);
    PORT_RANGE_LOW + u16::try_from(h.finish() % range).expect("port fits u16")
}
