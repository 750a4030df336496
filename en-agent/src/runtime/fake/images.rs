//! The fake engine's image listing and removal, as Docker does them: an image a container
//! uses (running or not) is refused with a conflict (Docker's 409), an image with tags of
//! several names removed by id too, an unknown one is not found (404); removing the last
//! name of an image deletes it and gives its bytes back to the disk.

use super::{fnv, FakeRuntime, State};
use crate::runtime::{ImageInfo, LocalImage, RuntimeError};

impl FakeRuntime {
    /// Adds an image that was not pulled through the agent (built or pulled by hand), of
    /// `size` bytes; a container added with [`FakeRuntime::add_foreign_container`] of the
    /// same reference uses it.
    pub fn add_local_image(&self, reference: &str, size: u64) -> String {
        let id = format!("sha256:{:064x}", fnv(reference));
        let mut s = self.lock();
        s.images.insert(
            reference.to_owned(),
            ImageInfo {
                id: id.clone(),
                repo_digests: Vec::new(),
            },
        );
        s.image_sizes.insert(id.clone(), size);
        id
    }

    /// Local image ids.
    pub fn image_ids(&self) -> Vec<String> {
        let s = self.lock();
        let mut ids: Vec<String> = s.images.values().map(|i| i.id.clone()).collect();
        ids.sort();
        ids.dedup();
        ids
    }

    pub(super) fn listed_images(s: &State) -> Vec<LocalImage> {
        let mut out: Vec<LocalImage> = Vec::new();
        for (reference, info) in &s.images {
            let i = match out.iter().position(|l| l.id == info.id) {
                Some(i) => i,
                None => {
                    out.push(LocalImage {
                        id: info.id.clone(),
                        size: s.image_sizes.get(&info.id).copied().unwrap_or(0),
                        ..LocalImage::default()
                    });
                    out.len() - 1
                }
            };
            if !reference.contains('@') {
                out[i].repo_tags.push(reference.clone());
            }
            for d in &info.repo_digests {
                if !out[i].repo_digests.contains(d) {
                    out[i].repo_digests.push(d.clone());
                }
            }
        }
        out
    }

    pub(super) fn delete_image(s: &mut State, reference: &str) -> Result<(), RuntimeError> {
        let by_name = s.images.get(reference).map(|i| i.id.clone());
        let id = match by_name.clone() {
            Some(id) => id,
            None if s.images.values().any(|i| i.id == reference) => reference.to_owned(),
            None => {
                return Err(RuntimeError::NotFound(format!(
                    "No such image: {reference}"
                )))
            }
        };
        let names: Vec<String> = s
            .images
            .iter()
            .filter(|(_, i)| i.id == id)
            .map(|(r, _)| r.clone())
            .collect();
        if by_name.is_some() && names.len() > 1 {
            // One name of several: untagged, the image stays.
            s.images.remove(reference);
            return Ok(());
        }
        let repos: std::collections::BTreeSet<&str> = names
            .iter()
            .map(|n| crate::runtime::image_repo(n))
            .collect();
        if repos.len() > 1 {
            return Err(RuntimeError::Conflict(format!(
                "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                short(&id)
            )));
        }
        if let Some(c) = s.containers.values().find(|c| c.info.image_id == id) {
            let how = if c.info.is_running() {
                "cannot be forced) - image is being used by running"
            } else {
                "must be forced) - image is being used by stopped"
            };
            return Err(RuntimeError::Conflict(format!(
                "conflict: unable to delete {} ({how} container {}",
                short(&id),
                short(&c.info.id)
            )));
        }
        s.images.retain(|_, i| i.id != id);
        let size = s.image_sizes.remove(&id).unwrap_or(0);
        if let Some(free) = s.free_disk.as_mut() {
            *free = free.saturating_add(size);
        }
        Ok(())
    }
}

fn short(id: &str) -> &str {
    let h = id.strip_prefix("sha256:").unwrap_or(id);
    &h[..h.len().min(12)]
}
