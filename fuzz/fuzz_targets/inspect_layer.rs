//! `inspect --verify` on a well-formed image whose one layer is the fuzz input: every digest,
//! size and diff_id is right, so the layer tar checker (headers, PAX/GNU records, sizes,
//! escaping names) sees arbitrary bytes. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

fn sha(b: &[u8]) -> String {
    format!(
        "sha256:{}",
        Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    )
}

fn file(out: &mut Vec<u8>, name: &str, data: &[u8]) {
    use imgbuild::oci::tar::{header_bytes, padding, EntryType, Header};
    header_bytes(
        &Header {
            name: name.as_bytes(),
            link: b"",
            kind: EntryType::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: data.len() as u64,
            mtime: 1,
            dev: (0, 0),
        },
        out,
    );
    out.extend_from_slice(data);
    out.resize(out.len() + padding(data.len() as u64), 0);
}

fuzz_target!(|layer: &[u8]| {
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha(layer)]},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "config": {"digest": sha(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha(layer), "size": layer.len()}],
    }))
    .unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"digest": sha(&manifest), "size": manifest.len()}],
    }))
    .unwrap();
    let blob = |d: &str| format!("blobs/sha256/{}", &d[7..]);
    let mut out = Vec::new();
    file(&mut out, "index.json", &index);
    file(&mut out, &blob(&sha(&manifest)), &manifest);
    file(&mut out, &blob(&sha(&config)), &config);
    file(&mut out, &blob(&sha(layer)), layer);
    out.extend_from_slice(&[0u8; 1024]);
    let path = std::env::temp_dir().join(format!("imgbuild-fuzz-layer-{}", std::process::id()));
    std::fs::write(&path, &out).unwrap();
    let _ = imgbuild::inspect::verify_file(&path);
});
