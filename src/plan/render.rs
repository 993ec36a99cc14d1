//! Rendering the stack's files: validated settings + templates -> file contents.
//!
//! Pure: the templates arrive as text (embedded, or read by the caller from `--templates`)
//! and the result is a list of paths and contents; writing them is the caller's job.
//! Templates only ever see typed, validated values ([`StackConfig`] and [`Upstream`]), never
//! raw user text, and auto-escaping is off because the outputs are nginx and YAML, not HTML.

use std::borrow::Cow;
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use crate::config::stack::StackConfig;

/// Paths of the stack's files, relative to the stack directory. The names are part of the
/// contract with `deploy` and the TLS code, which write or mount the same paths.
pub mod paths {
    pub const COMPOSE_FILE: &str = "docker-compose.prod.yml";
    pub const NGINX_CONF: &str = "nginx/nginx.conf";
    /// Folders `elior init` creates.
    pub const STACK_DIRS: &[&str] = &[
        "data",
        "uploads",
        "backups",
        "frontend",
        "nginx/ssl",
        "nginx/acme",
    ];
    /// The certificate chain and key nginx serves (inside `nginx/ssl/`).
    pub const CERT_FILE: &str = "nginx/ssl/cert.pem";
    pub const KEY_FILE: &str = "nginx/ssl/key.pem";
    /// Where HTTP-01 tokens go: nginx serves `nginx/acme` as the webroot for
    /// `/.well-known/acme-challenge/`.
    pub const ACME_CHALLENGE_DIR: &str = "nginx/acme/.well-known/acme-challenge";

    /// Inside the nginx container: the stack's `nginx/` folder is mounted here as a folder
    /// (not single files), so a file replaced by rename is seen after `nginx -s reload`.
    pub const NGINX_MOUNT: &str = "/etc/nginx/elior";
    pub const NGINX_UPLOADS_MOUNT: &str = "/srv/elior/uploads";
    pub const NGINX_FRONTEND_MOUNT: &str = "/srv/elior/frontend";
    /// The API answers a permitted download with `X-Accel-Redirect: {this}<relative path>`.
    pub const ACCEL_UPLOADS_PREFIX: &str = "/_protected/uploads/";
}

/// The API container's user: a numeric uid needs no /etc/passwd in a scratch image.
pub const API_UID: u32 = 10001;
/// The compose service names; deploy derives container names from them.
pub const API_SERVICE: &str = "api";
pub const NGINX_SERVICE: &str = "nginx";

/// Template file names, as the user puts them in a `--templates` folder.
pub const COMPOSE_TEMPLATE: &str = "docker-compose.prod.yml.j2";
pub const NGINX_TEMPLATE: &str = "nginx.conf.j2";
pub const ENV_TEMPLATE: &str = "env.production.j2";
pub const TEMPLATE_NAMES: &[&str] = &[COMPOSE_TEMPLATE, NGINX_TEMPLATE, ENV_TEMPLATE];

/// The template sources in use: the embedded ones, each possibly overridden.
#[derive(Debug, Clone)]
pub struct Templates {
    sources: Vec<(&'static str, Cow<'static, str>)>,
}

impl Templates {
    /// The templates compiled into this binary.
    pub fn embedded() -> Templates {
        Templates {
            sources: vec![
                (
                    COMPOSE_TEMPLATE,
                    Cow::Borrowed(include_str!("../../templates/docker-compose.prod.yml.j2")),
                ),
                (
                    NGINX_TEMPLATE,
                    Cow::Borrowed(include_str!("../../templates/nginx.conf.j2")),
                ),
                (
                    ENV_TEMPLATE,
                    Cow::Borrowed(include_str!("../../templates/env.production.j2")),
                ),
            ],
        }
    }

