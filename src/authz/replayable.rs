//! A [`DecisionRequest`] as JSON and back: the `input` of a decision log record, which
//! `mcp-authz replay` decides again. The one place this form is written and read.
//!
//! ```json
//! {"user":"Mcp::User::\"alice\"","application":"Mcp::Application::\"corpassist\"",
//!  "action":"Mcp::Action::\"tools/call\"","resource":"Mcp::Tool::\"docs/get_document\"",
//!  "server":"Mcp::Server::\"docs\"",
//!  "context":{"arguments":{"document_id":"titan/q1-strategy"}},
//!  "token":{"scopes":["docs.read"],"claims":{"department":"engineering"}},
//!  "entities":[{"uid":"Mcp::User::\"alice\"","parents":["Mcp::Group::\"engineering\""],"attrs":{}}]}
//! ```
//!
//! Uids are Cedar uid strings, as the decision log writes them. `user`, `application`
//! and `server` are absent when the request has none, `token` when no verified token
//! brought scopes and claims, `entities` when the request brings no entity data of its
//! own. `context` is the request's own context ([`DecisionRequest::context`]), which
//! never holds what the service fills in.
//!
//! A record may lack the request's arguments or hold them redacted
//! (`decision_log.include_arguments`, `decision_log.redact`): then `arguments` says so,
//! `"omitted"` (left out of `context`) or `"redacted"` (in `context`, some values
//! replaced by `"[REDACTED]"`), and a replay of it decides on less than the request
//! had ([`Replayable::arguments`]).

use std::str::FromStr;

use cedar_policy::EntityUid;
use serde_json::{Map, Value};

use super::{DecisionRequest, RequestEntity, TokenFacts};

mod writer;

pub(crate) use writer::key;
pub use writer::{JsonWriter, Key, Object, read_back, uid_text};

/// Whether the JSON form holds the request's arguments as they were.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArgumentsForm {
    /// As the request had them (or the request had none).
    #[default]
    Complete,
    /// Left out: the request had arguments, the JSON form does not.
    Omitted,
    /// Present, with some values replaced by `"[REDACTED]"`.
    Redacted,
}

impl ArgumentsForm {
    /// The value of `arguments` in the JSON form (`None`: complete, no key).
    pub fn as_str(self) -> Option<&'static str> {
        match self {
            ArgumentsForm::Complete => None,
            ArgumentsForm::Omitted => Some("omitted"),
            ArgumentsForm::Redacted => Some("redacted"),
        }
    }
}

/// A request read back from its JSON form, and whether its arguments are complete.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayable {
    /// The request.
    pub request: DecisionRequest,
    /// Whether `request.context.arguments` is what the original request had.
    pub arguments: ArgumentsForm,
}

/// Why a JSON form cannot be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayableError {
    /// Not a JSON object where one is needed.
    #[error("`{0}` must be a JSON object")]
    NotAnObject(String),
    /// A required member is missing.
    #[error("`{0}` is missing")]
    Missing(&'static str),
    /// A member of a kind this form does not have.
    #[error("unknown member `{0}`")]
    Unknown(String),
    /// A uid that is not a Cedar uid string.
    #[error("`{field}` is not a Cedar uid: `{value}`")]
    Uid {
        /// Where it was.
        field: String,
        /// What it was (a string, or the JSON of another value).
        value: String,
    },
    /// A member of the wrong JSON type.
    #[error("`{field}` must be {expected}")]
    Type {
        /// Where it was.
        field: String,
        /// What it must be.
        expected: &'static str,
    },
}

/// The parts of a request's JSON form, borrowed: a decision log record builds it from
/// what it kept of the request, [`to_json`] from a whole request.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    /// The user.
    pub user: Option<&'a EntityUid>,
    /// The application.
    pub application: Option<&'a EntityUid>,
    /// The action.
    pub action: &'a EntityUid,
    /// The resource.
    pub resource: &'a EntityUid,
    /// The server.
    pub server: Option<&'a EntityUid>,
    /// The context; its `arguments` are replaced by `arguments` when that is given.
    pub context: &'a Map<String, Value>,
    /// The arguments to write instead of the context's (say redacted ones).
    pub arguments: Option<&'a Value>,
    /// What `arguments` says about them.
    pub form: ArgumentsForm,
    /// The token facts.
    pub token: Option<&'a TokenFacts>,
    /// The per-request entity data.
    pub entities: &'a [RequestEntity],
}

