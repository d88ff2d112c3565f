//! hls-swarm as a library: the modules behind the `hls-swarm` binary (src/main.rs), public so
//! the fuzz targets in fuzz/ can drive the HTTP response decoder ([`http::decode_response`])
//! and the playlist parser ([`m3u8::parse`]) with arbitrary bytes.

pub mod config;
pub mod healthcheck;
pub mod http;
pub mod live;
pub mod m3u8;
pub mod metrics;
pub mod outputs;
/// The one table of the payloads' setting names and defaults (crates/payload-settings),
/// compiled in as a module rather than linked as a crate: the program's dependency list, and
/// with it the SBOM imgbuild writes into every image, stays the program's own.
#[allow(dead_code)]
#[path = "../../payload-settings/src/lib.rs"]
mod payload_settings;
pub mod report;
pub mod report_html;
pub mod resolve;
pub mod run;
pub mod schedule;
pub mod series;
pub mod summary;
pub mod tls;
mod tls_signatures;
pub mod viewer;
