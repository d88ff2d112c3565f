//! Connecting to a host name with several addresses. A replicated origin behind DNS round
//! robin (Docker Swarm `endpoint_mode: dnsrr`, a Kubernetes headless Service) answers with
//! every replica's address; the system resolver's order is not a spread (it may sort, or
//! cache one answer for the whole process). So each viewer resolves the name itself, sorts the
//! addresses and starts at address `key mod n` (its viewer number): N viewers spread evenly
//! over the replicas, and a viewer whose replica refuses tries the next one.

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpStream;

/// The addresses of `host:port`, sorted and without duplicates.
pub async fn addresses(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    addrs.sort();
    addrs.dedup();
    Ok(addrs)
}

/// The order in which a client with `key` tries `n` addresses.
pub fn order(n: usize, key: u64) -> impl Iterator<Item = usize> {
    let first = if n == 0 { 0 } else { (key % n as u64) as usize };
    (0..n).map(move |i| (first + i) % n)
}

/// Connect to `host:port`, first to the address `key` picks, then to the others in turn.
pub async fn connect(host: &str, port: u16, key: u64) -> io::Result<TcpStream> {
    let addrs = addresses(host, port).await?;
    let mut last = None;
    for i in order(addrs.len(), key) {
        match TcpStream::connect(addrs[i]).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{host} resolves to no address"),
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_spread_evenly_and_every_address_is_tried() {
        let mut first = [0u32; 3];
        for key in 0..300 {
            let o: Vec<usize> = order(3, key).collect();
            let mut sorted = o.clone();
            sorted.sort();
            assert_eq!(sorted, vec![0, 1, 2]);
            first[o[0]] += 1;
        }
        assert_eq!(first, [100, 100, 100]);
        assert_eq!(order(0, 5).count(), 0);
    }
}