    /// Replaces one template by the user's version.
    pub fn set(&mut self, name: &str, source: String) -> Result<()> {
        let slot = self
            .sources
            .iter_mut()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| {
                anyhow!("{name} is not a template elior knows; use one of {TEMPLATE_NAMES:?}")
            })?;
        slot.1 = Cow::Owned(source);
        Ok(())
    }

    pub fn source(&self, name: &str) -> &str {
        self.sources
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s.as_ref())
            .expect("template names are fixed")
    }

    fn environment(&self) -> Result<Environment<'_>> {
        let mut env = Environment::new();
        env.set_keep_trailing_newline(true);
        // A misspelt variable in a custom template is an error, not an empty string.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        for (name, source) in &self.sources {
            env.add_template(name, source.as_ref())
                .map_err(|e| anyhow!("template {name} is invalid: {e:#}"))?;
        }
        Ok(env)
    }

    fn render(&self, name: &str, context: impl Serialize) -> Result<String> {
        let env = self.environment()?;
        let template = env
            .get_template(name)
            .map_err(|e| anyhow!("template {name} is invalid: {e:#}"))?;
        template
            .render(context)
            .map_err(|e| anyhow!("template {name} failed to render: {e:#}"))
    }
}

/// Where nginx sends API requests: `HOST:PORT` on the internal network. Normally the
/// compose service (`api:8000`); deploy may point it at one container during a swap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Upstream(String);

impl Upstream {
    /// `host` is a service or container name: letters, digits, `_`, `.` and `-`.
    pub fn new(host: &str, port: u16) -> Result<Upstream, String> {
        let ok = !host.is_empty()
            && host.len() <= 128
            && host
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric())
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !ok || port == 0 {
            return Err(format!(
                "{host:?}:{port} is not an upstream; use a container name and a port such as api:8000"
            ));
        }
        Ok(Upstream(format!("{host}:{port}")))
    }

    /// The compose service `api` on the port the API listens on.
    pub fn service(config: &StackConfig) -> Upstream {
        Upstream::new(API_SERVICE, config.serve.bind.port()).expect("service name is valid")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One rendered file: a path relative to the stack directory, and its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    pub path: &'static str,
    pub contents: String,
}

/// Room for the multipart envelope on top of the largest upload limit, so a file of exactly the
/// limit reaches the API, which answers with its own JSON error when it is too large.
const MULTIPART_SLACK: u64 = 1024 * 1024;

/// Everything the compose and nginx templates may use. Each field is derived from a
/// validated setting; none is user text copied through.
#[derive(Debug, Serialize)]
struct StackContext<'a> {
    domain: &'a str,
    server_names: String,
    public_authority: String,
    http_port: u16,
    https_port: u16,
    hsts: String,
    content_security_policy: String,
    permissions_policy: &'static str,
    client_max_body_size: u64,
    upstream: &'a Upstream,
    api_image: &'a str,
    proxy_image: &'a str,
    api_port: u16,
    api_uid: u32,
    api_data_dir: String,
    api_upload_dir: String,
    trusted_proxies: String,
    nginx_mount: &'static str,
    uploads_mount: &'static str,
    frontend_mount: &'static str,
    accel_uploads_prefix: &'static str,
    /// How long nginx trusts Docker's DNS answer for the API (10 s on one host, where the
    /// name changes only on a deploy; 1 s in swarm mode, where tasks come and go).
    resolver_valid: &'static str,
    /// Swarm mode with ACME (issue 21): the account key's thumbprint, with which nginx
    /// answers every HTTP-01 token itself (no challenge files on any node).
    acme_thumbprint: Option<String>,
}

