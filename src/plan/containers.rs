//! What containers and networks a stack should have, compared with what the engine has:
//! each resource is created, replaced (with the reason) or kept. Pure: no I/O, no async.
//! `docker::apply` carries the plan out and `deploy --dry-run` prints it.
//!
//! A container's identity is a hash over everything it is created from, split by aspect
//! (image, command, environment, ...), stored on the container as labels, so the plan can
//! say *what* changed without asking the engine to diff anything.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// The API service: replaced blue/green beside the old one, behind nginx.
pub const API_SERVICE: &str = "api";
/// The proxy service: recreated only when its own container changes, else reloaded.
pub const PROXY_SERVICE: &str = "nginx";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortSpec {
    /// Empty for all interfaces.
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthSpec {
    pub test: Vec<String>,
    pub interval_ns: Option<i64>,
    pub timeout_ns: Option<i64>,
    pub retries: i64,
    pub start_period_ns: Option<i64>,
}

/// One service's container, as the compose file describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerSpec {
    pub service: String,
    pub image: String,
    /// The image's ID (filled in by the caller after looking the image up), so a retagged
    /// image counts as a change even when its name did not move.
    pub image_id: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub user: Option<String>,
    pub read_only: bool,
    pub security_opt: Vec<String>,
    pub cap_drop: Vec<String>,
    /// `HOST:CONTAINER[:ro]` with absolute host paths.
    pub binds: Vec<String>,
    pub ports: Vec<PortSpec>,
    /// Compose network names (not yet prefixed with the project).
    pub networks: Vec<String>,
    pub healthcheck: Option<HealthSpec>,
    pub restart: Option<String>,
    pub log_driver: Option<String>,
    pub log_options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub sysctls: BTreeMap<String, String>,
    pub depends_on_healthy: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkSpec {
    pub name: String,
    pub internal: bool,
    pub labels: BTreeMap<String, String>,
}

fn short_hash(value: &impl Serialize) -> String {
    let json = serde_json::to_vec(value).expect("specs serialise");
    hex::encode(Sha256::digest(json))[..8].to_string()
}

impl ContainerSpec {
    /// Hashes of each aspect, in a fixed order: `image=…,command=…,…`.
    pub fn config_parts(&self) -> String {
        let parts: [(&str, String); 7] = [
            ("image", short_hash(&(&self.image, &self.image_id))),
            ("command", short_hash(&self.command)),
            ("environment", short_hash(&self.env)),
            ("mounts", short_hash(&self.binds)),
            ("ports", short_hash(&self.ports)),
            ("networks", short_hash(&self.networks)),
            (
                "settings",
                short_hash(&(
                    &self.user,
                    self.read_only,
                    &self.security_opt,
                    &self.cap_drop,
                    &self.healthcheck,
                    &self.restart,
                    (&self.log_driver, &self.log_options),
                    &self.labels,
                    &self.sysctls,
                )),
            ),
        ];
        parts
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The hash of all parts: equal hash, same container.
    pub fn config_hash(&self) -> String {
        short_hash(&self.config_parts())
    }

    /// The container's name: the API's carries its hash, so a new one can run beside the
    /// old one during an update.
    pub fn container_name(&self, project: &str) -> String {
        if self.service == API_SERVICE {
            format!("{project}-{}-{}", self.service, self.config_hash())
        } else {
            format!("{project}-{}", self.service)
        }
    }
}

/// The full engine name of a compose network.
pub fn network_name(project: &str, network: &str) -> String {
    format!("{project}-{network}")
}

/// A container of the stack as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedContainer {
    pub name: String,
    pub service: String,
    pub config_hash: String,
    pub config_parts: String,
    /// `running`, `exited`, `restarting`, ...
    pub state: String,
    /// `healthy`, `unhealthy`, `starting`, or empty without a healthcheck.
    pub health: String,
    /// The exit code of its last run (137 after a kill), when it is not running.
    pub exit_code: i64,
    /// Deployed by an earlier release from this directory, without the stack id labels:
    /// never kept, replaced by a labelled one (adoption, issue 14).
    pub legacy: bool,
}

impl ObservedContainer {
    /// Why a container of the wanted configuration cannot stay: it is not running, or
    /// Docker's healthcheck fails. `None` when it is alive (healthy, or still starting).
    pub fn liveness_problem(&self) -> Option<String> {
        match self.state.as_str() {
            "running" if self.health == "unhealthy" => Some("container unhealthy".to_string()),
            "running" => None,
            "" => Some("container state unknown".to_string()),
            "created" => Some("container created but never started".to_string()),
            state => Some(format!("container {state} ({})", self.exit_code)),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Observed {
    pub containers: Vec<ObservedContainer>,
    /// Engine names of the stack's networks.
    pub networks: Vec<String>,
    /// True when nginx.conf on disk is not what this deploy renders.
    pub proxy_config_differs: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Change {
    Create { reason: String },
    Replace { old: String, reason: String },
    Keep,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceStep {
    pub service: String,
    /// The container that will serve after this deploy.
    pub container: String,
    pub change: Change,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkStep {
    pub network: String,
    pub create: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removal {
    pub container: String,
    pub service: String,
    pub reason: String,
}

/// What a deploy will do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub networks: Vec<NetworkStep>,
    /// In start order: what others depend on comes first.
    pub services: Vec<ServiceStep>,
    /// Why nginx reloads its configuration, when it keeps running but must.
    pub reload_proxy: Option<String>,
    /// Containers of the stack that no service wants any more.
    pub remove: Vec<Removal>,
}

impl Plan {
    /// Nothing to do: the stack is up to date.
    pub fn is_noop(&self) -> bool {
        self.networks.iter().all(|n| !n.create)
            && self.services.iter().all(|s| s.change == Change::Keep)
            && self.reload_proxy.is_none()
            && self.remove.is_empty()
    }

    /// One line per resource, for `--dry-run` and progress.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for n in &self.networks {
            let what = if n.create { "create" } else { "keep" };
            let _ = writeln!(out, "network {}: {what}", n.network);
        }
        for s in &self.services {
            let _ = match &s.change {
                Change::Create { reason } => {
                    writeln!(out, "{}: create {} ({reason})", s.service, s.container)
                }
                Change::Replace { old, reason } => writeln!(
                    out,
                    "{}: replace {old} with {} ({reason})",
                    s.service, s.container
                ),
                Change::Keep => writeln!(out, "{}: keep {}", s.service, s.container),
            };
        }
        if let Some(reason) = &self.reload_proxy {
            let _ = writeln!(out, "{PROXY_SERVICE}: reload ({reason})");
        }
        for r in &self.remove {
            let _ = writeln!(out, "remove {} ({})", r.container, r.reason);
        }
        out
    }
}

/// Names the aspects whose hashes differ between two `config_parts` strings.
pub fn changed_aspects(old: &str, new: &str) -> Vec<String> {
    let old: BTreeMap<&str, &str> = old.split(',').filter_map(|p| p.split_once('=')).collect();
    new.split(',')
        .filter_map(|p| p.split_once('='))
        .filter(|(k, v)| old.get(k) != Some(v))
        .map(|(k, _)| k.to_string())
        .collect()
}

/// Orders services so that each comes after the ones it waits for.
fn start_order(specs: &[ContainerSpec]) -> Vec<&ContainerSpec> {
    let mut ordered: Vec<&ContainerSpec> = Vec::new();
    while ordered.len() < specs.len() {
        let before = ordered.len();
        for spec in specs {
            let placed = ordered.iter().any(|o| o.service == spec.service);
            let ready = spec.depends_on_healthy.iter().all(|d| {
                ordered.iter().any(|o| &o.service == d) || !specs.iter().any(|s| &s.service == d)
            });
            if !placed && ready {
                ordered.push(spec);
            }
        }
        if ordered.len() == before {
            // A cycle: keep file order for the rest; compose would refuse it too.
            for spec in specs {
                if !ordered.iter().any(|o| o.service == spec.service) {
                    ordered.push(spec);
                }
            }
        }
    }
    ordered
}

/// Compares the desired stack with the observed one.
pub fn plan(
    project: &str,
    networks: &[NetworkSpec],
    specs: &[ContainerSpec],
    observed: &Observed,
) -> Plan {
    let network_steps = networks
        .iter()
        .map(|n| {
            let network = network_name(project, &n.name);
            NetworkStep {
                create: !observed.networks.contains(&network),
                network,
            }
        })
        .collect();

    let mut services = Vec::new();
    let mut used: Vec<&str> = Vec::new();
    let mut api_replaced = false;
    for spec in start_order(specs) {
        let name = spec.container_name(project);
        let hash = spec.config_hash();
        let parts = spec.config_parts();
        let of_service: Vec<&ObservedContainer> = observed
            .containers
            .iter()
            .filter(|c| c.service == spec.service)
            .collect();
        let healthy_match = of_service.iter().find(|c| {
            c.config_hash == hash && !c.legacy && c.liveness_problem().is_none() && c.name == name
        });
        let change = if let Some(current) = healthy_match {
            used.push(&current.name);
            Change::Keep
        } else if let Some(old) = of_service
            .iter()
            // After an interrupted swap two run: the one that serves is the healthy one.
            .find(|c| c.state == "running" && c.health == "healthy")
            .or_else(|| of_service.iter().find(|c| c.state == "running"))
            .or(of_service.first())
        {
            used.push(&old.name);
            let reason = if old.legacy {
                "adopting the container of an earlier release: it lacks the stack id".to_string()
            } else if let Some(problem) = old.liveness_problem().filter(|_| old.config_hash == hash)
            {
                problem
            } else if old.config_hash == hash {
                "renamed".to_string()
            } else {
                let aspects = changed_aspects(&old.config_parts, &parts);
                if aspects.is_empty() {
                    "configuration changed".to_string()
                } else {
                    format!("{} changed", aspects.join(", "))
                }
            };
            Change::Replace {
                old: old.name.clone(),
                reason,
            }
        } else {
            Change::Create {
                reason: "absent".to_string(),
            }
        };
        if spec.service == API_SERVICE && change != Change::Keep {
            api_replaced = true;
        }
        services.push(ServiceStep {
            service: spec.service.clone(),
            container: name,
            change,
        });
    }

    let proxy_kept = services
        .iter()
        .any(|s| s.service == PROXY_SERVICE && s.change == Change::Keep);
    let reload_proxy = if !proxy_kept {
        None
    } else if api_replaced {
        Some("switch to the new api container".to_string())
    } else if observed.proxy_config_differs {
        Some("nginx.conf changed".to_string())
    } else {
        None
    };

    let remove = observed
        .containers
        .iter()
        .filter(|c| !used.contains(&c.name.as_str()))
        .map(|c| Removal {
            container: c.name.clone(),
            service: c.service.clone(),
            reason: if specs.iter().any(|s| s.service == c.service) {
                format!("a leftover {} container ({})", c.service, c.state)
            } else {
                format!("service {} is no longer in the compose file", c.service)
            },
        })
        .collect();

    Plan {
        networks: network_steps,
        services,
        reload_proxy,
        remove,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(service: &str, image: &str) -> ContainerSpec {
        ContainerSpec {
            service: service.into(),
            image: image.into(),
            image_id: format!("sha256:{image}"),
            command: vec![],
            env: BTreeMap::from([("LOG_LEVEL".into(), "info".into())]),
            user: None,
            read_only: false,
            security_opt: vec![],
            cap_drop: vec![],
            binds: vec![],
            ports: vec![],
            networks: vec!["internal".into()],
            healthcheck: None,
            restart: None,
            log_driver: None,
            log_options: BTreeMap::new(),
            labels: BTreeMap::new(),
            sysctls: BTreeMap::new(),
            depends_on_healthy: if service == PROXY_SERVICE {
                vec![API_SERVICE.into()]
            } else {
                vec![]
            },
        }
    }

    fn observe(spec: &ContainerSpec, state: &str, health: &str) -> ObservedContainer {
        ObservedContainer {
            name: spec.container_name("p"),
            service: spec.service.clone(),
            config_hash: spec.config_hash(),
            config_parts: spec.config_parts(),
            state: state.into(),
            health: health.into(),
            exit_code: if state == "exited" { 137 } else { 0 },
            legacy: false,
        }
    }

    fn nets() -> Vec<NetworkSpec> {
        vec![NetworkSpec {
            name: "internal".into(),
            internal: true,
            labels: BTreeMap::new(),
        }]
    }

    #[test]
    fn an_empty_host_gets_everything_created_with_the_api_first() {
        let specs = [spec("nginx", "nginx:1"), spec("api", "api:1")];
        let plan = plan("p", &nets(), &specs, &Observed::default());
        let api = specs[1].container_name("p");
        assert_eq!(
            plan.render(),
            format!("network p-internal: create\napi: create {api} (absent)\nnginx: create p-nginx (absent)\n")
        );
        assert!(!plan.is_noop());
    }

    #[test]
    fn an_unchanged_stack_is_a_noop() {
        let specs = [spec("api", "api:1"), spec("nginx", "nginx:1")];
        let observed = Observed {
            containers: vec![
                observe(&specs[0], "running", "healthy"),
                observe(&specs[1], "running", ""),
            ],
            networks: vec!["p-internal".into()],
            proxy_config_differs: false,
        };
        let plan = plan("p", &nets(), &specs, &observed);
        assert!(plan.is_noop(), "{}", plan.render());
        let api = specs[0].container_name("p");
        assert_eq!(
            plan.render(),
            format!("network p-internal: keep\napi: keep {api}\nnginx: keep p-nginx\n")
        );
    }

    #[test]
    fn a_changed_environment_replaces_the_api_and_reloads_nginx() {
        let old = spec("api", "api:1");
        let mut new = old.clone();
        new.env.insert("LOG_LEVEL".into(), "debug".into());
        let proxy = spec("nginx", "nginx:1");
        let observed = Observed {
            containers: vec![
                observe(&old, "running", "healthy"),
                observe(&proxy, "running", ""),
            ],
            networks: vec!["p-internal".into()],
            proxy_config_differs: false,
        };
        let plan = plan("p", &nets(), &[new.clone(), proxy], &observed);
        assert_eq!(
            plan.render(),
            format!(
                "network p-internal: keep\napi: replace {} with {} (environment changed)\nnginx: keep p-nginx\nnginx: reload (switch to the new api container)\n",
                old.container_name("p"),
                new.container_name("p")
            )
        );
    }

    #[test]
    fn an_exited_container_is_replaced_and_leftovers_are_removed() {
        let proxy = spec("nginx", "nginx:1");
        let mut stale = observe(&spec("api", "api:0"), "exited", "");
        stale.name = "p-api-old".into();
        let observed = Observed {
            containers: vec![
                observe(&proxy, "exited", ""),
                stale,
                observe(&spec("worker", "w"), "running", ""),
            ],
            networks: vec![],
            proxy_config_differs: true,
        };
        let plan = plan("p", &[], &[spec("api", "api:1"), proxy.clone()], &observed);
        let text = plan.render();
        assert!(
            text.contains("nginx: replace p-nginx with p-nginx (container exited (137))\n"),
            "{text}"
        );
        assert!(text.contains("api: replace p-api-old with"), "{text}");
        assert!(text.contains("(image changed)"), "{text}");
        assert!(
            text.ends_with("remove p-worker (service worker is no longer in the compose file)\n"),
            "{text}"
        );
        assert!(!text.contains("reload"), "{text}");
    }

    fn running_stack() -> (ContainerSpec, ContainerSpec, Observed) {
        let (api, proxy) = (spec("api", "api:1"), spec("nginx", "nginx:1"));
        let observed = Observed {
            containers: vec![
                observe(&api, "running", "healthy"),
                observe(&proxy, "running", ""),
            ],
            networks: vec!["p-internal".into()],
            proxy_config_differs: false,
        };
        (api, proxy, observed)
    }

    // An update killed mid-swap leaves two API containers of older builds, or the old one
    // beside a current one that never passed the health gate.
    #[test]
    fn after_an_interrupted_swap_the_healthy_api_is_the_one_replaced_and_the_other_goes() {
        let (_, proxy, mut observed) = running_stack();
        let mut starting = observe(&spec("api", "api:2"), "running", "starting");
        starting.name = "p-api-starting".into();
        let mut serving = observe(&spec("api", "api:1"), "running", "healthy");
        serving.name = "p-api-serving".into();
        observed.containers = vec![starting, serving, observe(&proxy, "running", "")];
        let plan = plan("p", &nets(), &[spec("api", "api:3"), proxy], &observed);
        let text = plan.render();
        assert!(text.contains("api: replace p-api-serving with"), "{text}");
        assert_eq!(
            plan.remove,
            vec![Removal {
                container: "p-api-starting".into(),
                service: "api".into(),
                reason: "a leftover api container (running)".into(),
            }]
        );
    }

    // Issue 14: a container killed through the engine left the stack "up to date".
    #[test]
    fn a_killed_api_is_replaced_in_place_and_nginx_switches_to_it() {
        let (api, proxy, mut observed) = running_stack();
        observed.containers[0].state = "exited".into();
        observed.containers[0].exit_code = 137;
        let plan = plan("p", &nets(), &[api.clone(), proxy], &observed);
        let name = api.container_name("p");
        assert_eq!(
            plan.render(),
            format!(
                "network p-internal: keep\napi: replace {name} with {name} (container exited (137))\nnginx: keep p-nginx\nnginx: reload (switch to the new api container)\n"
            )
        );
    }

    #[test]
    fn an_unhealthy_api_and_a_stopped_nginx_are_not_up_to_date() {
        let (api, proxy, mut observed) = running_stack();
        observed.containers[0].health = "unhealthy".into();
        observed.containers[1].state = "exited".into();
        observed.containers[1].exit_code = 0;
        let plan = plan("p", &nets(), &[api.clone(), proxy], &observed);
        let name = api.container_name("p");
        assert_eq!(
            plan.render(),
            format!(
                "network p-internal: keep\napi: replace {name} with {name} (container unhealthy)\nnginx: replace p-nginx with p-nginx (container exited (0))\n"
            )
        );
        // Still starting (Docker's first check has not run) is alive: nothing to do.
        let (api, proxy, mut observed) = running_stack();
        observed.containers[0].health = "starting".into();
        assert!(plan_is_noop(&api, &proxy, &observed));
    }

    fn plan_is_noop(api: &ContainerSpec, proxy: &ContainerSpec, observed: &Observed) -> bool {
        plan("p", &nets(), &[api.clone(), proxy.clone()], observed).is_noop()
    }

    // Issue 14: an earlier release's containers (no stack id, deployed from this
    // directory) are replaced by labelled ones even though their configuration matches.
    #[test]
    fn containers_of_an_earlier_release_are_adopted() {
        let (api, proxy, mut observed) = running_stack();
        for c in &mut observed.containers {
            c.name = c.name.replacen("p-", "elior-old-", 1);
            c.legacy = true;
        }
        observed.networks.clear();
        let plan = plan("p", &nets(), &[api.clone(), proxy], &observed);
        let why = "adopting the container of an earlier release: it lacks the stack id";
        assert_eq!(
            plan.render(),
            format!(
                "network p-internal: create\napi: replace {} with {} ({why})\nnginx: replace elior-old-nginx with p-nginx ({why})\n",
                api.container_name("elior-old"),
                api.container_name("p"),
            )
        );
        assert!(plan.remove.is_empty());
    }
}