impl<'a> Parts<'a> {
    /// The parts of `request`, whole.
    pub fn of(request: &'a DecisionRequest) -> Self {
        Self {
            user: request.user.as_ref(),
            application: request.application.as_ref(),
            action: &request.action,
            resource: &request.resource,
            server: request.server.as_ref(),
            context: &request.context,
            arguments: None,
            form: ArgumentsForm::Complete,
            token: request.token.as_ref(),
            entities: &request.entities,
        }
    }

    /// The JSON form.
    pub fn to_json(&self) -> Value {
        read_back(|text| self.write(&mut JsonWriter::new(text)))
    }

    /// Write the JSON form, field by field from the borrowed parts: the decision log's
    /// writer thread writes a record's input without copying it into a JSON value.
    pub fn write(&self, w: &mut JsonWriter<'_, 'a>) -> serde_json::Result<()> {
        let mut m = w.object();
        for (key, uid) in [
            (key!("user"), self.user),
            (key!("application"), self.application),
            (key!("action"), Some(self.action)),
            (key!("resource"), Some(self.resource)),
            (key!("server"), self.server),
        ] {
            if let Some(uid) = uid {
                m.key(key).uid(uid);
            }
        }
        self.write_context(m.key(key!("context")))?;
        if let Some(form) = self.form.as_str() {
            m.str(key!("arguments"), form);
        }
        if let Some(token) = self.token {
            let mut t = m.key(key!("token")).object();
            t.key(key!("scopes")).strs(&token.scopes);
            t.key(key!("claims")).value(&token.claims)?;
            t.end();
        }
        if !self.entities.is_empty() {
            m.key(key!("entities")).array(self.entities, |w, e| {
                let mut o = w.object();
                o.key(key!("uid")).uid(&e.uid);
                o.key(key!("parents")).uids(&e.parents);
                o.key(key!("attrs")).value(&e.attrs)?;
                o.end();
                Ok(())
            })?;
        }
        m.end();
        Ok(())
    }

    /// The context with the arguments the parts say.
    fn write_context(&self, w: &mut JsonWriter<'_, 'a>) -> serde_json::Result<()> {
        let replaced = self.form == ArgumentsForm::Omitted || self.arguments.is_some();
        let mut m = w.object();
        for (k, v) in self.context {
            if !(replaced && k == "arguments") {
                m.key_str(k).value(v)?;
            }
        }
        if self.form != ArgumentsForm::Omitted
            && let Some(arguments) = self.arguments
        {
            m.key(key!("arguments")).value(arguments)?;
        }
        m.end();
        Ok(())
    }
}

/// The JSON form of `request`, with its arguments as they are.
pub fn to_json(request: &DecisionRequest) -> Value {
    Parts::of(request).to_json()
}

/// The request of a JSON form (see [`to_json`]).
pub fn from_json(value: Value) -> Result<Replayable, ReplayableError> {
    from_json_with(value, &mut |s: &str| EntityUid::from_str(s).ok())
}

