//! The base of every image as `Tree` entries: the profile's layer groups (rootfs files,
//! empty directories, symlinks) plus the system files generated from the profile
//! (passwd, group, a locked shadow, os-release version). Closure and payload are added by
//! their own stages; this one knows only profiles/, layers/ and rootfs/.

use crate::layers;
use crate::profile::{Profile, ProfileError};
use crate::root::Root;
use crate::tree::{Content, Entry, Group, Tree, TreeError};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error(transparent)]
    Root(#[from] crate::root::RootError),
    #[error("{0}: cannot read: {1}")]
    Read(String, std::io::Error),
}

/// Every rootfs error but a failed read is the user's input: a profile, a tree or a root
/// directory that is wrong. (A forwarded ProfileError is transparent: not its own cause.)
impl crate::error::Classify for RootfsError {
    fn exit_class(&self) -> crate::error::ExitClass {
        match self {
            RootfsError::Read(..) => crate::error::ExitClass::Failure,
            _ => crate::error::ExitClass::BadInput,
        }
    }
}

/// The generated account files for the profile's non-root user.
pub fn account_files(p: &Profile) -> [(&'static str, String, u32); 3] {
    let u = &p.image.user;
    let passwd = format!(
        "root:x:0:0:root:/root:/sbin/nologin\n{}:x:{}:{}:{}:/var/empty:/sbin/nologin\nnobody:x:65534:65534:nobody:/var/empty:/sbin/nologin\n",
        u.name, u.uid, u.gid, u.name
    );
    let group = format!("root:x:0:\n{}:x:{}:\nnogroup:x:65534:\n", u.name, u.gid);
    // `!` in the password field: every account is locked; nobody logs in.
    let shadow = format!("root:!:1::::::\n{}:!:1::::::\nnobody:!:1::::::\n", u.name);
    [
        ("etc/passwd", passwd, 0o644),
        ("etc/group", group, 0o644),
        ("etc/shadow", shadow, 0o600),
    ]
}

/// Builds the base tree of a profile's image.
pub fn base_tree(root: &Root, p: &Profile, version: &str) -> Result<Tree, RootfsError> {
    let mut tree = Tree::new();
    for name in &p.image.layers {
        let group = layers::load(root, name)?;
        for c in &group.doc.copy {
            let from = c.from.get_ref().trim_end_matches('/');
            let files = root.files_under(from)?;
            let single = files.is_empty();
            let list = if single {
                // A single file.
                vec![crate::root::RootFile {
                    rel: from.to_string(),
                    mode: 0o644,
                    host: root.dir().map(|d| d.join(from)),
                }]
            } else {
                files
            };
            for f in list {
                let sub = if single {
                    from.rsplit('/').next().unwrap_or(from).to_string()
                } else {
                    f.rel[from.len() + 1..].to_string()
                };
                let dest = format!("{}/{}", c.to.trim_end_matches('/'), sub);
                let content = match &f.host {
                    Some(h) => crate::tree::host_content(h)
                        .map_err(|e| RootfsError::Read(h.display().to_string(), e))?,
                    None => Content::bytes(root.read(&f.rel)?),
                };
                let mode = if f.mode & 0o111 != 0 { 0o755 } else { 0o644 };
                tree.insert(dest, Entry::file(content, mode, Group::Base))?;
            }
        }
        for d in &group.doc.dir {
            let mode = u32::from_str_radix(d.mode.get_ref(), 8).expect("checked by layers::load");
            tree.insert(&d.path, Entry::dir(mode, Group::Base).owned(d.uid, d.gid))?;
        }
        for s in &group.doc.symlink {
            tree.insert(&s.path, Entry::symlink(s.target.as_bytes(), Group::Base))?;
        }
    }
    for (path, text, mode) in account_files(p) {
        tree.replace(path, Entry::file(Content::bytes(text), mode, Group::Base))?;
    }
    // os-release gets the version of this build.
    let mut os = match tree.get("etc/os-release").map(|e| e.kind.clone()) {
        Some(crate::tree::Kind::File(Content::Bytes(b))) => {
            String::from_utf8_lossy(&b).into_owned()
        }
        _ => String::new(),
    };
    os.push_str(&format!(
        "VERSION_ID={version}\nVARIANT_ID={}\n",
        p.id().replace('/', "-")
    ));
    tree.replace(
        "etc/os-release",
        Entry::file(Content::bytes(os), 0o644, Group::Base),
    )?;
    Ok(tree)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{load, Kind};

    #[test]
    fn base_tree_has_skeleton_and_locked_accounts() {
        let root = Root::Embedded;
        let p = load(&root, Kind::Origin, "default").unwrap();
        let t = base_tree(&root, &p, "0.1.0").unwrap();
        assert_eq!(t.get("tmp").unwrap().mode, 0o1777);
        assert!(t.get("etc/nsswitch.conf").is_some());
        let shadow = t.get("etc/shadow").unwrap();
        assert_eq!(shadow.mode, 0o600);
        let crate::tree::Kind::File(Content::Bytes(b)) = &shadow.kind else {
            panic!()
        };
        assert!(String::from_utf8_lossy(b)
            .lines()
            .all(|l| l.split(':').nth(1) == Some("!")));
        let crate::tree::Kind::File(Content::Bytes(pw)) = &t.get("etc/passwd").unwrap().kind else {
            panic!()
        };
        assert!(String::from_utf8_lossy(pw).contains("hls:x:1000:1000"));
    }
}
