//! The broker's Prometheus endpoint (a broker launched `with_metrics`): scraping and summing
//! samples.

use std::io::{Read, Write};
use std::net::TcpStream;

use super::Broker;
use super::wire::READ_WAIT_MAX;

/// The request `scrape` sends.
const SCRAPE_REQUEST: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";

impl Broker {
    /// Sends `request` as is to the metrics port and returns all the broker answered until it
    /// closed the connection.
    pub fn metrics_exchange(&self, request: &[u8]) -> String {
        let mut s = TcpStream::connect(self.metrics_addr()).expect("connect to metrics port");
        s.set_read_timeout(Some(READ_WAIT_MAX))
            .expect("set read timeout");
        s.set_write_timeout(Some(READ_WAIT_MAX))
            .expect("set write timeout");
        s.write_all(request).expect("send metrics request");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read metrics response");
        out
    }

    /// GET /metrics, which must answer 200: the body.
    pub fn scrape(&self) -> String {
        let out = self.metrics_exchange(SCRAPE_REQUEST);
        let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP head and body");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        body.to_string()
    }
}

/// Prometheus text -> (name{labels}, value) samples.
pub fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').expect("sample line");
            (name.to_string(), value.parse().expect("numeric value"))
        })
        .collect()
}

/// Sum of the samples of `family` whose labels contain every `label` ("api=\"Produce\"").
pub fn sum(samples: &[(String, f64)], family: &str, labels: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(n, _)| {
            n.split('{').next() == Some(family) && labels.iter().all(|l| n.contains(l))
        })
        .map(|(_, v)| v)
        .sum()
}
