//! The only module that speaks hadris (3.0.0-rc.2, pinned): imgbuild's `Tree` converted to a
//! `hadris_fs::Tree`, the initramfs cpio, the ESP FAT image, the ISO9660 image, and reading
//! ISOs back. hadris has changed its API with every major version; when it does again, this
//! file is the one to change.

use std::io::Write;
use std::path::Path;

use hadris_fs::{Content, DateTime, DeviceNumber, FileType, Node, Owner, Permissions, SetAttr};
use hadris_iso::{
    AppendedPartition, BootEntry, BootInfo, ElTorito, Hybrid, IsoId, IsoLevel, IsoOptions,
};

use crate::tree::{self, Kind, Tree};

/// An error from hadris, with what imgbuild was doing.
#[derive(Debug, thiserror::Error)]
/// Shown as `what`; the cause follows in the error chain (`what: cause`), once.
#[error("{what}")]
pub struct HadrisError {
    pub what: String,
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

fn herr<E: std::error::Error + Send + Sync + 'static>(
    what: impl Into<String>,
) -> impl FnOnce(E) -> HadrisError {
    let what = what.into();
    move |e| HadrisError {
        what,
        source: Box::new(e),
    }
}

/// A time for every entry and descriptor: `SOURCE_DATE_EPOCH` seconds.
pub fn time(epoch: i64) -> Result<DateTime, HadrisError> {
    DateTime::from_unix_seconds(epoch).map_err(|e| HadrisError {
        what: format!("SOURCE_DATE_EPOCH={epoch}"),
        source: format!("{e:?}").into(),
    })
}

/// Converts the imgbuild tree; every entry gets `time` as its modification time. Host files
/// are measured again: one that changed size since it was added fails here, with its path.
pub fn convert(t: &Tree, time: DateTime) -> Result<hadris_fs::Tree, HadrisError> {
    let mut out = hadris_fs::Tree::new();
    for (path, e) in t.iter() {
        let shown = tree::display_path(path);
        let attrs = SetAttr::new()
            .with_permissions(Permissions::new(e.mode))
            .with_owner(Owner::new(e.uid, e.gid))
            .with_modified(time);
        let node = match &e.kind {
            Kind::Dir => Node::dir(),
            Kind::File(tree::Content::Bytes(b)) => Node::file(Content::bytes(b.to_vec())),
            Kind::File(tree::Content::Host {
                path: host, size, ..
            }) => {
                let host = &host.resolve(path);
                let c = hadris_fs::host::file(host)
                    .map_err(herr(format!("{shown}: reading {}", host.display())))?;
                if c.len() != *size {
                    return Err(HadrisError {
                        what: format!("{shown}: {}", host.display()),
                        source: format!(
                            "changed size while imgbuild ran ({} bytes, then {}); build again",
                            size,
                            c.len()
                        )
                        .into(),
                    });
                }
                Node::file(c)
            }
            Kind::Symlink(target) => Node::symlink(target),
            Kind::CharDevice { major, minor } => Node::special(
                FileType::CharDevice,
                Some(DeviceNumber::new(*major, *minor)),
            ),
            Kind::HardLink(target) => {
                out.link(target, path)
                    .map_err(herr(format!("{shown}: hard link")))?;
                continue;
            }
        };
        out.insert(path, node.with_attrs(attrs))
            .map_err(herr(shown))?;
    }
    Ok(out)
}

/// Writes `tree` as a newc cpio archive into `out` (an initramfs; compression is the
/// caller's encoder). Entries without a time get `time`.
pub fn write_cpio<W: Write>(out: W, t: &hadris_fs::Tree, time: DateTime) -> Result<W, HadrisError> {
    let options = hadris_cpio::CpioOptions::default()
        .with_format(hadris_cpio::Format::Newc)
        .with_time(time);
    let mut io = hadris_io::StdIo::new(out);
    let report = hadris_cpio::sync::write(&mut io, t, &options).map_err(herr("initramfs cpio"))?;
    for w in report.warnings() {
        tracing::info!("initramfs: {w}");
    }
    Ok(io.into_inner())
}