/// [`from_json`], reading uids with `uid` (say through a cache of parsed uids: a log
/// names the same few many times, and Cedar's parser is the costly part).
pub fn from_json_with(
    value: Value,
    uid: &mut dyn FnMut(&str) -> Option<EntityUid>,
) -> Result<Replayable, ReplayableError> {
    let Value::Object(obj) = value else {
        return Err(ReplayableError::NotAnObject("input".into()));
    };
    let mut read_uid = |field: &str, v: &Value| -> Result<EntityUid, ReplayableError> {
        v.as_str()
            .and_then(&mut *uid)
            .ok_or_else(|| ReplayableError::Uid {
                field: field.to_owned(),
                value: v.as_str().map_or_else(|| v.to_string(), str::to_owned),
            })
    };
    let mut user = None;
    let mut application = None;
    let mut action = None;
    let mut resource = None;
    let mut server = None;
    let mut context = Map::new();
    let mut form = ArgumentsForm::Complete;
    let mut token = None;
    let mut entities = Vec::new();
    for (key, v) in obj {
        match key.as_str() {
            "user" => user = Some(read_uid("user", &v)?),
            "application" => application = Some(read_uid("application", &v)?),
            "action" => action = Some(read_uid("action", &v)?),
            "resource" => resource = Some(read_uid("resource", &v)?),
            "server" => server = Some(read_uid("server", &v)?),
            "context" => {
                let Value::Object(c) = v else {
                    return Err(ReplayableError::NotAnObject("context".into()));
                };
                context = c;
            }
            "arguments" => {
                form = match v.as_str() {
                    Some("omitted") => ArgumentsForm::Omitted,
                    Some("redacted") => ArgumentsForm::Redacted,
                    _ => {
                        return Err(ReplayableError::Type {
                            field: "arguments".into(),
                            expected: "`\"omitted\"` or `\"redacted\"`",
                        });
                    }
                };
            }
            "token" => token = Some(read_token(v)?),
            "entities" => {
                let Value::Array(list) = v else {
                    return Err(ReplayableError::Type {
                        field: "entities".into(),
                        expected: "an array",
                    });
                };
                entities.reserve(list.len());
                for (i, e) in list.into_iter().enumerate() {
                    entities.push(read_entity(i, e, &mut read_uid)?);
                }
            }
            other => return Err(ReplayableError::Unknown(other.to_owned())),
        }
    }
    let action = action.ok_or(ReplayableError::Missing("action"))?;
    let resource = resource.ok_or(ReplayableError::Missing("resource"))?;
    Ok(Replayable {
        request: DecisionRequest {
            user,
            application,
            action,
            resource,
            server,
            context,
            token,
            entities,
        },
        arguments: form,
    })
}

fn read_token(v: Value) -> Result<TokenFacts, ReplayableError> {
    let Value::Object(obj) = v else {
        return Err(ReplayableError::NotAnObject("token".into()));
    };
    let mut facts = TokenFacts::default();
    for (key, v) in obj {
        match key.as_str() {
            "scopes" => {
                let scopes = v.as_array().ok_or(ReplayableError::Type {
                    field: "token.scopes".into(),
                    expected: "an array of strings",
                })?;
                facts.scopes = scopes
                    .iter()
                    .map(|s| s.as_str().map(str::to_owned))
                    .collect::<Option<_>>()
                    .ok_or(ReplayableError::Type {
                        field: "token.scopes".into(),
                        expected: "an array of strings",
                    })?;
            }
            "claims" => {
                let Value::Object(claims) = v else {
                    return Err(ReplayableError::NotAnObject("token.claims".into()));
                };
                facts.claims = claims;
            }
            other => return Err(ReplayableError::Unknown(format!("token.{other}"))),
        }
    }
    Ok(facts)
}

fn read_entity(
    i: usize,
    v: Value,
    read_uid: &mut dyn FnMut(&str, &Value) -> Result<EntityUid, ReplayableError>,
) -> Result<RequestEntity, ReplayableError> {
    let Value::Object(obj) = v else {
        return Err(ReplayableError::NotAnObject(format!("entities[{i}]")));
    };
    let mut uid = None;
    let mut parents = Vec::new();
    let mut attrs = Map::new();
    for (key, v) in obj {
        match key.as_str() {
            "uid" => uid = Some(read_uid("entities[].uid", &v)?),
            "parents" => {
                let list = v.as_array().ok_or_else(|| ReplayableError::Type {
                    field: format!("entities[{i}].parents"),
                    expected: "an array of Cedar uids",
                })?;
                parents.reserve(list.len());
                for p in list {
                    parents.push(read_uid("entities[].parents", p)?);
                }
            }
            "attrs" => {
                let Value::Object(a) = v else {
                    return Err(ReplayableError::NotAnObject(format!("entities[{i}].attrs")));
                };
                attrs = a;
            }
            other => return Err(ReplayableError::Unknown(format!("entities[{i}].{other}"))),
        }
    }
    Ok(RequestEntity {
        uid: uid.ok_or(ReplayableError::Missing("entities[].uid"))?,
        parents,
        attrs,
    })
}

#[cfg(test)]
mod tests;
