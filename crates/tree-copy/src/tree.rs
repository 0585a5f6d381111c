use std::fs::{self, Metadata};
use std::path::{Path, PathBuf};

use crate::TreeError;

/// One folder or regular file, by its path relative to the tree's root.
#[derive(Debug, Clone)]
pub struct TreeEntry {
    pub relative: PathBuf,
    pub metadata: Metadata,
}

#[derive(Debug, Default)]
pub struct Tree {
    /// Parents before children.
    pub dirs: Vec<TreeEntry>,
    pub files: Vec<TreeEntry>,
}

impl Tree {
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.metadata.len()).sum()
    }
}

/// Walks `root` without following links; anything but folders and regular files is refused,
/// because a copy that silently skipped it would not be the store.
pub fn list_tree(root: &Path) -> Result<Tree, TreeError> {
    let mut tree = Tree::default();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let dir = root.join(&relative);
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .map_err(TreeError::io("cannot list", &dir))?
            .collect::<Result<_, _>>()
            .map_err(TreeError::io("cannot list", &dir))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let metadata =
                fs::symlink_metadata(&path).map_err(TreeError::io("cannot stat", &path))?;
            let child = relative.join(entry.file_name());
            if metadata.is_dir() {
                tree.dirs.push(TreeEntry {
                    relative: child.clone(),
                    metadata,
                });
                pending.push(child);
            } else if metadata.is_file() {
                tree.files.push(TreeEntry {
                    relative: child,
                    metadata,
                });
            } else {
                return Err(TreeError::Unsupported(path));
            }
        }
    }
    tree.dirs.sort_by(|a, b| a.relative.cmp(&b.relative));
    tree.files.sort_by(|a, b| a.relative.cmp(&b.relative));
    Ok(tree)
}
