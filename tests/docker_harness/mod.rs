//! What the tests that deploy a stack on the real Docker Engine share: removing a test
//! stack (its project's containers and networks, and its API image repository) in a
//! Drop guard, and a bounded client loop that counts failed requests during a reload.
#![allow(dead_code)]

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Removes every container and network of `project` and every image of `api_repo`;
/// errors are ignored (it runs in Drop, after a failure too).
pub fn remove_stack(project: &str, api_repo: &str) {
    let (project, repo) = (project.to_string(), api_repo.to_string());
    runtime().block_on(async move {
        let Ok(docker) = elior::docker::connect().await else {
            return;
        };
        let _ = elior::docker::apply::remove_stack(&docker, &project).await;
        let images = docker
            .list_images(Some(bollard::query_parameters::ListImagesOptions {
                filters: Some([("reference".to_string(), vec![repo])].into()),
                ..Default::default()
            }))
            .await
            .unwrap_or_default();
        for tag in images.into_iter().flat_map(|i| i.repo_tags) {
            let options = bollard::query_parameters::RemoveImageOptions {
                force: true,
                noprune: false,
            };
            let _ = docker.remove_image(&tag, Some(options), None).await;
        }
    });
}

/// Runs `request` (one new connection each) every 10 ms until stopped, at most 60,000
/// times (about 10 minutes); counts the successes and keeps every failure.
pub struct ClientLoop {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(usize, Vec<String>)>,
}

impl ClientLoop {
    pub fn start<F, Fut>(request: F) -> ClientLoop
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>>,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            runtime().block_on(async move {
                let (mut ok, mut failures) = (0, Vec::new());
                for _ in 0..60_000 {
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    match request().await {
                        Ok(()) => ok += 1,
                        Err(e) => failures.push(e),
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                (ok, failures)
            })
        });
        ClientLoop { stop, handle }
    }

    pub fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}
