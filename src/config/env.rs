//! The environment: `MCP_AUTHZ_*` variables override the file's settings, each read
//! as its setting's [`ValueKind`].

use std::collections::BTreeMap;

use super::{CONFIG_ENV, ConfigError, Setting, ValueKind};

/// Apply the `MCP_AUTHZ_*` variables of `env` to `table` (the file's settings).
pub(super) fn apply(
    table: &mut toml::Table,
    env: &BTreeMap<String, String>,
    origins: &mut BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    for (name, value) in env {
        if !name.starts_with("MCP_AUTHZ_") || name == CONFIG_ENV {
            continue;
        }
        let Some(setting) = Setting::by_env(name) else {
            return Err(ConfigError::UnknownEnv(name.clone()));
        };
        let origin = format!("environment variable `{name}`");
        let value = setting
            .value_of(value)
            .map_err(|reason| ConfigError::Value {
                key: setting.key.into(),
                origin: origin.clone(),
                reason,
            })?;
        let (section, key) = match setting.key.split_once('.') {
            Some((section, key)) => {
                let entry = table
                    .entry(section)
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                match entry {
                    toml::Value::Table(t) => (t, key),
                    // The file was checked against the structure: a section is a table.
                    _ => return Err(ConfigError::UnknownEnv(name.clone())),
                }
            }
            None => (&mut *table, setting.key),
        };
        section.insert(key.to_owned(), value);
        origins.insert(setting.key.into(), origin);
    }
    Ok(())
}

impl Setting {
    /// The TOML value of `text`, read as this setting's kind; the error is the reason.
    pub(super) fn value_of(&self, text: &str) -> Result<toml::Value, String> {
        Ok(match self.kind {
            ValueKind::Text | ValueKind::Path => toml::Value::String(text.to_owned()),
            ValueKind::Number => {
                let n: u64 = text
                    .trim()
                    .parse()
                    .map_err(|_| format!("`{text}` is not a whole number"))?;
                let n = i64::try_from(n).map_err(|_| format!("`{text}` is too large"))?;
                toml::Value::Integer(n)
            }
            ValueKind::Fraction => {
                let f: f64 = text
                    .trim()
                    .parse()
                    .map_err(|_| format!("`{text}` is not a number such as `0.25`"))?;
                toml::Value::Float(f)
            }
            ValueKind::Bool => toml::Value::Boolean(match text.trim() {
                "true" | "1" => true,
                "false" | "0" => false,
                other => return Err(format!("`{other}` is not `true` or `false`")),
            }),
            ValueKind::List => {
                toml::Value::Array(list(text).into_iter().map(toml::Value::String).collect())
            }
            ValueKind::OneOf(words) => {
                let t = text.trim();
                if !words.contains(&t) {
                    let words: Vec<String> = words.iter().map(|w| format!("`{w}`")).collect();
                    return Err(format!("`{text}` is not one of {}", words.join(", ")));
                }
                toml::Value::String(t.to_owned())
            }
            ValueKind::FileOnly => {
                return Err("is set in the config file only".into());
            }
        })
    }
}

/// A comma-separated list.
fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}
