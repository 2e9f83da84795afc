//! Query strings as dockerd reads them: booleans per moby's `BoolValue`, JSON-valued
//! parameters where empty and `null` mean "none" (old clients send `buildargs={}`,
//! `cachefrom=[]`, `ulimits=null`, and podman's 400s for those were its users' first
//! complaint), and `filters` in both the Go map form and docker-py's list form.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The parameters of one request, in order, repeated names kept (`t=a&t=b`).
#[derive(Debug, Clone, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        let pairs = raw
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        Query { pairs }
    }

    /// The last value of `name` (dockerd's `r.FormValue` takes the first; clients send one).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// moby's `BoolValue`: absent, ``, `0`, `no`, `false`, `none` (any case) are false.
    pub fn bool(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| {
            !matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "" | "0" | "no" | "false" | "none"
            )
        })
    }

    /// A JSON-valued parameter; absent, empty and `null` give `None`.
    pub fn json<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, ApiError> {
        match self.get(name).map(str::trim) {
            None | Some("") | Some("null") => Ok(None),
            Some(v) => serde_json::from_str(v).map(Some).map_err(|e| {
                ApiError::bad_request(format!("invalid JSON in query parameter {name}: {e}"))
            }),
        }
    }

    /// An integer parameter; absent or empty gives `None`.
    pub fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get(name).map(str::trim) {
            None | Some("") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid value for query parameter {name}: {v:?} is not an integer"
                ))
            }),
        }
    }

    /// The `filters` parameter: name → values.
    pub fn filters(&self) -> Result<Filters, ApiError> {
        Filters::parse(self.get("filters"))
    }
}

/// `filters={"label":{"a=b":true}}` (Go client) or `{"label":["a=b"]}` (docker-py).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters(pub BTreeMap<String, Vec<String>>);

impl Filters {
    pub fn parse(raw: Option<&str>) -> Result<Filters, ApiError> {
        let raw = match raw.map(str::trim) {
            None | Some("") | Some("null") => return Ok(Filters::default()),
            Some(r) => r,
        };
        let bad = |why: String| ApiError::bad_request(format!("invalid filter: {why}"));
        let value: serde_json::Value = serde_json::from_str(raw).map_err(|e| bad(e.to_string()))?;
        let serde_json::Value::Object(map) = value else {
            return Err(bad("expected a JSON object".into()));
        };
        let mut out = BTreeMap::new();
        for (name, values) in map {
            let list = match values {
                serde_json::Value::Object(m) => m
                    .into_iter()
                    .filter(|(_, on)| on.as_bool().unwrap_or(true))
                    .map(|(k, _)| k)
                    .collect(),
                serde_json::Value::Array(a) => a
                    .into_iter()
                    .map(|v| match v {
                        serde_json::Value::String(s) => Ok(s),
                        other => Err(bad(format!("{name}: {other} is not a string"))),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                serde_json::Value::String(s) => vec![s],
                other => return Err(bad(format!("{name}: unexpected value {other}"))),
            };
            out.insert(name, list);
        }
        Ok(Filters(out))
    }

    pub fn get(&self, name: &str) -> &[String] {
        self.0.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Refuses any filter not in `known`, as dockerd does ("invalid filter 'x'").
    pub fn only(&self, known: &[&str]) -> Result<(), ApiError> {
        match self.0.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(ApiError::bad_request(format!("invalid filter '{k}'"))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_follow_moby() {
        let q = Query::parse(Some("a=1&b=False&c=&d=none&e=True&f=yes"));
        assert!(q.bool("a"));
        assert!(!q.bool("b"));
        assert!(!q.bool("c"));
        assert!(!q.bool("d"));
        assert!(q.bool("e"));
        assert!(q.bool("f"));
        assert!(!q.bool("missing"));
    }

    #[test]
    fn empty_and_null_json_mean_none() {
        let q = Query::parse(Some(
            "buildargs=%7B%7D&cachefrom=&ulimits=null&labels=%7B%22a%22%3A%22b%22%7D",
        ));
        let args: Option<BTreeMap<String, String>> = q.json("buildargs").unwrap();
        assert_eq!(args, Some(BTreeMap::new()));
        assert_eq!(q.json::<Vec<String>>("cachefrom").unwrap(), None);
        assert_eq!(q.json::<Vec<String>>("ulimits").unwrap(), None);
        let labels: BTreeMap<String, String> = q.json("labels").unwrap().unwrap();
        assert_eq!(labels["a"], "b");
        let err =
            Query::parse(Some("buildargs=%7Bx")).json::<BTreeMap<String, String>>("buildargs");
        assert!(err.unwrap_err().message.contains("buildargs"));
    }

    #[test]
    fn filters_in_both_forms() {
        let go =
            Filters::parse(Some(r#"{"label":{"a=b":true},"dangling":{"true":true}}"#)).unwrap();
        let py = Filters::parse(Some(r#"{"label":["a=b"],"dangling":["true"]}"#)).unwrap();
        assert_eq!(go, py);
        assert_eq!(go.get("label"), ["a=b"]);
        assert!(go.only(&["label", "dangling"]).is_ok());
        assert!(
            go.only(&["label"])
                .unwrap_err()
                .message
                .contains("'dangling'")
        );
        assert!(Filters::parse(Some("[1]")).is_err());
        assert_eq!(Filters::parse(Some("")).unwrap(), Filters::default());
    }

    #[test]
    fn repeated_parameters_are_kept() {
        let q = Query::parse(Some("t=a%3A1&t=b"));
        assert_eq!(q.all("t"), ["a:1", "b"]);
        assert_eq!(q.int("x").unwrap(), None);
        assert!(Query::parse(Some("x=abc")).int("x").is_err());
    }
}
