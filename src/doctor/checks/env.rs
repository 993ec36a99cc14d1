//! .env.production: present, parses, valid as `render` validates it, mode 0600, https
//! CORS origins in production, and a real JWT_SECRET (long enough, not an example's
//! placeholder). The file is read once per run, by [`load`], for every check.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde::Serialize;

use super::{Check, CheckInfo, Group};
use crate::config::stack::StackConfig;
use crate::config::{envfile, RawSettings};
use crate::doctor::facts::Stack;
use crate::doctor::sources::Sources;
use crate::doctor::Finding;

pub struct Env;

#[derive(Debug, Clone, Default, Serialize)]
pub struct EnvFacts {
    pub path: String,
    pub exists: bool,
    /// Permission bits, such as 0o600.
    pub mode: Option<u32>,
    pub read_error: Option<String>,
    pub parse_error: Option<String>,
    pub validation_error: Option<String>,
    pub production: bool,
    /// Length of JWT_SECRET in bytes (the HMAC key length), never its value.
    pub jwt_secret_bytes: Option<usize>,
    pub jwt_secret_placeholder: bool,
    pub cors_origins: Vec<String>,
    pub warnings: Vec<String>,
}

impl Check for Env {
    const INFO: CheckInfo = CheckInfo {
        name: "env",
        group: Group::Configuration,
        about: ".env.production is present, parses, is valid, mode 0600, with a real secret",
    };
    type Facts = EnvFacts;

    async fn gather(sources: &Sources) -> EnvFacts {
        sources.env.clone()
    }

    fn judge(stack: &Stack, f: &EnvFacts) -> Vec<Finding> {
        let path = &f.path;
        if !f.exists {
            return vec![Finding::failure(
                format!("{path} does not exist"),
                format!("elior init {} --dir {}", stack.domain_arg(), stack.dir),
            )];
        }
        if let Some(e) = &f.read_error {
            return vec![Finding::failure(
                format!("{path} cannot be read: {e}"),
                format!("check its owner and mode: ls -l {path}"),
            )];
        }
        if let Some(e) = &f.parse_error {
            return vec![Finding::failure(
                format!("{path} does not parse: {e}"),
                format!("fix that line in {path}; each line is KEY=VALUE or a # comment"),
            )];
        }
        let mut out = Vec::new();
        let secret_fix = format!(
            "sed -i \"s/^JWT_SECRET=.*/JWT_SECRET=$(openssl rand -hex 32)/\" {path}  (logs everyone out)"
        );
        let mut secret_reported = false;
        match f.jwt_secret_bytes {
            None => {}
            Some(_) if f.jwt_secret_placeholder => {
                secret_reported = true;
                out.push(Finding::failure(
                    "JWT_SECRET is a placeholder from an example file",
                    secret_fix.clone(),
                ));
            }
            Some(n) if n < crate::config::MIN_SECRET_LEN => {
                secret_reported = true;
                out.push(Finding::failure(
                    format!(
                        "JWT_SECRET is {n} bytes; it needs at least {}",
                        crate::config::MIN_SECRET_LEN
                    ),
                    secret_fix.clone(),
                ));
            }
            Some(_) => {}
        }
        if f.production {
            let plain: Vec<&str> = f
                .cors_origins
                .iter()
                .map(String::as_str)
                .filter(|o| !o.starts_with("https://"))
                .collect();
            if !plain.is_empty() {
                out.push(Finding::failure(
                    format!(
                        "CORS_ORIGINS allows {} in production; only https origins are safe",
                        plain.join(", ")
                    ),
                    format!("set CORS_ORIGINS=https://{} in {path}", stack.domain_arg()),
                ));
            }
        }
        if let Some(e) = &f.validation_error {
            // Validation refuses what the findings above already name; say it once.
            let already_named = (secret_reported && e.starts_with("JWT_SECRET"))
                || (e.starts_with("CORS_ORIGINS") && !out.is_empty());
            if !already_named {
                out.push(Finding::failure(
                    format!("invalid settings: {}", e.lines().next().unwrap_or(e)),
                    e.lines().nth(1).map(str::to_string).unwrap_or_else(|| {
                        format!(
                            "correct the value in {path}, then run `elior render --dir {}`",
                            stack.dir
                        )
                    }),
                ));
            }
        }
        if let Some(mode) = f.mode.filter(|m| m & 0o077 != 0) {
            out.push(Finding::failure(
                format!("{path} is mode {mode:04o}: other users can read JWT_SECRET"),
                format!("chmod 600 {path}"),
            ));
        }
        for w in &f.warnings {
            out.push(Finding::warning(
                w.lines().next().unwrap_or(w).to_string(),
                w.lines()
                    .nth(1)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("edit {path}")),
            ));
        }
        if out.is_empty() {
            out.push(Finding::ok(format!(
                "{path} is valid ({}), mode 0600, JWT_SECRET {} bytes",
                if f.production {
                    "production"
                } else {
                    "development"
                },
                f.jwt_secret_bytes.unwrap_or(0)
            )));
        }
        out
    }
}

