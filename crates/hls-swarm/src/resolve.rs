//! Connecting to a host name with several addresses. A replicated origin behind DNS round
//! robin (Docker Swarm `endpoint_mode: dnsrr`, a Kubernetes headless Service) answers with
//! every replica's address; the system resolver's order is not a spread (it may sort, or
//! cache one answer for the whole process). So each viewer resolves the name itself, sorts the
//! addresses and starts at address `key mod n` (its viewer number): N viewers spread evenly
//! over the replicas, and a viewer whose replica refuses tries the next one.
//!
//! Answers are shared by every viewer of the process for [`TTL`]: a thousand viewers
//! connecting within a second ask the resolver once, not a thousand times (Docker's embedded
//! DNS server times out under that many queries), and still see replicas come and go.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// How long one answer serves every viewer of the process.
pub const TTL: Duration = Duration::from_secs(2);

type Cache = Mutex<HashMap<(String, u16), (Instant, Vec<SocketAddr>)>>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The addresses of `host:port`, sorted and without duplicates; one lookup per [`TTL`] for
/// the whole process (the lock is held during a lookup, so concurrent callers wait for its
/// answer instead of asking again). Failures are not cached.
pub async fn addresses(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let key = (host.to_string(), port);
    let mut c = cache().lock().await;
    if let Some((at, addrs)) = c.get(&key) {
        if at.elapsed() < TTL {
            return Ok(addrs.clone());
        }
    }
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
    addrs.sort();
    addrs.dedup();
    c.insert(key, (Instant::now(), addrs.clone()));
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
