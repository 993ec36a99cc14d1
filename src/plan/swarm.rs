//! The swarm rollout as data (issue 21): from the stack's settings and what the swarm
//! manager reports, which overlay network, secrets and services should exist, and for
//! each service whether it is created, updated (and why) or kept. Also the refusals that
//! come before any change: an engine that is not a swarm manager, or no node labelled for
//! the database.
//!
//! Pure: no I/O and no async. `docker::swarm` carries a [`SwarmPlan`] out through the
//! engine's Swarm API; `deploy::swarm` gathers the inputs. Tests assert exact output.
//!
//! Shape of a swarm stack (`P` is the project name `elior-<domain>-<id8>`):
//! - network `P-net`, an overlay every service joins;
//! - service `P-api`: `API_REPLICAS` tasks, `endpoint_mode: dnsrr`, health-gated rolling
//!   updates (`start-first`, automatic rollback), the JWT secret and the database URL as
//!   swarm secrets read through `JWT_SECRET_FILE` / `DATABASE_URL_FILE`;
//! - service `P-nginx`: one task per node (global) publishing HTTP_PORT and HTTPS_PORT in
//!   host mode (no routing mesh), nginx.conf and the TLS pair as secrets, upstream
//!   `tasks.P-api` re-resolved through Docker's DNS;
//! - service `P-postgres` (no external DATABASE_URL): one task pinned to the node labelled
//!   `elior.db=true`, data on the named volume `P-pgdata`, its password a secret.
//!
//! nginx.conf and the certificate are swarm *secrets*, not configs: bollard 0.19 has no
//! Config API, and a secret is the stricter of the two (encrypted in the raft log, tmpfs
//! in the task). Every secret's name ends in a hash of its content, so a new certificate
//! or config is a new secret version and a service update, never an edit in place.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// The node label that places the postgres service.
pub const DB_NODE_LABEL: &str = "elior.db";
/// Labels on every service and secret elior creates in swarm mode.
pub const LABEL_SERVICE: &str = "elior.service";
pub const LABEL_CONFIG_PARTS: &str = "elior.config-parts";
/// The image reference (tag) a service runs; the spec names the image by id.
pub const LABEL_IMAGE: &str = "elior.image";
pub const LABEL_SECRET: &str = "elior.secret";

/// The API's health check, also the gate of each task in a rolling update.
pub const API_HEALTH: &[&str] = &["CMD", "/usr/local/bin/elior", "healthcheck"];
pub const POSTGRES_USER: &str = "elior";
pub const POSTGRES_DB: &str = "elior";
/// The file under /run/secrets of the postgres task that holds its password.
pub const POSTGRES_PASSWORD_SECRET: &str = "postgres_password";
const SECONDS: i64 = 1_000_000_000;
/// The pause between two nodes' nginx tasks in a rolling update.
pub const NGINX_UPDATE_DELAY_SECONDS: i64 = 5;

/// What a swarm stack is deployed from: validated settings and prepared images.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub project: String,
    /// The owner labels (stack id, directory, project).
    pub labels: Vec<(String, String)>,
    pub api_image: Image,
    pub proxy_image: Image,
    /// `None`: an external DATABASE_URL (or an API that cannot use PostgreSQL yet).
    pub postgres_image: Option<Image>,
    pub replicas: u32,
    pub api_port: u16,
    pub http_port: u16,
    pub https_port: u16,
    /// Settings the API gets as environment variables (no secrets), `KEY=VALUE`.
    pub api_env: Vec<String>,
    /// Folders the API writes inside its read-only root: tmpfs in each task.
    pub api_scratch_dirs: Vec<String>,
    pub secrets: SecretValues,
}

/// An image the engine has: tasks run it by id (no registry lookup, no pull).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub id: String,
    pub reference: String,
}

/// The contents of the stack's secrets.
#[derive(Clone)]
pub struct SecretValues {
    pub jwt_secret: String,
    /// The URL the API connects with (`postgresql://…`), when it gets one.
    pub database_url: Option<String>,
    /// The password of the postgres service, when elior runs one.
    pub db_password: Option<String>,
    /// AWS_SECRET_ACCESS_KEY of the uploads bucket (UPLOADS_URL=s3://…), when set: a
    /// secret read through AWS_SECRET_ACCESS_KEY_FILE, never in the service's env.
    pub s3_secret_key: Option<String>,
    pub nginx_conf: String,
    pub tls_cert: String,
    pub tls_key: String,
}

impl std::fmt::Debug for SecretValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretValues([redacted])")
    }
}

/// What the swarm manager reports.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub swarm: SwarmState,
    /// This engine's node hostname (for the label command).
    pub hostname: String,
    pub nodes: Vec<NodeFacts>,
    pub services: Vec<ServiceFacts>,
    pub secrets: Vec<String>,
    pub networks: Vec<String>,
    /// Host ports that services of other stacks on this swarm publish.
    pub foreign_ports: Vec<ForeignPort>,
}

