//! `Module`: one driver instance bound to one device (or to none, for logic
//! modules), and the device endpoint parsed from its `uri`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::validate::{Checker, Invalid};
use super::{Doc, Kind, ValidationContext};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Module {
    pub id: Uuid,
    pub name: String,
    /// A file in `modules/`, e.g. `pjlink.lua`.
    pub driver: String,
    /// Device address, e.g. `tcp://10.0.0.5:4352`; absent for logic modules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub settings: Map<String, Value>,
    #[serde(default = "default_true")]
    pub enabled: bool,
}

fn default_true() -> bool {
    true
}

/// Where a module's device is, parsed from `uri`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A logic module: no device.
    None,
    /// `tcp://host:port`.
    Tcp { host: String, port: u16 },
}

impl Endpoint {
    /// Parses a module uri. Only `tcp://host:port` is known today; the error
    /// says what was expected.
    pub fn parse(uri: Option<&str>) -> Result<Endpoint, String> {
        let Some(uri) = uri else {
            return Ok(Endpoint::None);
        };
        let Some((scheme, rest)) = uri.split_once("://") else {
            return Err(format!("'{uri}' is not a uri (expected tcp://host:port)"));
        };
        match scheme {
            "tcp" => {
                let rest = rest.trim_end_matches('/');
                let Some((host, port)) = rest.rsplit_once(':') else {
                    return Err(format!("'{uri}' has no port (expected tcp://host:port)"));
                };
                let host = host.trim_start_matches('[').trim_end_matches(']');
                if host.is_empty() || host.contains('/') {
                    return Err(format!("'{uri}' has no valid host"));
                }
                let port: u16 = port
                    .parse()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("'{uri}' has an invalid port (1-65535)"))?;
                Ok(Endpoint::Tcp {
                    host: host.to_owned(),
                    port,
                })
            }
            other => Err(format!(
                "unknown uri scheme '{other}' in '{uri}' (known: tcp)"
            )),
        }
    }
}

impl Module {
    pub fn endpoint(&self) -> Result<Endpoint, String> {
        Endpoint::parse(self.uri.as_deref())
    }
}

impl Doc for Module {
    super::doc_identity!(Kind::Module);

    fn settings(&self) -> Option<&Map<String, Value>> {
        Some(&self.settings)
    }

    fn settings_mut(&mut self) -> Option<(&mut Map<String, Value>, Option<&str>)> {
        Some((&mut self.settings, Some(&self.driver)))
    }

    fn validate(&self, ctx: &ValidationContext) -> Result<(), Invalid> {
        let mut c = Checker::new(Self::KIND, self.id);
        c.name("name", &self.name);
        if let Err(problem) = check_driver_name(&self.driver) {
            c.fail("driver", problem);
        } else if !ctx.has_driver(&self.driver) {
            c.fail(
                "driver",
                format!("'{}' does not exist in modules/", self.driver),
            );
        }
        if let Err(e) = self.endpoint() {
            c.fail("uri", e);
        }
        c.finish()
    }
}

/// Checks a driver name: a `.lua` file directly inside `modules/`, so that
/// joining it to the modules directory can never reach another file. The one
/// rule, kept by document validation and by the runtime before it reads a
/// driver. The error says what is wrong, for a field error.
pub fn check_driver_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if name.contains('/') || name.contains('\\') || name.starts_with('.') {
        return Err(format!("'{name}' must be a file name inside modules/"));
    }
    if !name.ends_with(".lua") {
        return Err(format!("'{name}' must name a .lua file"));
    }
    Ok(())
}