/// A FAT image (FAT12/16 by size) of `size` bytes holding `tree`, labelled `label`.
pub fn write_fat(
    t: &hadris_fs::Tree,
    size: u64,
    label: &str,
    time: DateTime,
    seed: u64,
) -> Result<Vec<u8>, HadrisError> {
    let options = hadris_fat::FatOptions::new()
        .with_size(size)
        .with_label(
            hadris_fat::VolumeLabel::new(label).map_err(|e| HadrisError {
                what: format!("FAT label {label:?}"),
                source: format!("{e:?}").into(),
            })?,
        )
        .with_time(time)
        .with_seed(seed);
    let block = hadris_storage::BlockSize::new(512).expect("512 is a block size");
    let mut dev = hadris_storage::MemDevice::new(vec![0u8; size as usize], block);
    let report = hadris_fat::sync::write(&mut dev, t, &options).map_err(herr("ESP FAT image"))?;
    for w in report.warnings() {
        tracing::info!("ESP: {w}");
    }
    Ok(dev.into_inner())
}

/// How to make the ISO bootable.
pub struct IsoBoot {
    /// Tree path of the BIOS no-emulation image (isolinux.bin): load size 4, boot-info-table.
    pub bios_image: String,
    /// Tree path of the visible boot catalog.
    pub catalog: String,
    /// isohybrid MBR boot code (isohdpfx.bin), at most 446 bytes used... 432 here.
    pub mbr_code: Vec<u8>,
    /// The ESP image, stored once as an appended partition (GPT ESP and El Torito UEFI entry).
    pub esp: Vec<u8>,
}

/// What the ISO writer needs besides the tree.
pub struct IsoSpec {
    pub volume_id: String,
    pub publisher: String,
    pub application: String,
    pub time: DateTime,
    pub seed: u64,
    pub boot: Option<IsoBoot>,
}

fn iso_options(spec: IsoSpec) -> IsoOptions {
    let mut o = IsoOptions::default()
        .with_id(IsoId::Volume, &spec.volume_id)
        .with_id(IsoId::Publisher, &spec.publisher)
        .with_id(IsoId::Application, &spec.application)
        .with_level(IsoLevel::L3)
        .with_rock_ridge()
        .with_joliet()
        .with_time(spec.time)
        .with_seed(spec.seed);
    if let Some(b) = spec.boot {
        o = o
            .with_el_torito(
                ElTorito::new()
                    .with_entry(
                        BootEntry::bios(&b.bios_image)
                            .with_load_size(4)
                            .with_boot_info(BootInfo::Table),
                    )
                    .with_entry(BootEntry::uefi_appended(0))
                    .with_catalog_path(&b.catalog),
            )
            .with_hybrid(
                Hybrid::gpt_hybrid_mbr()
                    .with_bootstrap(&b.mbr_code)
                    .with_appended(AppendedPartition::esp(Content::bytes(b.esp))),
            );
    }
    o
}

/// Writes the ISO to `file` (opened read-write, empty). Returns the size and warnings.
pub fn write_iso(
    file: std::fs::File,
    t: &hadris_fs::Tree,
    spec: IsoSpec,
) -> Result<(u64, Vec<String>), HadrisError> {
    let dev = hadris_storage::host::FileDevice::new(file).map_err(herr("opening the output"))?;
    let report =
        hadris_iso::sync::write(dev, t, &iso_options(spec)).map_err(herr("writing the ISO"))?;
    Ok((
        report.size(),
        report.warnings().iter().map(|w| w.to_string()).collect(),
    ))
}

// ---------------------------------------------------------------------------------------
// Reading ISOs back.

/// One El Torito catalog entry.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BootRecord {
    pub platform: String,
    pub emulation: String,
    pub bootable: bool,
    pub load_block: u32,
    pub sectors: u16,
    /// Where the image lies and how long it is, in bytes.
    pub offset: u64,
    pub len: u64,
}

/// One file of the ISO, from its most capable tree (Rock Ridge when present).
#[derive(Debug, Clone, serde::Serialize)]
pub struct IsoFile {
    pub path: String,
    pub kind: String,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// What `inspect` shows of an ISO.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IsoListing {
    pub volume_id: String,
    pub block_size: u32,
    pub blocks: u64,
    pub trees: Vec<String>,
    pub boot: Vec<BootRecord>,
    pub files: Vec<IsoFile>,
}

fn mount(
    path: &Path,
) -> Result<hadris_iso::sync::IsoFs<hadris_storage::host::FileDevice>, HadrisError> {
    let dev = hadris_storage::host::FileDevice::open(path)
        .map_err(herr(format!("{}: cannot open", path.display())))?;
    hadris_iso::sync::IsoFs::mount(dev, hadris_fs::MountOptions::new()).map_err(|e| HadrisError {
        what: format!("{}: not a readable ISO9660 image", path.display()),
        source: format!("{e}").into(),
    })
}