/// A host port another service on the swarm publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignPort {
    pub port: u16,
    pub service: String,
    /// The directory of the elior stack it belongs to (its `elior.stack-dir` label).
    pub stack_dir: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SwarmState {
    /// Not part of a swarm.
    #[default]
    Inactive,
    /// A worker: services are managed on a manager.
    Worker,
    Manager,
    /// Pending, error, locked...: the engine's own word.
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    pub hostname: String,
    pub labels: BTreeMap<String, String>,
    pub ready: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFacts {
    pub name: String,
    /// The `elior.config-parts` label.
    pub parts: String,
    /// `None` for a global service.
    pub replicas: Option<u32>,
    /// The host ports it publishes.
    pub published: Vec<u16>,
}

/// Refuses an engine the stack cannot be deployed on, with the command that fixes it.
pub fn check(observed: &Observed, needs_db_node: bool) -> Result<(), String> {
    match &observed.swarm {
        SwarmState::Manager => {}
        SwarmState::Inactive => {
            return Err("this Docker Engine is not part of a swarm\nrun `docker swarm init --advertise-addr <this host's IP>` here (or `docker swarm join` it to a swarm as a manager), then deploy again".to_string())
        }
        SwarmState::Worker => {
            return Err("this Docker Engine is a swarm worker: services are created on a manager\nrun elior on a manager (`docker node ls` there lists them), or promote this node with `docker node promote <node>` on a manager".to_string())
        }
        SwarmState::Other(state) => {
            return Err(format!("this Docker Engine's swarm state is {state:?}, not an active manager\nrun `docker info` to see why; `docker swarm init --advertise-addr <IP>` starts a new swarm"))
        }
    }
    if needs_db_node
        && !observed
            .nodes
            .iter()
            .any(|n| n.labels.get(DB_NODE_LABEL).map(String::as_str) == Some("true"))
    {
        let host = if observed.hostname.is_empty() {
            "<node>"
        } else {
            observed.hostname.as_str()
        };
        return Err(format!(
            "no swarm node has the label {DB_NODE_LABEL}=true, so the postgres service has nowhere to run\nrun `docker node update --label-add {DB_NODE_LABEL}=true {host}` (or name the node that keeps the database), or set DATABASE_URL to an external PostgreSQL"
        ));
    }
    Ok(())
}

/// The plan: network, secrets and services, in the order they are made.
#[derive(Debug, Clone)]
pub struct SwarmPlan {
    pub network: String,
    pub create_network: bool,
    pub volumes: Vec<String>,
    pub secrets: Vec<SecretStep>,
    /// Start order: the database, the API, nginx.
    pub services: Vec<ServicePlan>,
}

#[derive(Clone)]
pub struct SecretStep {
    pub kind: &'static str,
    pub name: String,
    pub data: String,
    pub create: bool,
}

impl std::fmt::Debug for SecretStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretStep({}, create: {})", self.name, self.create)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Create,
    Update { reason: String },
    Keep,
}

#[derive(Debug, Clone)]
pub struct ServicePlan {
    pub def: ServiceDef,
    pub change: Change,
}

