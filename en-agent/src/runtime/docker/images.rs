//! Docker image listing and removal (image garbage collection), kept out of `docker.rs`.

use super::{timed, Ctx, DockerRuntime};
use crate::runtime::{LocalImage, RuntimeError};
use bollard::query_parameters::{ListImagesOptionsBuilder, RemoveImageOptionsBuilder};

/// Docker reports unknown sizes as -1.
fn known(n: i64) -> Option<u64> {
    u64::try_from(n).ok()
}

impl DockerRuntime {
    /// `GET /images/json?shared-size=1`: every top-level image, dangling ones included.
    pub(super) async fn images(&self) -> Result<Vec<LocalImage>, RuntimeError> {
        let r = async {
            let d = self.client().await?;
            let opts = ListImagesOptionsBuilder::new().shared_size(true).build();
            let list = timed(Ctx::Other, d.list_images(Some(opts))).await?;
            Ok(list
                .into_iter()
                .map(|i| LocalImage {
                    id: i.id,
                    repo_tags: i
                        .repo_tags
                        .into_iter()
                        .filter(|t| t != "<none>:<none>")
                        .collect(),
                    repo_digests: i
                        .repo_digests
                        .into_iter()
                        .filter(|t| t != "<none>@<none>")
                        .collect(),
                    size: known(i.size).unwrap_or(0),
                    shared_size: known(i.shared_size),
                })
                .collect())
        }
        .await;
        self.check(r)
    }

    /// `DELETE /images/<reference>`, never forced, pruning untagged parents.
    pub(super) async fn delete_image(&self, reference: &str) -> Result<(), RuntimeError> {
        let r = async {
            let d = self.client().await?;
            let opts = RemoveImageOptionsBuilder::new()
                .force(false)
                .noprune(false)
                .build();
            timed(Ctx::Remove, d.remove_image(reference, Some(opts), None))
                .await
                .map(|_| ())
        }
        .await;
        self.check(r)
    }
}
