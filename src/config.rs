//! Configuration: defaults, then a TOML file, then `TOLLGATE_*` environment
//! variables, then command-line flags, validated once into [`Config`]. The
//! file and environment shapes are separate from the validated struct.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use tollgate_backend::mail::{SmtpConfig, SmtpTls};
use tollgate_gateway::config::GatewayFile;
use tollgate_identity::plans::{BillingPeriod, Catalog, LimitName, Limits, Plan};

/// The TOML file, every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub public_url: Option<String>,
    pub log_format: Option<String>,
    pub policies_dir: Option<PathBuf>,
    pub metrics_listen: Option<String>,
    /// Whether `up` runs the demo CRM behind its gateway.
    pub demo: Option<bool>,
    #[serde(default)]
    pub auth: AuthFile,
    /// The gateway's product upstreams, routes, trusted issuers and tenant
    /// resolution (the format of a routes file).
    #[serde(default)]
    pub gateway: GatewayFile,
    /// Plans added to the built-in catalog (or replacing a built-in plan of
    /// the same name).
    #[serde(default)]
    pub plans: BTreeMap<String, PlanFile>,
    /// The SMTP relay that delivers the outbox.
    #[serde(default)]
    pub smtp: SmtpFile,
}

/// `[smtp]`: without `host`, mail stays in the outbox.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpFile {
    pub host: Option<String>,
    pub port: Option<u16>,
    /// `starttls` (default), `tls` or `none` (a loopback relay only).
    pub tls: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub from: Option<String>,
}

impl SmtpFile {
    /// The relay's settings, with `TOLLGATE_SMTP_*` over the file's.
    fn validate(self, env: &impl Fn(&str) -> Option<String>) -> Result<Option<SmtpConfig>, ConfigError> {
        let host = env("TOLLGATE_SMTP_HOST").or(self.host);
        let username = env("TOLLGATE_SMTP_USERNAME").or(self.username);
        let password = env("TOLLGATE_SMTP_PASSWORD").or(self.password);
        let from = env("TOLLGATE_SMTP_FROM").or(self.from);
        let tls_text = env("TOLLGATE_SMTP_TLS").or(self.tls);
        let port_text = env("TOLLGATE_SMTP_PORT").or(self.port.map(|p| p.to_string()));
        let Some(host) = host.filter(|h| !h.trim().is_empty()) else {
            if username.is_some() || password.is_some() || from.is_some() || tls_text.is_some() || port_text.is_some() {
                return Err(invalid("smtp.host", "is required when any other `[smtp]` setting is given"));
            }
            return Ok(None);
        };
        let tls = match tls_text.as_deref() {
            None | Some("starttls") => SmtpTls::StartTls,
            Some("tls") => SmtpTls::Tls,
            Some("none") => SmtpTls::None,
            Some(other) => return Err(invalid("smtp.tls", format!("`{other}` is not `starttls`, `tls` or `none`"))),
        };
        if tls == SmtpTls::None && !tollgate_backend::sso::is_loopback_host(&host) {
            return Err(invalid(
                "smtp.tls",
                "`none` sends mail and credentials in clear: only for a relay on a loopback address",
            ));
        }
        let port = match port_text {
            Some(text) => text
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| invalid("smtp.port", format!("`{text}` is not a port")))?,
            None => match tls {
                SmtpTls::StartTls => 587,
                SmtpTls::Tls => 465,
                SmtpTls::None => 25,
            },
        };
        if username.is_some() != password.is_some() {
            return Err(invalid("smtp.username", "`username` and `password` go together"));
        }
        let from = from.ok_or_else(|| invalid("smtp.from", "is required: the sender of Tollgate's mail"))?;
        if !from.contains('@') {
            return Err(invalid(
                "smtp.from",
                format!("`{from}` is not a sender like `Tollgate <no-reply@example.com>`"),
            ));
        }
        Ok(Some(SmtpConfig { host, port, tls, username, password, from }))
    }
}