/// One service, as elior describes it (turned into the engine's `ServiceSpec` by
/// [`ServiceDef::spec`]); every field is hashed into the parts label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceDef {
    /// `api`, `nginx` or `postgres`.
    pub role: &'static str,
    pub name: String,
    pub image: Image,
    pub command: Vec<String>,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub read_only: bool,
    pub secrets: Vec<SecretMount>,
    pub mounts: Vec<MountDef>,
    pub health: Option<Vec<String>>,
    /// `None`: one task per node (global).
    pub replicas: Option<u32>,
    /// (container port, published port), published in host mode.
    pub ports: Vec<(u16, u16)>,
    pub constraints: Vec<String>,
    /// Rolling updates start the new task before stopping the old one.
    pub start_first: bool,
    pub sysctls: Vec<(String, String)>,
    pub stop_grace_seconds: i64,
    /// The pause between two tasks of a rolling update (nginx: one node after another, so
    /// a certificate roll never stops every node's nginx at once). Left out of the parts
    /// hash when 0, so services that never had one do not roll for it.
    #[serde(skip_serializing_if = "is_zero")]
    pub update_delay_seconds: i64,
    pub labels: Vec<(String, String)>,
    pub network: String,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl Serialize for Image {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.id)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretMount {
    pub secret: String,
    pub target: String,
    pub uid: u32,
    pub mode: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum MountDef {
    /// A tmpfs, world-writable with the sticky bit (the API runs as uid 10001).
    Tmpfs {
        target: String,
    },
    Volume {
        name: String,
        target: String,
    },
}

/// A task's health check: every 3 s, 3 failures make it unhealthy; 20 s to start.
pub fn health_config(test: &[String]) -> bollard::models::HealthConfig {
    bollard::models::HealthConfig {
        test: Some(test.to_vec()),
        interval: Some(3 * SECONDS),
        timeout: Some(3 * SECONDS),
        retries: Some(3),
        start_period: Some(20 * SECONDS),
        ..Default::default()
    }
}

/// The health check of a service elior makes, by its `elior.service` label.
pub fn health_of_role(role: &str) -> Option<bollard::models::HealthConfig> {
    match role {
        "api" => Some(health_config(
            &API_HEALTH.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )),
        "postgres" => Some(health_config(&postgres_health())),
        _ => None,
    }
}

fn postgres_health() -> Vec<String> {
    ["CMD", "pg_isready", "-U", POSTGRES_USER, "-d", POSTGRES_DB]
        .map(String::from)
        .to_vec()
}

fn short_hash(value: &impl Serialize) -> String {
    let json = serde_json::to_string(value).expect("plain data serialises");
    hex::encode(&Sha256::digest(json.as_bytes())[..5])
}

impl ServiceDef {
    /// `image=…,env=…,secrets=…,spec=…`: what changed is named in an update's reason.
    pub fn parts(&self) -> String {
        let mut rest = self.clone();
        rest.image = Image {
            id: String::new(),
            reference: String::new(),
        };
        rest.env.clear();
        rest.secrets.clear();
        rest.replicas = None;
        rest.labels.clear();
        format!(
            "image={},env={},secrets={},spec={}",
            short_hash(&self.image),
            short_hash(&self.env),
            short_hash(&self.secrets),
            short_hash(&rest)
        )
    }

    /// The engine's service spec.
    pub fn spec(&self) -> bollard::models::ServiceSpec {
        use bollard::models::*;
        let mut labels: std::collections::HashMap<String, String> =
            self.labels.iter().cloned().collect();
        labels.insert(LABEL_SERVICE.into(), self.role.into());
        labels.insert(LABEL_CONFIG_PARTS.into(), self.parts());
        labels.insert(LABEL_IMAGE.into(), self.image.reference.clone());
        let mounts = self
            .mounts
            .iter()
            .map(|m| match m {
                MountDef::Tmpfs { target } => Mount {
                    target: Some(target.clone()),
                    typ: Some(MountTypeEnum::TMPFS),
                    tmpfs_options: Some(MountTmpfsOptions {
                        size_bytes: Some(64 * 1024 * 1024),
                        mode: Some(0o1777),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                MountDef::Volume { name, target } => Mount {
                    target: Some(target.clone()),
                    source: Some(name.clone()),
                    typ: Some(MountTypeEnum::VOLUME),
                    volume_options: Some(MountVolumeOptions {
                        labels: Some(self.labels.iter().cloned().collect()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            })
            .collect();
        let secrets = self
            .secrets
            .iter()
            .map(|s| TaskSpecContainerSpecSecrets {
                secret_name: Some(s.secret.clone()),
                file: Some(TaskSpecContainerSpecFile {
                    name: Some(s.target.clone()),
                    uid: Some(s.uid.to_string()),
                    gid: Some(s.uid.to_string()),
                    mode: Some(s.mode),
                }),
                ..Default::default()
            })
            .collect();
        let health_check = self.health.as_ref().map(|test| health_config(test));
        let order = if self.start_first {
            ServiceSpecUpdateConfigOrderEnum::START_FIRST
        } else {
            ServiceSpecUpdateConfigOrderEnum::STOP_FIRST
        };
        let rollback_order = if self.start_first {
            ServiceSpecRollbackConfigOrderEnum::START_FIRST
        } else {
            ServiceSpecRollbackConfigOrderEnum::STOP_FIRST
        };
        ServiceSpec {
            name: Some(self.name.clone()),
            labels: Some(labels),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(self.image.id.clone()),
                    labels: Some(self.labels.iter().cloned().collect()),
                    command: (!self.command.is_empty()).then(|| self.command.clone()),
                    env: Some(self.env.clone()),
                    user: self.user.clone(),
                    read_only: Some(self.read_only),
                    mounts: Some(mounts),
                    secrets: Some(secrets),
                    health_check,
                    stop_grace_period: Some(self.stop_grace_seconds * SECONDS),
                    sysctls: (!self.sysctls.is_empty())
                        .then(|| self.sysctls.iter().cloned().collect()),
                    ..Default::default()
                }),
                restart_policy: Some(TaskSpecRestartPolicy {
                    condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                    delay: Some(2 * SECONDS),
                    ..Default::default()
                }),
                placement: Some(TaskSpecPlacement {
                    constraints: Some(self.constraints.clone()),
                    ..Default::default()
                }),
                networks: Some(vec![NetworkAttachmentConfig {
                    target: Some(self.network.clone()),
                    aliases: Some(vec![self.role.to_string()]),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            mode: Some(match self.replicas {
                Some(n) => ServiceSpecMode {
                    replicated: Some(ServiceSpecModeReplicated {
                        replicas: Some(i64::from(n)),
                    }),
                    ..Default::default()
                },
                None => ServiceSpecMode {
                    global: Some(Default::default()),
                    ..Default::default()
                },
            }),
            update_config: Some(ServiceSpecUpdateConfig {
                parallelism: Some(1),
                delay: Some(self.update_delay_seconds * SECONDS),
                failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK),
                monitor: Some(10 * SECONDS),
                max_failure_ratio: Some(0.0),
                order: Some(order),
            }),
            rollback_config: Some(ServiceSpecRollbackConfig {
                parallelism: Some(1),
                delay: Some(0),
                failure_action: Some(ServiceSpecRollbackConfigFailureActionEnum::PAUSE),
                monitor: Some(5 * SECONDS),
                max_failure_ratio: Some(0.0),
                order: Some(rollback_order),
            }),
            endpoint_spec: Some(EndpointSpec {
                mode: Some(EndpointSpecModeEnum::DNSRR),
                ports: Some(
                    self.ports
                        .iter()
                        .map(|(target, published)| EndpointPortConfig {
                            protocol: Some(EndpointPortConfigProtocolEnum::TCP),
                            target_port: Some(i64::from(*target)),
                            published_port: Some(i64::from(*published)),
                            publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                            ..Default::default()
                        })
                        .collect(),
                ),
            }),
            ..Default::default()
        }
    }
}

/// The engine names of a stack's swarm objects.
pub struct Names<'a>(pub &'a str);

impl Names<'_> {
    pub fn service(&self, role: &str) -> String {
        format!("{}-{role}", self.0)
    }
    pub fn network(&self) -> String {
        format!("{}-net", self.0)
    }
    pub fn pg_volume(&self) -> String {
        format!("{}-pgdata", self.0)
    }
    /// `P-<kind>-<hash10>`: a new content is a new secret. At most 62 characters (the
    /// engine allows 64): a project name has at most 45, a kind at most 5.
    pub fn secret(&self, kind: &str, data: &str) -> String {
        format!(
            "{}-{kind}-{}",
            self.0,
            &hex::encode(Sha256::digest(data.as_bytes()))[..10]
        )
    }
}

/// The host ports `plan` publishes that its services do not publish yet, each with the
/// service that will: what must be free before the plan is applied. A port a service of
/// this stack already publishes is its own, held by its running tasks.
pub fn ports_to_claim(plan: &SwarmPlan, observed: &Observed) -> Vec<(u16, String)> {
    plan.services
        .iter()
        .flat_map(|service| {
            let publishing = observed
                .services
                .iter()
                .find(|o| o.name == service.def.name)
                .map(|o| o.published.as_slice())
                .unwrap_or_default();
            service
                .def
                .ports
                .iter()
                .filter(|(_, published)| !publishing.contains(published))
                .map(|(_, published)| (*published, service.def.name.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Refuses ports another stack's service publishes on this swarm: the swarm would keep
/// this stack's nginx pending (or failing) on every node until the deploy timed out.
pub fn check_ports(claims: &[(u16, String)], observed: &Observed) -> Result<(), String> {
    for (port, service) in claims {
        let Some(other) = observed.foreign_ports.iter().find(|f| f.port == *port) else {
            continue;
        };
        let (whose, remove) = match &other.stack_dir {
            Some(dir) => (
                format!("the stack in {dir}"),
                format!("remove that stack (`elior down --dir {dir}`)"),
            ),
            None => (
                "not an elior stack".to_string(),
                format!(
                    "remove that service (`docker service rm {}`)",
                    other.service
                ),
            ),
        };
        return Err(format!(
            "port {port} that {service} publishes is already published by the swarm service {} ({whose}); nothing was changed\nset HTTP_PORT/HTTPS_PORT in .env.production, or {remove}",
            other.service
        ));
    }
    Ok(())
}

/// Where nginx reaches the API: every task's address, re-resolved through Docker's DNS.
pub fn api_upstream_host(project: &str) -> String {
    format!("tasks.{}", Names(project).service("api"))
}

/// The desired services and secrets for `inputs`, against what is `observed`.
pub fn plan(inputs: &Inputs, observed: &Observed) -> SwarmPlan {
    let names = Names(&inputs.project);
    let network = names.network();
    let s = &inputs.secrets;
    let mut secret_values: Vec<(&'static str, String)> = vec![("jwt", s.jwt_secret.clone())];
    if let Some(url) = &s.database_url {
        secret_values.push(("dburl", url.clone()));
    }
    if let (Some(password), Some(_)) = (&s.db_password, &inputs.postgres_image) {
        secret_values.push(("dbpw", password.clone()));
    }
    if let Some(key) = &s.s3_secret_key {
        secret_values.push(("s3key", key.clone()));
    }
    secret_values.push(("conf", s.nginx_conf.clone()));
    secret_values.push(("cert", s.tls_cert.clone()));
    secret_values.push(("key", s.tls_key.clone()));
    let secrets: Vec<SecretStep> = secret_values
        .into_iter()
        .map(|(kind, data)| {
            let name = names.secret(kind, &data);
            SecretStep {
                kind,
                create: !observed.secrets.contains(&name),
                name,
                data,
            }
        })
        .collect();
    let secret = |kind: &str| {
        secrets
            .iter()
            .find(|s| s.kind == kind)
            .map(|s| s.name.clone())
    };
    let mount = |kind: &str, target: &str, uid: u32, mode: u32| {
        secret(kind).map(|secret| SecretMount {
            secret,
            target: target.to_string(),
            uid,
            mode,
        })
    };

    let mut defs = Vec::new();
    let mut volumes = Vec::new();
    if let Some(image) = &inputs.postgres_image {
        volumes.push(names.pg_volume());
        defs.push(ServiceDef {
            role: "postgres",
            name: names.service("postgres"),
            image: image.clone(),
            command: Vec::new(),
            env: vec![
                format!("POSTGRES_USER={POSTGRES_USER}"),
                format!("POSTGRES_DB={POSTGRES_DB}"),
                format!("POSTGRES_PASSWORD_FILE=/run/secrets/{POSTGRES_PASSWORD_SECRET}"),
                "PGDATA=/var/lib/postgresql/data/pgdata".to_string(),
            ],
            user: None,
            read_only: false,
            secrets: mount("dbpw", POSTGRES_PASSWORD_SECRET, 999, 0o400)
                .into_iter()
                .collect(),
            mounts: vec![MountDef::Volume {
                name: names.pg_volume(),
                target: "/var/lib/postgresql/data".to_string(),
            }],
            health: Some(postgres_health()),
            replicas: Some(1),
            ports: Vec::new(),
            constraints: vec![format!("node.labels.{DB_NODE_LABEL} == true")],
            // One data volume: the old server stops before the new one starts.
            start_first: false,
            sysctls: Vec::new(),
            stop_grace_seconds: 30,
            update_delay_seconds: 0,
            labels: inputs.labels.clone(),
            network: network.clone(),
        });
    }
    let mut api_env = inputs.api_env.clone();
    api_env.push("JWT_SECRET_FILE=/run/secrets/jwt_secret".to_string());
    if s.database_url.is_some() {
        api_env.push("DATABASE_URL_FILE=/run/secrets/database_url".to_string());
    }
    if s.s3_secret_key.is_some() {
        api_env.push("AWS_SECRET_ACCESS_KEY_FILE=/run/secrets/aws_secret_access_key".to_string());
    }
    api_env.sort();
    let api_uid = crate::plan::render::API_UID;
    defs.push(ServiceDef {
        role: "api",
        name: names.service("api"),
        image: inputs.api_image.clone(),
        command: vec!["/usr/local/bin/elior".to_string(), "serve".to_string()],
        env: api_env,
        user: Some(format!("{api_uid}:{api_uid}")),
        read_only: true,
        secrets: [
            mount("jwt", "jwt_secret", api_uid, 0o400),
            mount("dburl", "database_url", api_uid, 0o400),
            mount("s3key", "aws_secret_access_key", api_uid, 0o400),
        ]
        .into_iter()
        .flatten()
        .collect(),
        mounts: inputs
            .api_scratch_dirs
            .iter()
            .map(|d| MountDef::Tmpfs { target: d.clone() })
            .collect(),
        health: Some(API_HEALTH.iter().map(|s| s.to_string()).collect()),
        replicas: Some(inputs.replicas),
        ports: Vec::new(),
        constraints: Vec::new(),
        start_first: true,
        sysctls: Vec::new(),
        stop_grace_seconds: 15,
        update_delay_seconds: 0,
        labels: inputs.labels.clone(),
        network: network.clone(),
    });
    let nginx_dir = crate::plan::render::paths::NGINX_MOUNT;
    defs.push(ServiceDef {
        role: "nginx",
        name: names.service("nginx"),
        image: inputs.proxy_image.clone(),
        command: [
            "nginx",
            "-c",
            &format!("{nginx_dir}/nginx.conf"),
            "-g",
            "daemon off;",
        ]
        .map(String::from)
        .to_vec(),
        env: Vec::new(),
        user: None,
        read_only: false,
        secrets: [
            mount("conf", &format!("{nginx_dir}/nginx.conf"), 0, 0o444),
            mount("cert", &format!("{nginx_dir}/ssl/cert.pem"), 0, 0o444),
            mount("key", &format!("{nginx_dir}/ssl/key.pem"), 0, 0o400),
        ]
        .into_iter()
        .flatten()
        .collect(),
        mounts: Vec::new(),
        health: None,
        replicas: None,
        ports: vec![(80, inputs.http_port), (443, inputs.https_port)],
        constraints: Vec::new(),
        // Host-mode ports: two nginx tasks cannot hold them on one node at once, so each
        // node's task stops before its successor starts; one node at a time, with a pause,
        // so the other nodes keep answering (no restart storm when a certificate rolls).
        start_first: false,
        sysctls: vec![("net.ipv4.tcp_tw_reuse".to_string(), "1".to_string())],
        stop_grace_seconds: 10,
        update_delay_seconds: NGINX_UPDATE_DELAY_SECONDS,
        labels: inputs.labels.clone(),
        network: network.clone(),
    });

    let services = defs
        .into_iter()
        .map(|def| {
            let change = match observed.services.iter().find(|s| s.name == def.name) {
                None => Change::Create,
                Some(found) => change_of(&def, found),
            };
            ServicePlan { def, change }
        })
        .collect();
    SwarmPlan {
        create_network: !observed.networks.contains(&network),
        network,
        volumes,
        secrets,
        services,
    }
}

/// Why a running service must be updated, part by part.
fn change_of(def: &ServiceDef, found: &ServiceFacts) -> Change {
    let want = def.parts();
    let parse = |s: &str| -> BTreeMap<String, String> {
        s.split(',')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let (want_parts, have_parts) = (parse(&want), parse(&found.parts));
    let mut reasons: Vec<String> = want_parts
        .iter()
        .filter(|(k, v)| have_parts.get(*k) != Some(v))
        .map(|(k, _)| format!("{k} changed"))
        .collect();
    if def.replicas != found.replicas {
        let show = |r: Option<u32>| r.map_or("global".to_string(), |n| n.to_string());
        reasons.push(format!(
            "replicas {} -> {}",
            show(found.replicas),
            show(def.replicas)
        ));
    }
    if reasons.is_empty() {
        Change::Keep
    } else {
        Change::Update {
            reason: reasons.join(", "),
        }
    }
}

impl SwarmPlan {
    /// The plan for nginx alone: what `elior cert` changes in swarm mode (an nginx.conf
    /// that answers ACME challenges, a new certificate), so a renewal never rolls the API
    /// or the database for a setting edited since the last deploy.
    pub fn nginx_only(mut self) -> SwarmPlan {
        self.services.retain(|s| s.def.role == "nginx");
        let used: Vec<&str> = self
            .services
            .iter()
            .flat_map(|s| s.def.secrets.iter().map(|m| m.secret.as_str()))
            .collect();
        self.secrets.retain(|s| used.contains(&s.name.as_str()));
        self.volumes.clear();
        self
    }

    pub fn is_noop(&self) -> bool {
        !self.create_network
            && self.secrets.iter().all(|s| !s.create)
            && self.services.iter().all(|s| s.change == Change::Keep)
    }

    /// One line per object, for `--dry-run` and progress.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let verb = |create: bool| if create { "create" } else { "keep" };
        let _ = writeln!(
            out,
            "network {}: {} (overlay)",
            self.network,
            verb(self.create_network)
        );
        for v in &self.volumes {
            let _ = writeln!(out, "volume {v}: keep or create (named, survives `down`)");
        }
        for s in &self.secrets {
            let _ = writeln!(out, "secret {}: {}", s.name, verb(s.create));
        }
        for s in &self.services {
            let d = &s.def;
            let tasks = d
                .replicas
                .map_or("one task per node".to_string(), |n| format!("{n} tasks"));
            let _ = match &s.change {
                Change::Create => writeln!(
                    out,
                    "service {}: create ({tasks}, {})",
                    d.name, d.image.reference
                ),
                Change::Update { reason } => writeln!(
                    out,
                    "service {}: rolling update ({reason}; {tasks}, {})",
                    d.name, d.image.reference
                ),
                Change::Keep => writeln!(out, "service {}: keep ({tasks})", d.name),
            };
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(postgres: bool) -> Inputs {
        Inputs {
            project: "elior-fit-test-a1a1a1a1".into(),
            labels: vec![("elior.stack-id".into(), "a1".repeat(16))],
            api_image: Image {
                id: "sha256:aaa".into(),
                reference: "elior-fitness-api:0123456789ab".into(),
            },
            proxy_image: Image {
                id: "sha256:bbb".into(),
                reference: "nginx:stable-alpine".into(),
            },
            postgres_image: postgres.then(|| Image {
                id: "sha256:ccc".into(),
                reference: "postgres:17".into(),
            }),
            replicas: 3,
            api_port: 8000,
            http_port: 80,
            https_port: 443,
            api_env: vec!["BIND_ADDRESS=0.0.0.0:8000".into(), "DOMAIN=fit.test".into()],
            api_scratch_dirs: vec!["/app/data".into()],
            secrets: SecretValues {
                jwt_secret: "j".repeat(40),
                database_url: postgres.then(|| "postgresql://elior:pw@x:5432/elior".into()),
                db_password: postgres.then(|| "pw".into()),
                s3_secret_key: None,
                nginx_conf: "events {}".into(),
                tls_cert: "CERT".into(),
                tls_key: "KEY".into(),
            },
        }
    }

    fn manager() -> Observed {
        Observed {
            swarm: SwarmState::Manager,
            hostname: "node-1".into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_empty_swarm_gets_everything_created_in_dependency_order() {
        let plan = plan(&inputs(true), &manager());
        let names = Names("elior-fit-test-a1a1a1a1");
        let expected = format!(
            "network elior-fit-test-a1a1a1a1-net: create (overlay)\n\
             volume elior-fit-test-a1a1a1a1-pgdata: keep or create (named, survives `down`)\n\
             secret {}: create\n\
             secret {}: create\n\
             secret {}: create\n\
             secret {}: create\n\
             secret {}: create\n\
             secret {}: create\n\
             service elior-fit-test-a1a1a1a1-postgres: create (1 tasks, postgres:17)\n\
             service elior-fit-test-a1a1a1a1-api: create (3 tasks, elior-fitness-api:0123456789ab)\n\
             service elior-fit-test-a1a1a1a1-nginx: create (one task per node, nginx:stable-alpine)\n",
            names.secret("jwt", &"j".repeat(40)),
            names.secret("dburl", "postgresql://elior:pw@x:5432/elior"),
            names.secret("dbpw", "pw"),
            names.secret("conf", "events {}"),
            names.secret("cert", "CERT"),
            names.secret("key", "KEY"),
        );
        assert_eq!(plan.render(), expected);
        assert!(!plan.is_noop());
        assert_eq!(
            names.secret("cert", "CERT"),
            format!(
                "elior-fit-test-a1a1a1a1-cert-{}",
                &hex::encode(Sha256::digest(b"CERT"))[..10]
            )
        );
        // Regression: `…-db-password-<hash>` of a long domain passed the engine's 64.
        let longest = crate::config::identity::project_name(
            &crate::config::domain::parse(&format!("{}.example.com", "x".repeat(60))).unwrap(),
            &crate::config::identity::StackId::random(),
        );
        for p in &plan.secrets {
            let name = Names(&longest).secret(p.kind, "x");
            assert!(name.len() <= 64, "{name}");
        }
    }

    #[test]
    fn the_api_service_rolls_start_first_health_gated_with_rollback_and_dnsrr() {
        let plan = plan(&inputs(true), &manager());
        let api = &plan.services[1].def;
        let spec = api.spec();
        let update = spec.update_config.unwrap();
        use bollard::models::*;
        assert_eq!(
            update.order,
            Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST)
        );
        assert_eq!(
            update.failure_action,
            Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK)
        );
        assert_eq!(update.parallelism, Some(1));
        assert_eq!(
            spec.endpoint_spec.unwrap().mode,
            Some(EndpointSpecModeEnum::DNSRR)
        );
        let container = spec.task_template.unwrap().container_spec.unwrap();
        // Run by id: the engine never asks a registry for the tag.
        assert_eq!(container.image.as_deref(), Some("sha256:aaa"));
        assert_eq!(
            container.env.unwrap(),
            [
                "BIND_ADDRESS=0.0.0.0:8000",
                "DATABASE_URL_FILE=/run/secrets/database_url",
                "DOMAIN=fit.test",
                "JWT_SECRET_FILE=/run/secrets/jwt_secret",
            ]
        );
        assert_eq!(
            container.health_check.unwrap().test.unwrap(),
            ["CMD", "/usr/local/bin/elior", "healthcheck"]
        );
        assert_eq!(container.read_only, Some(true));
        let secrets: Vec<_> = container
            .secrets
            .unwrap()
            .into_iter()
            .map(|s| s.file.unwrap().name.unwrap())
            .collect();
        assert_eq!(secrets, ["jwt_secret", "database_url"]);

        let pg = plan.services[0].def.spec();
        assert_eq!(
            pg.task_template
                .unwrap()
                .placement
                .unwrap()
                .constraints
                .unwrap(),
            ["node.labels.elior.db == true"]
        );
        let nginx = plan.services[2].def.spec();
        let ports = nginx.endpoint_spec.unwrap().ports.unwrap();
        assert!(ports
            .iter()
            .all(|p| p.publish_mode == Some(EndpointPortConfigPublishModeEnum::HOST)));
        assert_eq!(api_upstream_host("elior-x-1"), "tasks.elior-x-1-api");
    }

    fn observed_after(plan: &SwarmPlan) -> Observed {
        Observed {
            networks: vec![plan.network.clone()],
            secrets: plan.secrets.iter().map(|s| s.name.clone()).collect(),
            services: plan
                .services
                .iter()
                .map(|s| ServiceFacts {
                    name: s.def.name.clone(),
                    parts: s.def.parts(),
                    replicas: s.def.replicas,
                    published: s.def.ports.iter().map(|(_, p)| *p).collect(),
                })
                .collect(),
            ..manager()
        }
    }

    #[test]
    fn ports_new_to_the_stack_must_be_free_of_other_stacks() {
        let first = plan(&inputs(false), &manager());
        let nginx = Names("elior-fit-test-a1a1a1a1").service("nginx");
        let both = vec![(80, nginx.clone()), (443, nginx.clone())];
        assert_eq!(ports_to_claim(&first, &manager()), both);
        let deployed = observed_after(&first);
        assert!(
            ports_to_claim(&first, &deployed).is_empty(),
            "its own ports"
        );
        let mut moved = inputs(false);
        moved.https_port = 8443;
        assert_eq!(
            ports_to_claim(&plan(&moved, &deployed), &deployed),
            vec![(8443, nginx.clone())]
        );

        let crowded = Observed {
            foreign_ports: vec![ForeignPort {
                port: 443,
                service: "elior-fit-other-b2b2b2b2-nginx".into(),
                stack_dir: Some("/srv/other".into()),
            }],
            ..manager()
        };
        let err = check_ports(&ports_to_claim(&first, &crowded), &crowded).unwrap_err();
        assert_eq!(
            err,
            "port 443 that elior-fit-test-a1a1a1a1-nginx publishes is already published by the swarm service elior-fit-other-b2b2b2b2-nginx (the stack in /srv/other); nothing was changed\n\
             set HTTP_PORT/HTTPS_PORT in .env.production, or remove that stack (`elior down --dir /srv/other`)"
        );
        assert!(check_ports(&both[..1], &crowded).is_ok());
        let mut stranger = crowded.clone();
        stranger.foreign_ports[0].stack_dir = None;
        let err = check_ports(&both, &stranger).unwrap_err();
        assert!(
            err.contains("(not an elior stack)")
                && err.ends_with("`docker service rm elior-fit-other-b2b2b2b2-nginx`)"),
            "{err}"
        );
    }

    #[test]
    fn a_deployed_stack_is_kept_and_a_change_names_what_changed() {
        let first = plan(&inputs(false), &manager());
        let observed = observed_after(&first);
        let again = plan(&inputs(false), &observed);
        assert!(again.is_noop(), "{}", again.render());

        let mut changed = inputs(false);
        changed.api_image.id = "sha256:ddd".into();
        changed.api_image.reference = "elior-fitness-api:fedcba987654".into();
        changed.replicas = 5;
        changed.secrets.tls_cert = "RENEWED".into();
        let next = plan(&changed, &observed);
        let names = Names(&changed.project);
        let rendered = next.render();
        let lines: Vec<&str> = rendered.lines().skip(1).collect();
        assert_eq!(
            lines,
            [
                format!("secret {}: keep", names.secret("jwt", &"j".repeat(40))),
                format!("secret {}: keep", names.secret("conf", "events {}")),
                format!("secret {}: create", names.secret("cert", "RENEWED")),
                format!("secret {}: keep", names.secret("key", "KEY")),
                "service elior-fit-test-a1a1a1a1-api: rolling update (image changed, replicas 3 -> 5; 5 tasks, elior-fitness-api:fedcba987654)".to_string(),
                "service elior-fit-test-a1a1a1a1-nginx: rolling update (secrets changed; one task per node, nginx:stable-alpine)".to_string(),
            ]
        );
    }

    /// Issue 21: nginx publishes host-mode ports, so a node's task stops before its
    /// successor starts; one node at a time with a pause, never all at once.
    #[test]
    fn nginx_rolls_one_node_at_a_time_stop_first_with_a_pause() {
        use bollard::models::*;
        let plan = plan(&inputs(true), &manager());
        assert_eq!(
            plan.services[2].def.spec().update_config,
            Some(ServiceSpecUpdateConfig {
                parallelism: Some(1),
                delay: Some(5 * SECONDS),
                failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK),
                monitor: Some(10 * SECONDS),
                max_failure_ratio: Some(0.0),
                order: Some(ServiceSpecUpdateConfigOrderEnum::STOP_FIRST),
            })
        );
        // The API and the database roll as before: no delay, and no delay field in the
        // serialised definition (the spec hash a deploy compares).
        for i in [0, 1] {
            let def = &plan.services[i].def;
            assert_eq!(def.spec().update_config.unwrap().delay, Some(0));
            assert!(!serde_json::to_string(def)
                .unwrap()
                .contains("update_delay_seconds"));
        }
    }

    /// `elior cert` in swarm mode: a new nginx.conf (the ACME thumbprint) and a new
    /// certificate roll nginx alone, even when the API's settings were edited since.
    #[test]
    fn a_certificate_change_plans_nginx_alone() {
        let first = plan(&inputs(true), &manager());
        let observed = observed_after(&first);
        let mut changed = inputs(true);
        changed.api_env.push("LOG_LEVEL=debug".into());
        changed.secrets.nginx_conf = "events {} # acme".into();
        changed.secrets.tls_cert = "RENEWED".into();
        changed.secrets.tls_key = "NEW KEY".into();
        let names = Names(&changed.project);
        let next = plan(&changed, &observed).nginx_only();
        assert_eq!(
            next.render(),
            format!(
                "network elior-fit-test-a1a1a1a1-net: keep (overlay)\n\
                 secret {}: create\n\
                 secret {}: create\n\
                 secret {}: create\n\
                 service elior-fit-test-a1a1a1a1-nginx: rolling update (secrets changed; one task per node, nginx:stable-alpine)\n",
                names.secret("conf", "events {} # acme"),
                names.secret("cert", "RENEWED"),
                names.secret("key", "NEW KEY"),
            )
        );
        // Unchanged: nothing to do, though the API's settings differ.
        let mut same = inputs(true);
        same.api_env.push("LOG_LEVEL=debug".into());
        assert!(plan(&same, &observed).nginx_only().is_noop());
    }

    #[test]
    fn refusals_name_the_command_that_fixes_them() {
        let inactive = Observed::default();
        assert_eq!(
            check(&inactive, false).unwrap_err(),
            "this Docker Engine is not part of a swarm\nrun `docker swarm init --advertise-addr <this host's IP>` here (or `docker swarm join` it to a swarm as a manager), then deploy again"
        );
        let worker = Observed {
            swarm: SwarmState::Worker,
            ..Default::default()
        };
        assert!(check(&worker, false)
            .unwrap_err()
            .contains("docker node promote"));
        let mut observed = manager();
        observed.nodes.push(NodeFacts {
            hostname: "node-1".into(),
            labels: BTreeMap::new(),
            ready: true,
        });
        assert_eq!(check(&observed, false), Ok(()));
        assert_eq!(
            check(&observed, true).unwrap_err(),
            "no swarm node has the label elior.db=true, so the postgres service has nowhere to run\nrun `docker node update --label-add elior.db=true node-1` (or name the node that keeps the database), or set DATABASE_URL to an external PostgreSQL"
        );
        observed.nodes[0]
            .labels
            .insert("elior.db".into(), "true".into());
        assert_eq!(check(&observed, true), Ok(()));
    }
}