/// Reads the volume id, boot catalog and file list of an ISO.
pub fn read_iso(path: &Path) -> Result<IsoListing, HadrisError> {
    let mut iso = mount(path)?;
    let info = iso.info();
    let volume_id = String::from_utf8_lossy(info.id(IsoId::Volume))
        .trim_end()
        .to_string();
    let block_size = info.block_size();
    let blocks = info.volume_space_size() as u64;
    let trees = iso.namespaces().iter().map(|n| format!("{n:?}")).collect();
    let mut boot = Vec::new();
    let mut buf = [0u8; 2048];
    let shown = path.display().to_string();
    if let Some(cat) = iso
        .boot_catalog(&mut buf)
        .map_err(herr(format!("{shown}: boot catalog")))?
    {
        for e in cat.entries() {
            let img = iso.boot_image(&e);
            boot.push(BootRecord {
                platform: match e.platform() {
                    hadris_iso::Platform::X86 => "BIOS".into(),
                    hadris_iso::Platform::Efi => "UEFI".into(),
                    p => format!("{p:?}"),
                },
                emulation: match e.emulation() {
                    Some(hadris_iso::Emulation::NoEmulation) => "no-emulation".into(),
                    Some(x) => format!("{x:?}"),
                    None => "unknown".into(),
                },
                bootable: e.is_bootable(),
                load_block: e.load_block(),
                sectors: e.sector_count(),
                offset: img.offset(),
                len: img.len(),
            });
        }
    }
    let vol = hadris_fs::sync::Volume::new(iso);
    let t = hadris_fs::sync::read_tree(&vol, "/")
        .map_err(herr(format!("{shown}: reading the tree")))?;
    let mut files = Vec::new();
    fn walk(prefix: &str, e: hadris_fs::TreeEntry<'_>, files: &mut Vec<IsoFile>) {
        for (name, child) in e.children() {
            let path = format!("{prefix}/{}", String::from_utf8_lossy(name.as_bytes()));
            let n = child.node();
            let a = n.attrs();
            files.push(IsoFile {
                path: path.clone(),
                kind: match n.file_type() {
                    FileType::File => "file",
                    FileType::Dir => "dir",
                    FileType::Symlink => "symlink",
                    FileType::CharDevice => "char",
                    FileType::BlockDevice => "block",
                    FileType::Fifo => "fifo",
                    FileType::Socket => "socket",
                    _ => "other",
                }
                .into(),
                mode: a.permissions().map(|p| p.bits()),
                uid: a.owner().map(|o| o.uid()),
                gid: a.owner().map(|o| o.gid()),
                size: n.content().map_or(0, |c| c.len()),
                target: n.target().map(|t| String::from_utf8_lossy(t).into_owned()),
            });
            if n.file_type() == FileType::Dir {
                walk(&path, child, files);
            }
        }
    }
    walk("", t.root(), &mut files);
    Ok(IsoListing {
        volume_id,
        block_size,
        blocks,
        trees,
        boot,
        files,
    })
}

/// The bytes of one file of an ISO, or `None` when it has no such file.
pub fn read_iso_file(iso: &Path, path: &str) -> Result<Option<Vec<u8>>, HadrisError> {
    use std::io::Read;
    let vol = hadris_fs::sync::Volume::new(mount(iso)?);
    let mut f = match vol.open(path, hadris_fs::OpenOptions::new().read()) {
        Ok(f) => f,
        Err(_) => return Ok(None),
    };
    let mut out = Vec::new();
    f.read_to_end(&mut out)
        .map_err(herr(format!("{}: reading {path}", iso.display())))?;
    Ok(Some(out))
}

/// Writes a plain data ISO (no boot) of `t`, e.g. a NoCloud CIDATA seed.
pub fn write_data_iso(
    file: std::fs::File,
    t: &hadris_fs::Tree,
    volume_id: &str,
    time: DateTime,
) -> Result<u64, HadrisError> {
    let spec = IsoSpec {
        volume_id: volume_id.into(),
        publisher: String::new(),
        application: "IMGBUILD".into(),
        time,
        seed: 0,
        boot: None,
    };
    Ok(write_iso(file, t, spec)?.0)
}

/// Reads a host directory into a hadris tree (for `--cidata DIR`).
pub fn host_tree(dir: &Path) -> Result<hadris_fs::Tree, HadrisError> {
    let (t, skipped) = hadris_fs::host::read_tree(dir, &hadris_fs::host::TreeOptions::new())
        .map_err(herr(format!("{}: reading", dir.display())))?;
    for s in skipped {
        tracing::warn!("{}: skipped {s}", dir.display());
    }
    Ok(t)
}
