//! Kernel modules, loaded with finit_module in the order imgbuild resolved.

use crate::say::say;
use std::path::{Path, PathBuf};

/// finit_module flag: the file is compressed (kernel ≥ 6.2 with CONFIG_MODULE_DECOMPRESS).
const MODULE_INIT_COMPRESSED_FILE: libc::c_int = 4;

/// One module to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Module name as the kernel knows it (`virtio_net`).
    pub name: String,
    /// Absolute path of the `.ko` file.
    pub path: PathBuf,
    pub compressed: bool,
}

/// Turn the config's list (paths relative to `/`, or absolute) into modules: the name is
/// the file name without `.ko[.xz|.zst|.gz]`, with `-` read as `_` like the kernel does;
/// a module listed twice is loaded once, at its first position.
pub fn plan(list: &[String]) -> Vec<Module> {
    let mut out: Vec<Module> = Vec::new();
    for entry in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        let path = Path::new("/").join(entry.trim_start_matches('/'));
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (stem, compressed) = match file.split_once(".ko") {
            Some((stem, rest)) => (stem.to_string(), !rest.is_empty()),
            None => (file.clone(), false),
        };
        let name = stem.replace('-', "_");
        if out.iter().any(|m| m.name == name) {
            continue;
        }
        out.push(Module {
            name,
            path,
            compressed,
        });
    }
    out
}

/// Outcome of one load, for the console line.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Loaded,
    AlreadyLoaded,
    Failed(String),
}

pub fn describe(err: nix::Error) -> Outcome {
    match err {
        nix::Error::EEXIST => Outcome::AlreadyLoaded,
        nix::Error::ENOENT => Outcome::Failed("file not found".into()),
        nix::Error::ENOEXEC => Outcome::Failed("not a valid module for this kernel".into()),
        nix::Error::EPERM => Outcome::Failed("not permitted (needs CAP_SYS_MODULE)".into()),
        nix::Error::ENOKEY | nix::Error::EKEYREJECTED => {
            Outcome::Failed("signature rejected".into())
        }
        e => Outcome::Failed(e.desc().to_string()),
    }
}

fn load_one(m: &Module) -> Outcome {
    use nix::kmod::{finit_module, ModuleInitFlags};
    let file = match std::fs::File::open(&m.path) {
        Ok(f) => f,
        Err(e) => return Outcome::Failed(format!("cannot open: {e}")),
    };
    let flags = if m.compressed {
        ModuleInitFlags::from_bits_retain(MODULE_INIT_COMPRESSED_FILE as _)
    } else {
        ModuleInitFlags::empty()
    };
    match finit_module(&file, c"", flags) {
        Ok(()) => Outcome::Loaded,
        Err(e) => describe(e),
    }
}

/// Load every module in order, printing one line each; failures do not stop the rest.
/// Returns how many are loaded (newly or already).
/// The entries of `list` whose module name is one of `names` (canonical, `_` for `-`), in
/// `list`'s order (which is the load order).
pub fn only(list: &[String], names: &[String]) -> Vec<String> {
    list.iter()
        .filter(|entry| {
            plan(std::slice::from_ref(*entry))
                .first()
                .is_some_and(|m| names.contains(&m.name))
        })
        .cloned()
        .collect()
}

pub fn load_all(list: &[String]) -> usize {
    let mut ok = 0;
    for m in plan(list) {
        match load_one(&m) {
            Outcome::Loaded => {
                ok += 1;
                say!("module {} loaded", m.name)
            }
            Outcome::AlreadyLoaded => {
                ok += 1;
                say!("module {} already loaded", m.name)
            }
            Outcome::Failed(why) => {
                say!("module {} NOT loaded ({}): {why}", m.name, m.path.display())
            }
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keeps_the_named_modules_in_load_order() {
        let list = vec![
            "lib/modules/k/kernel/drivers/virtio/virtio_ring.ko".to_string(),
            "lib/modules/k/kernel/drivers/scsi/scsi_mod.ko".to_string(),
            "lib/modules/k/kernel/drivers/virtio/virtio-pci.ko".to_string(),
            "lib/modules/k/kernel/fs/isofs/isofs.ko".to_string(),
        ];
        let names = vec!["virtio_pci".to_string(), "virtio_ring".to_string()];
        assert_eq!(only(&list, &names), vec![list[0].clone(), list[2].clone()]);
        assert!(only(&list, &[]).is_empty());
    }

    #[test]
    fn names_paths_and_duplicates() {
        let list = vec![
            "lib/modules/6.1.0-x-cloud-amd64/kernel/drivers/net/net_failover.ko".to_string(),
            "/lib/modules/6.1.0-x-cloud-amd64/kernel/drivers/virtio/virtio-pci.ko.xz".to_string(),
            " ".to_string(),
            "lib/modules/6.1.0-x-cloud-amd64/kernel/drivers/net/virtio_net.ko".to_string(),
            "lib/modules/other/virtio_net.ko".to_string(),
        ];
        let p = plan(&list);
        assert_eq!(
            p.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            vec!["net_failover", "virtio_pci", "virtio_net"]
        );
        assert_eq!(
            p[0].path,
            PathBuf::from("/lib/modules/6.1.0-x-cloud-amd64/kernel/drivers/net/net_failover.ko")
        );
        assert!(!p[0].compressed);
        assert!(p[1].compressed);
        assert_eq!(
            p[1].path,
            PathBuf::from(
                "/lib/modules/6.1.0-x-cloud-amd64/kernel/drivers/virtio/virtio-pci.ko.xz"
            )
        );
    }

    #[test]
    fn errors_are_classified() {
        assert_eq!(describe(nix::Error::EEXIST), Outcome::AlreadyLoaded);
        assert!(matches!(describe(nix::Error::ENOEXEC), Outcome::Failed(_)));
    }

    #[test]
    fn a_missing_file_is_reported_not_fatal() {
        let n = load_all(&["nonexistent/dir/nothing.ko".to_string()]);
        assert_eq!(n, 0);
    }
}