impl<'a> StackContext<'a> {
    fn new(config: &'a StackConfig, upstream: &'a Upstream) -> Result<Self> {
        let host = config.domain.url_host();
        let server_names = if config.domain.is_public() {
            format!("{host} www.{host}")
        } else {
            host.clone()
        };
        let public_authority = if config.https_port == 443 {
            host.clone()
        } else {
            format!("{host}:{}", config.https_port)
        };
        let mut hsts = "max-age=63072000; includeSubDomains".to_string();
        if config.hsts_preload {
            hsts.push_str("; preload");
        }
        let content_security_policy = format!(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
             img-src 'self' data: blob:; font-src 'self' data:; \
             connect-src 'self' wss://{public_authority}; frame-ancestors 'none'; \
             base-uri 'self'; form-action 'self'; object-src 'none'"
        );
        let api_data_dir = api_data_dir(config)?;
        let api_upload_dir = container_dir(&config.serve.upload_dir, "UPLOAD_DIR")?;
        Ok(StackContext {
            domain: config.domain.as_str(),
            server_names,
            public_authority,
            http_port: config.http_port,
            https_port: config.https_port,
            hsts,
            content_security_policy,
            permissions_policy: "camera=(self), microphone=(), geolocation=(), payment=(), usb=()",
            client_max_body_size: config.serve.largest_upload() + MULTIPART_SLACK,
            upstream,
            api_image: config.api_image.as_str(),
            proxy_image: config.proxy_image.as_str(),
            api_port: config.serve.bind.port(),
            api_uid: API_UID,
            api_data_dir,
            api_upload_dir,
            trusted_proxies: config.trusted_proxies.join(","),
            nginx_mount: paths::NGINX_MOUNT,
            uploads_mount: paths::NGINX_UPLOADS_MOUNT,
            frontend_mount: paths::NGINX_FRONTEND_MOUNT,
            accel_uploads_prefix: paths::ACCEL_UPLOADS_PREFIX,
            resolver_valid: "10s",
            acme_thumbprint: None,
        })
    }
}

/// The API's data folder inside its container: DATABASE_URL's folder, or for PostgreSQL
/// (no SQLite file; DATABASE_URL names no folder) the folder of the default SQLite URL.
pub fn api_data_dir(config: &StackConfig) -> Result<String> {
    let default;
    let database = if config.serve.postgres.is_some() {
        default = crate::config::sqlite_path(crate::config::stack::CONTAINER_DATABASE_URL)
            .map_err(|m| anyhow::anyhow!(m))?;
        default.as_path()
    } else {
        config.serve.database_path.as_path()
    };
    container_dir(database.parent().unwrap_or(Path::new("/")), "DATABASE_URL")
}

/// StackConfig already checked these paths; this keeps render honest on its own.
fn container_dir(path: &Path, key: &str) -> Result<String> {
    let text = path.to_str().unwrap_or_default();
    if !path.is_absolute()
        || !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
    {
        bail!("{key}: {text:?} is not an absolute container path");
    }
    Ok(text.trim_end_matches('/').to_string())
}

/// Renders `docker-compose.prod.yml` and `nginx/nginx.conf`.
pub fn render_stack(
    config: &StackConfig,
    templates: &Templates,
    upstream: &Upstream,
) -> Result<Vec<RenderedFile>> {
    let context = StackContext::new(config, upstream)?;
    Ok(vec![
        RenderedFile {
            path: paths::COMPOSE_FILE,
            contents: templates.render(COMPOSE_TEMPLATE, &context)?,
        },
        RenderedFile {
            path: paths::NGINX_CONF,
            contents: templates.render(NGINX_TEMPLATE, &context)?,
        },
    ])
}

/// nginx.conf for a swarm stack (issue 21): `upstream` is `tasks.<api service>`, which
/// Docker's DNS answers with every API task, re-resolved each second. With
/// `acme_thumbprint` (the base64url RFC 7638 thumbprint of the stack's ACME account key),
/// port 80 answers any HTTP-01 token as `TOKEN.THUMBPRINT` instead of serving the webroot.
pub fn render_swarm_proxy(
    config: &StackConfig,
    templates: &Templates,
    upstream: &Upstream,
    acme_thumbprint: Option<&str>,
) -> Result<String> {
    let mut context = StackContext::new(config, upstream)?;
    context.resolver_valid = "1s";
    if let Some(thumbprint) = acme_thumbprint {
        // A SHA-256 in base64url is 43 characters; it is pasted into a quoted string.
        if thumbprint.len() != 43
            || !thumbprint
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            bail!("{thumbprint:?} is not an ACME account key thumbprint (43 base64url characters)");
        }
        context.acme_thumbprint = Some(thumbprint.to_string());
    }
    templates.render(NGINX_TEMPLATE, &context)
}