/// A plan as written in the config file; an absent limit is unlimited.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    pub display_name: String,
    /// The price per billing period in the currency's minor unit (cents).
    #[serde(default)]
    pub price_minor: u64,
    pub currency: Option<String>,
    /// `month` (the default) or `year`.
    pub billing_period: Option<String>,
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default)]
    pub limits: PlanLimitsFile,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanLimitsFile {
    pub max_members: Option<u64>,
    pub max_api_keys: Option<u64>,
    pub api_calls_per_month: Option<u64>,
    pub requests_per_second: Option<u64>,
    pub requests_per_second_per_key: Option<u64>,
}

impl PlanFile {
    fn plan(self, name: String) -> Result<Plan, ConfigError> {
        let period = match self.billing_period.as_deref() {
            None => BillingPeriod::Month,
            Some(text) => BillingPeriod::parse(text).ok_or_else(|| {
                invalid("plans", format!("billing period `{text}` of plan `{name}` is not `month` or `year`"))
            })?,
        };
        let mut limits = Limits::default();
        let l = self.limits;
        for (limit, value) in [
            (LimitName::MaxMembers, l.max_members),
            (LimitName::MaxApiKeys, l.max_api_keys),
            (LimitName::ApiCallsPerMonth, l.api_calls_per_month),
            (LimitName::RequestsPerSecond, l.requests_per_second),
            (LimitName::RequestsPerSecondPerKey, l.requests_per_second_per_key),
        ] {
            limits.set(limit, value);
        }
        Ok(Plan {
            name,
            display_name: self.display_name,
            price_minor: self.price_minor,
            currency: self.currency.unwrap_or_else(|| "USD".into()),
            period,
            features: self.features.into_iter().collect(),
            limits,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    pub access_ttl_secs: Option<i64>,
    pub refresh_ttl_secs: Option<i64>,
    pub invitation_ttl_secs: Option<i64>,
    pub secure_cookies: Option<bool>,
    pub key_reload_secs: Option<u64>,
    /// The key sealing secrets the platform reads back (TOTP seeds):
    /// `<data_dir>/secrets.key`, made on first start, when not set.
    pub secrets_key_file: Option<PathBuf>,
    /// Whether SSO connections may name a plain-http issuer on a loopback
    /// address (an identity provider run locally for tests); default false.
    pub sso_allow_http_loopback: Option<bool>,
}

/// Values given on the command line, which win over everything else.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub database_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// `sqlite:` or `postgres://`; never logged (it may hold a password).
    pub database_url: String,
    /// The public base URL, the issuer of our tokens; derived from the bound
    /// address when not set.
    pub public_url: Option<String>,
    pub log_format: LogFormat,
    pub policies_dir: Option<PathBuf>,
    /// The admin address serving `/metrics`.
    pub metrics_listen: SocketAddr,
    pub access_ttl_secs: i64,
    pub refresh_ttl_secs: i64,
    pub invitation_ttl_secs: i64,
    pub secure_cookies: bool,
    pub key_reload_secs: u64,
    /// Where the secrets-sealing key is (see `AuthFile::secrets_key_file`).
    pub secrets_key_file: Option<PathBuf>,
    /// See `AuthFile::sso_allow_http_loopback`.
    pub sso_allow_http_loopback: bool,
    /// The SMTP relay delivering the outbox, if any.
    pub smtp: Option<SmtpConfig>,
    /// Whether `up` runs the demo CRM.
    pub demo: bool,
    /// The gateway's own configuration, before the platform's routes join it.
    pub gateway: GatewayFile,
    /// The plans tenants can be on.
    pub catalog: Arc<Catalog>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file `{path}`: {message}")]
    Read { path: String, message: String },
    #[error("invalid config file `{path}`: {message}")]
    Parse { path: String, message: String },
    #[error("invalid `{name}`: {message}")]
    Invalid { name: &'static str, message: String },
}

fn invalid(name: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { name, message: message.into() }
}

impl Config {
    /// Loads and validates: `file` (when given), then the environment `env`
    /// (a lookup, so tests need not touch the process environment), then `cli`.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        cli: &Overrides,
    ) -> Result<Self, ConfigError> {
        let file_config = match file {
            None => FileConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::Read { path: path.display().to_string(), message: e.to_string() })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.display().to_string(),
                    message: e.message().to_owned(),
                })?
            }
        };
        let pick = |cli: Option<String>, var: &str, file: Option<String>| cli.or_else(|| env(var)).or(file);
        let parse_num = |name: &'static str, var: &str, file: Option<i64>| -> Result<Option<i64>, ConfigError> {
            match env(var) {
                Some(v) => v.parse().map(Some).map_err(|_| invalid(name, format!("`{v}` is not a number"))),
                None => Ok(file),
            }
        };
        let data_dir = cli
            .data_dir
            .clone()
            .or_else(|| env("TOLLGATE_DATA_DIR").map(PathBuf::from))
            .or(file_config.data_dir)
            .unwrap_or_else(|| PathBuf::from("./data"));
        let listen_text =
            pick(cli.listen.clone(), "TOLLGATE_LISTEN", file_config.listen).unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen: SocketAddr = listen_text
            .parse()
            .map_err(|_| invalid("listen", format!("`{listen_text}` is not an address like 127.0.0.1:8080")))?;
        let database_url = pick(cli.database_url.clone(), "TOLLGATE_DATABASE_URL", file_config.database_url)
            .unwrap_or_else(|| format!("sqlite:{}", data_dir.join("tollgate.db").display()));
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(invalid("database_url", "must start with `sqlite:` or `postgres://`"));
        }
        let public_url = pick(None, "TOLLGATE_PUBLIC_URL", file_config.public_url);
        if let Some(url) = &public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(invalid("public_url", format!("`{url}` must start with http:// or https://")));
        }
        let log_format = match pick(None, "TOLLGATE_LOG_FORMAT", file_config.log_format).as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("pretty") => LogFormat::Pretty,
            Some(other) => return Err(invalid("log_format", format!("`{other}` is not `json` or `pretty`"))),
        };
        let policies_dir = env("TOLLGATE_POLICIES_DIR").map(PathBuf::from).or(file_config.policies_dir);
        let metrics_text = pick(None, "TOLLGATE_METRICS_LISTEN", file_config.metrics_listen)
            .unwrap_or_else(|| "127.0.0.1:9464".into());
        let metrics_listen: SocketAddr = metrics_text.parse().map_err(|_| {
            invalid("metrics_listen", format!("`{metrics_text}` is not an address like 127.0.0.1:9464"))
        })?;
        let auth = file_config.auth;
        let access =
            parse_num("auth.access_ttl_secs", "TOLLGATE_ACCESS_TTL_SECS", auth.access_ttl_secs)?.unwrap_or(900);
        if !(60..=3600).contains(&access) {
            return Err(invalid("auth.access_ttl_secs", "must be between 60 and 3600"));
        }
        let refresh = parse_num("auth.refresh_ttl_secs", "TOLLGATE_REFRESH_TTL_SECS", auth.refresh_ttl_secs)?
            .unwrap_or(30 * 86_400);
        if !(access..=365 * 86_400).contains(&refresh) {
            return Err(invalid("auth.refresh_ttl_secs", "must be at least the access TTL and at most a year"));
        }
        let invitation =
            parse_num("auth.invitation_ttl_secs", "TOLLGATE_INVITATION_TTL_SECS", auth.invitation_ttl_secs)?
                .unwrap_or(7 * 86_400);
        if !(3600..=30 * 86_400).contains(&invitation) {
            return Err(invalid("auth.invitation_ttl_secs", "must be between an hour and 30 days"));
        }
        let secure_cookies = match env("TOLLGATE_SECURE_COOKIES").as_deref() {
            Some("true") => true,
            Some("false") => false,
            Some(other) => return Err(invalid("auth.secure_cookies", format!("`{other}` is not true or false"))),
            None => auth.secure_cookies.unwrap_or(true),
        };
        let key_reload =
            parse_num("auth.key_reload_secs", "TOLLGATE_KEY_RELOAD_SECS", auth.key_reload_secs.map(|v| v as i64))?
                .unwrap_or(30);
        if !(1..=3600).contains(&key_reload) {
            return Err(invalid("auth.key_reload_secs", "must be between 1 and 3600"));
        }
        let secrets_key_file = env("TOLLGATE_SECRETS_KEY_FILE").map(PathBuf::from).or(auth.secrets_key_file);
        let sso_allow_http_loopback = match env("TOLLGATE_SSO_ALLOW_HTTP_LOOPBACK").as_deref() {
            Some("true") => true,
            Some("false") => false,
            Some(other) => {
                return Err(invalid("auth.sso_allow_http_loopback", format!("`{other}` is not true or false")));
            }
            None => auth.sso_allow_http_loopback.unwrap_or(false),
        };
        let demo = match env("TOLLGATE_DEMO").as_deref() {
            Some("true") => true,
            Some("false") => false,
            Some(other) => return Err(invalid("demo", format!("`{other}` is not true or false"))),
            None => file_config.demo.unwrap_or(true),
        };
        let smtp = file_config.smtp.validate(&env)?;
        let plans = file_config.plans.into_iter().map(|(name, plan)| plan.plan(name)).collect::<Result<Vec<_>, _>>()?;
        let catalog = Catalog::with(plans).map_err(|e| invalid("plans", e.to_string()))?;
        Ok(Config {
            catalog: Arc::new(catalog),
            demo,
            gateway: file_config.gateway,
            data_dir,
            listen,
            database_url,
            public_url,
            log_format,
            policies_dir,
            metrics_listen,
            access_ttl_secs: access,
            refresh_ttl_secs: refresh,
            invitation_ttl_secs: invitation,
            secure_cookies,
            secrets_key_file,
            sso_allow_http_loopback,
            smtp,
            key_reload_secs: key_reload as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_run_on_sqlite_under_data() {
        let c = Config::load(None, env_of(&[]), &Overrides::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database_url, "sqlite:./data/tollgate.db");
        assert_eq!(c.access_ttl_secs, 900);
    }

    #[test]
    fn layers_file_then_env_then_cli() {
        let dir = std::env::temp_dir().join(format!("tg-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tollgate.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\ndata_dir = \"/srv/tg\"\n[auth]\naccess_ttl_secs = 600\n\
             secrets_key_file = \"/etc/tg/secrets.key\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&file), env_of(&[]), &Overrides::default()).unwrap();
        assert_eq!((c.listen.port(), c.access_ttl_secs), (9000, 600));
        assert_eq!(c.secrets_key_file.as_deref(), Some(Path::new("/etc/tg/secrets.key")));
        let moved = env_of(&[("TOLLGATE_SECRETS_KEY_FILE", "/run/tg.key")]);
        assert_eq!(
            Config::load(Some(&file), &moved, &Overrides::default()).unwrap().secrets_key_file.as_deref(),
            Some(Path::new("/run/tg.key"))
        );
        assert_eq!(c.database_url, "sqlite:/srv/tg/tollgate.db");
        let env = env_of(&[("TOLLGATE_LISTEN", "127.0.0.1:9100"), ("TOLLGATE_DATABASE_URL", "postgres://u@h/db")]);
        let c = Config::load(Some(&file), &env, &Overrides::default()).unwrap();
        assert_eq!((c.listen.port(), c.database_url.as_str()), (9100, "postgres://u@h/db"));
        let cli = Overrides { listen: Some("127.0.0.1:9200".into()), ..Overrides::default() };
        assert_eq!(Config::load(Some(&file), &env, &cli).unwrap().listen.port(), 9200);
        std::fs::write(&file, "lisen = \"typo\"\n").unwrap();
        let err = Config::load(Some(&file), env_of(&[]), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("unknown field `lisen`"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn smtp_relay_is_validated() {
        let load = |pairs: &[(&str, &str)]| Config::load(None, env_of(pairs), &Overrides::default());
        assert!(load(&[]).unwrap().smtp.is_none(), "no relay: mail stays in the outbox");
        let relay = load(&[
            ("TOLLGATE_SMTP_HOST", "smtp.example.com"),
            ("TOLLGATE_SMTP_USERNAME", "u"),
            ("TOLLGATE_SMTP_PASSWORD", "p"),
            ("TOLLGATE_SMTP_FROM", "Tollgate <no-reply@example.com>"),
        ])
        .unwrap()
        .smtp
        .unwrap();
        assert_eq!((relay.port, relay.tls), (587, SmtpTls::StartTls));
        let implicit = load(&[
            ("TOLLGATE_SMTP_HOST", "smtp.example.com"),
            ("TOLLGATE_SMTP_TLS", "tls"),
            ("TOLLGATE_SMTP_FROM", "a@example.com"),
        ]);
        assert_eq!(implicit.unwrap().smtp.unwrap().port, 465);
        for (pairs, field) in [
            (&[("TOLLGATE_SMTP_FROM", "a@example.com")][..], "smtp.host"),
            (&[("TOLLGATE_SMTP_HOST", "smtp.example.com")][..], "smtp.from"),
            (
                &[
                    ("TOLLGATE_SMTP_HOST", "smtp.example.com"),
                    ("TOLLGATE_SMTP_TLS", "none"),
                    ("TOLLGATE_SMTP_FROM", "a@b.c"),
                ][..],
                "smtp.tls",
            ),
            (
                &[("TOLLGATE_SMTP_HOST", "h.example"), ("TOLLGATE_SMTP_TLS", "ssl"), ("TOLLGATE_SMTP_FROM", "a@b.c")][..],
                "smtp.tls",
            ),
            (
                &[("TOLLGATE_SMTP_HOST", "h.example"), ("TOLLGATE_SMTP_PORT", "0"), ("TOLLGATE_SMTP_FROM", "a@b.c")][..],
                "smtp.port",
            ),
            (
                &[
                    ("TOLLGATE_SMTP_HOST", "h.example"),
                    ("TOLLGATE_SMTP_USERNAME", "u"),
                    ("TOLLGATE_SMTP_FROM", "a@b.c"),
                ][..],
                "smtp.username",
            ),
            (&[("TOLLGATE_SMTP_HOST", "h.example"), ("TOLLGATE_SMTP_FROM", "nobody")][..], "smtp.from"),
        ] {
            let err = load(pairs).unwrap_err();
            assert!(err.to_string().contains(&format!("`{field}`")), "{pairs:?}: {err}");
        }
        let local = load(&[
            ("TOLLGATE_SMTP_HOST", "127.0.0.1"),
            ("TOLLGATE_SMTP_TLS", "none"),
            ("TOLLGATE_SMTP_FROM", "a@b.c"),
        ]);
        assert_eq!(local.unwrap().smtp.unwrap().port, 25, "plain SMTP to a loopback relay");
    }

    #[test]
    fn plans_join_the_built_in_catalog() {
        let dir = std::env::temp_dir().join(format!("tg-config-plans-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tollgate.toml");
        std::fs::write(
            &file,
            "[plans.team]\ndisplay_name = \"Team\"\nprice_minor = 1900\nfeatures = [\"reports\"]\n\
             [plans.team.limits]\nmax_members = 10\n",
        )
        .unwrap();
        let c = Config::load(Some(&file), env_of(&[]), &Overrides::default()).unwrap();
        let team = c.catalog.plan("team").unwrap();
        assert_eq!((team.limits.get(LimitName::MaxMembers), team.limits.get(LimitName::MaxApiKeys)), (Some(10), None));
        assert!(c.catalog.plan("pro").is_some(), "the built-in plans stay");
        std::fs::write(&file, "[plans.team]\ndisplay_name = \"Team\"\nbilling_period = \"week\"\n").unwrap();
        let err = Config::load(Some(&file), env_of(&[]), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("`plans`") && err.to_string().contains("`week`"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn invalid_values_are_named() {
        for (var, value, name) in [
            ("TOLLGATE_LISTEN", "localhost", "listen"),
            ("TOLLGATE_DATABASE_URL", "mysql://x", "database_url"),
            ("TOLLGATE_ACCESS_TTL_SECS", "5", "auth.access_ttl_secs"),
            ("TOLLGATE_ACCESS_TTL_SECS", "soon", "auth.access_ttl_secs"),
            ("TOLLGATE_PUBLIC_URL", "tollgate.example", "public_url"),
            ("TOLLGATE_SECURE_COOKIES", "maybe", "auth.secure_cookies"),
        ] {
            let err = Config::load(None, env_of(&[(var, value)]), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains(&format!("`{name}`")), "{var}={value}: {err}");
        }
    }
}