/// Reads and validates the env file, describing it without keeping the secret; with the
/// raw settings when they parse and the validated ones when they are valid.
pub fn load(dir: &Path) -> (EnvFacts, Option<RawSettings>, Option<StackConfig>) {
    let path = crate::config::stack::env_file_path(dir);
    let mut f = EnvFacts {
        path: path.display().to_string(),
        exists: path.exists(),
        ..Default::default()
    };
    if !f.exists {
        return (f, None, None);
    }
    f.mode = std::fs::metadata(&path)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777);
    // The settings every command gets (environment over file), through the one loader.
    let raw = match crate::config::model::settings(dir) {
        Ok(r) => r,
        Err(e) => {
            let io = e
                .chain()
                .any(|c| c.downcast_ref::<std::io::Error>().is_some());
            if io {
                f.read_error = Some(format!("{e:#}"));
            } else {
                // The syntax error itself ("line 3: ..."), as `envfile` words it.
                f.parse_error = Some(
                    e.chain()
                        .find_map(|c| c.downcast_ref::<envfile::SyntaxError>())
                        .map_or_else(|| format!("{e:#}"), |s| s.to_string()),
                );
            }
            return (f, None, None);
        }
    };
    f.production = raw.get("ENVIRONMENT").is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "production" | "prod"
        )
    });
    if let Some(secret) = raw
        .get("JWT_SECRET")
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        f.jwt_secret_bytes = Some(secret.len());
        f.jwt_secret_placeholder = crate::config::is_placeholder_secret(secret);
    }
    f.cors_origins = raw
        .get("CORS_ORIGINS")
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let config = match StackConfig::from_raw(&raw) {
        Ok(c) => {
            f.warnings = c.warnings.clone();
            Some(c)
        }
        Err(e) => {
            f.validation_error = Some(format!("{e:#}"));
            None
        }
    };
    (f, Some(raw), config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::checks::{statuses, test_stack};
    use crate::doctor::Status;

    fn good_env() -> EnvFacts {
        EnvFacts {
            path: "/srv/elior/.env.production".into(),
            exists: true,
            mode: Some(0o600),
            production: true,
            jwt_secret_bytes: Some(64),
            cors_origins: vec!["https://fit.example.com".into()],
            ..Default::default()
        }
    }

    fn judge(f: EnvFacts) -> Vec<Finding> {
        Env::judge(&test_stack(), &f)
    }

    #[test]
    fn env_rules() {
        assert_eq!(statuses(&judge(good_env())), vec![Status::Ok]);
        let missing = judge(EnvFacts {
            exists: false,
            ..good_env()
        });
        assert_eq!(
            missing[0].fix.as_deref(),
            Some("elior init fit.example.com --dir /srv/elior")
        );
        let open = judge(EnvFacts {
            mode: Some(0o644),
            ..good_env()
        });
        assert_eq!(statuses(&open), vec![Status::Failure]);
        assert_eq!(
            open[0].fix.as_deref(),
            Some("chmod 600 /srv/elior/.env.production")
        );
        // The placeholder is named once, even though validation also refuses it.
        let placeholder = judge(EnvFacts {
            jwt_secret_placeholder: true,
            validation_error: Some("JWT_SECRET (x line 4): is the example placeholder".into()),
            ..good_env()
        });
        assert_eq!(placeholder.len(), 1);
        assert!(placeholder[0].finding.contains("placeholder"));
        assert!(placeholder[0]
            .fix
            .as_deref()
            .unwrap()
            .contains("openssl rand -hex 32"));
        let short = judge(EnvFacts {
            jwt_secret_bytes: Some(10),
            ..good_env()
        });
        assert!(short[0].finding.contains("10 bytes"));
        let cors = judge(EnvFacts {
            cors_origins: vec!["http://fit.example.com".into()],
            validation_error: Some("CORS_ORIGINS (x line 3): not https".into()),
            ..good_env()
        });
        assert_eq!(cors.len(), 1);
        assert!(cors[0].finding.contains("http://fit.example.com"));
        let broken = judge(EnvFacts {
            parse_error: Some("line 3: no '='".into()),
            ..good_env()
        });
        assert!(broken[0].finding.contains("line 3"));
    }

    // Every JWT_SECRET of the original's example files is a placeholder (issue 14).
    #[test]
    fn the_originals_example_secrets_are_placeholders() {
        for example in [
            "your-new-secure-jwt-secret-here-32-chars-minimum",
            "your-super-secure-secret-key-here-minimum-32-characters",
            "your-secret-key-here",
            "your_secure_password_here",
            "CHANGE_ME_0123456789abcdef0123456789",
        ] {
            assert!(crate::config::is_placeholder_secret(example), "{example}");
        }
        for real in [
            "3f1c9a7e5b2d4c6a8e0f1b3d5c7a9e2f4b6d8c0a1e3f5b7d9c2a4e6f8b0d1c3a",
            "q8VZ0mB3xK7pL2nR5tW9yC4fH6jD1gS0aE8uI3oP7kM=",
        ] {
            assert!(!crate::config::is_placeholder_secret(real), "{real}");
        }
    }
}