/// Renders a new `.env.production` from `(KEY, value)` pairs (see
/// [`crate::config::stack::init_values`]); values are quoted for the env-file syntax.
pub fn render_env(templates: &Templates, values: &[(&'static str, String)]) -> Result<String> {
    let context: std::collections::BTreeMap<&str, String> = values
        .iter()
        .map(|(k, v)| (*k, crate::config::envfile::quote(v)))
        .collect();
    templates.render(ENV_TEMPLATE, context)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::domain;
    use crate::config::stack::init_values;
    use crate::config::{envfile, RawSettings};

    const SECRET: &str = "5f2b7c1e9a4d3b8f6e0a1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f";

    /// The fixed config the exact-output tests render: what `elior init example.com
    /// --email ops@example.com` writes, with a fixed secret.
    pub(crate) fn fixture_env() -> String {
        let d = domain::parse("example.com").unwrap();
        render_env(
            &Templates::embedded(),
            &init_values(&d, Some("ops@example.com"), SECRET),
        )
        .unwrap()
    }

    /// Settings from env-file text; a key appended again overrides (the tests append
    /// the change they make to the fixture file), which a real file would refuse.
    fn config_from(text: &str) -> StackConfig {
        let mut raw = RawSettings::default();
        for line in text.lines() {
            raw.overlay(
                envfile::parse(line)
                    .unwrap()
                    .into_iter()
                    .map(|e| (e.key, e.value)),
            );
        }
        StackConfig::from_raw(&raw).unwrap()
    }

    fn rendered(text: &str) -> Vec<RenderedFile> {
        let config = config_from(text);
        render_stack(&config, &Templates::embedded(), &Upstream::service(&config)).unwrap()
    }

    /// Compares with a golden file under src/plan/testdata; `ELIOR_BLESS=1` rewrites it.
    fn assert_golden(name: &str, actual: &str) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/plan/testdata")
            .join(name);
        if std::env::var_os("ELIOR_BLESS").is_some() {
            std::fs::write(&path, actual).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        if expected != actual {
            let diff = similar::TextDiff::from_lines(expected.as_str(), actual)
                .unified_diff()
                .header(name, "rendered")
                .to_string();
            panic!("{name} differs from the golden file (ELIOR_BLESS=1 to accept):\n{diff}");
        }
    }

    #[test]
    fn env_file_matches_golden() {
        assert_golden("env.production", &fixture_env());
    }

    #[test]
    fn stack_files_match_golden() {
        let files = rendered(&fixture_env());
        assert_eq!(files[0].path, "docker-compose.prod.yml");
        assert_golden("docker-compose.prod.yml", &files[0].contents);
        assert_eq!(files[1].path, "nginx/nginx.conf");
        assert_golden("nginx.conf", &files[1].contents);
    }

    #[test]
    fn settings_change_exactly_what_they_should() {
        let base = fixture_env();
        let before = rendered(&base);
        let changed = rendered(&format!(
            "{base}HTTPS_PORT=8443\nHSTS_PRELOAD=true\nMAX_DOCUMENT_SIZE=41943040\nAPI_IMAGE=elior-api:v2\n"
        ));
        let diff = |i: usize| {
            similar::TextDiff::from_lines(&before[i].contents, &changed[i].contents)
                .iter_all_changes()
                .filter(|c| c.tag() == similar::ChangeTag::Insert)
                .map(|c| c.value().trim().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(diff(0), vec!["image: \"elior-api:v2\"", "- \"8443:443\""]);
        let nginx = diff(1);
        assert!(nginx.contains(&"return 301 https://example.com:8443$request_uri;".to_string()));
        assert!(nginx.contains(&"client_max_body_size 42991616;".to_string()));
        assert!(nginx
            .iter()
            .any(|l| l.contains("max-age=63072000; includeSubDomains; preload")));
        assert!(nginx.iter().any(|l| l.contains("wss://example.com:8443")));
    }

    #[test]
    fn upstream_is_a_template_variable() {
        let config = config_from(&fixture_env());
        let blue = Upstream::new("elior-api-blue", 8000).unwrap();
        let files = render_stack(&config, &Templates::embedded(), &blue).unwrap();
        assert!(files[1]
            .contents
            .contains("set $elior_api elior-api-blue:8000;"));
        assert!(Upstream::new("api;evil", 80).is_err());
        assert!(Upstream::new("", 80).is_err());
    }

    /// Swarm mode with ACME (issue 21): the webroot location gives way to a stateless
    /// answer carrying the account thumbprint, and nothing else changes.
    #[test]
    fn swarm_proxy_with_a_thumbprint_answers_challenges_statelessly() {
        let config = config_from(&fixture_env());
        let upstream = Upstream::new("tasks.elior-x-api", 8000).unwrap();
        let thumbprint = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
        let render = |t| render_swarm_proxy(&config, &Templates::embedded(), &upstream, t).unwrap();
        let (without, with) = (render(None), render(Some(thumbprint)));
        let port_80 = |conf: &str| -> String {
            let start = conf.find("    server {\n        listen 80").unwrap();
            let end = start + conf[start..].find("\n    }\n").unwrap();
            conf[start..end].to_string()
        };
        let headers = "            add_header X-Frame-Options \"DENY\" always;
            add_header X-Content-Type-Options \"nosniff\" always;
            add_header Referrer-Policy \"strict-origin-when-cross-origin\" always;
            add_header Permissions-Policy \"camera=(self), microphone=(), geolocation=(), payment=(), usb=()\" always;
            add_header Content-Security-Policy \"default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self' wss://example.com; frame-ancestors 'none'; base-uri 'self'; form-action 'self'; object-src 'none'\" always;";
        assert_eq!(
            port_80(&with),
            format!(
                r#"    server {{
        listen 80 default_server;
        server_name _;

        # Swarm mode (issue 21): HTTP-01 answered statelessly, so every nginx task on every
        # node answers whatever token the CA asks for, with no challenge file to copy. The
        # answer is TOKEN.THUMBPRINT (RFC 8555 section 8.3), and the thumbprint of the ACME
        # account key (RFC 7638) is public. Tokens are base64url; anything else is a 404.
        location ~ "^/\.well-known/acme-challenge/([-_A-Za-z0-9]+)$" {{
            default_type text/plain;
{headers}
            return 200 "$1.NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
        }}

        # A plain prefix (not ^~), so the regex above is still looked at.
        location /.well-known/acme-challenge/ {{
            return 404;
{headers}
        }}

        location / {{
            return 301 https://example.com$request_uri;
{headers}
        }}"#
            )
        );
        // Nothing else differs from the config without a thumbprint.
        assert_eq!(
            with.replace(&port_80(&with), ""),
            without.replace(&port_80(&without), "")
        );
        assert!(port_80(&without).contains("root /etc/nginx/elior/acme;"));
        assert!(render_swarm_proxy(
            &config,
            &Templates::embedded(),
            &upstream,
            Some("x\"; return 200 \"pwned")
        )
        .is_err());
    }

    #[test]
    fn custom_template_errors_name_the_template() {
        let mut templates = Templates::embedded();
        templates
            .set(NGINX_TEMPLATE, "{{ no_such_value }}".into())
            .unwrap();
        let config = config_from(&fixture_env());
        let err = render_stack(&config, &templates, &Upstream::service(&config)).unwrap_err();
        assert!(format!("{err:#}").contains("nginx.conf.j2"), "{err:#}");
        assert!(templates.set("other.j2", String::new()).is_err());
    }
}
