//! The top-level fields of a request body, each kept as the JSON text the client sent, so that
//! the body is checked and forwarded without building a tree of its values.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The fields of a JSON object in the order they came, with their values unparsed.
#[derive(Debug)]
pub struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Fields<'a> {
    /// Reads the fields of `body`, which must be a JSON object.
    pub fn parse(body: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// Returns the value of `name`; of a name given twice, the last value, as
    /// `serde_json::Map` reads it.
    pub fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.0
            .iter()
            .rev()
            .find(|(field, _)| field == name)
            .map(|(_, value)| *value)
    }

    /// Returns whether no name occurs twice among the top-level fields.
    pub fn has_unique_names(&self) -> bool {
        self.0
            .iter()
            .enumerate()
            .all(|(index, (name, _))| self.0[index + 1..].iter().all(|(later, _)| later != name))
    }

    /// Writes the object again with the fields of `replace` set to their JSON texts, replaced
    /// where present and appended where not. A name given twice is written once, with its last
    /// value.
    pub fn write_with(&self, replace: &[(&str, &str)]) -> Vec<u8> {
        let size = self
            .0
            .iter()
            .map(|(name, value)| name.len() + value.get().len() + 4)
            .sum::<usize>();
        let mut out = Vec::with_capacity(size + 64);
        out.push(b'{');
        let mut first = true;
        let mut field = |out: &mut Vec<u8>, name: &str, json: &str| {
            if !first {
                out.push(b',');
            }
            first = false;
            // Writing a string into a `Vec` cannot fail.
            let _ = serde_json::to_writer(&mut *out, name);
            out.push(b':');
            out.extend_from_slice(json.as_bytes());
        };
        for (index, (name, value)) in self.0.iter().enumerate() {
            let repeated = self.0[index + 1..].iter().any(|(later, _)| later == name);
            if repeated {
                continue;
            }
            match replace.iter().find(|(replaced, _)| replaced == name) {
                Some((_, json)) => field(&mut out, name, json),
                None => field(&mut out, name, value.get()),
            }
        }
        for (name, json) in replace {
            if self.get(name).is_none() {
                field(&mut out, name, json);
            }
        }
        out.push(b'}');
        out
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Fields<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;

        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields<'de>;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut fields = Vec::new();
                while let Some(Name(name)) = map.next_key()? {
                    let value = map.next_value::<&'de RawValue>()?;
                    fields.push((name, value));
                }
                Ok(Fields(fields))
            }
        }

        deserializer.deserialize_map(FieldsVisitor)
    }
}

/// An object member's name, borrowed from the input unless it contains escapes. Serde's own
/// `Cow<str>` always deserializes into an owned copy.
pub struct Name<'a>(pub Cow<'a, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;

        impl<'de> Visitor<'de> for NameVisitor {
            type Value = Name<'de>;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, name: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(name)))
            }

            fn visit_str<E>(self, name: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(name.to_owned())))
            }

            fn visit_string<E>(self, name: String) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(name)))
            }
        }

        deserializer.deserialize_str(NameVisitor)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn rewrite(body: &str, replace: &[(&str, &str)]) -> Value {
        let fields = Fields::parse(body.as_bytes()).expect("an object parses");
        serde_json::from_slice(&fields.write_with(replace)).expect("the rewrite is JSON")
    }

    #[test]
    fn rewrite_replaces_and_appends() {
        let body = r#"{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}"#;
        assert_eq!(
            rewrite(body, &[("model", r#""upstream""#), ("stream", "true")]),
            json!({"model": "upstream", "messages": [{"role": "user", "content": "Hi"}], "stream": true})
        );
    }

    #[test]
    fn rewrite_keeps_escaped_names_and_last_duplicate() {
        let body = r#"{"a\"b": 1, "x": 1, "x": 2}"#;
        let fields = Fields::parse(body.as_bytes()).expect("an object parses");
        assert_eq!(fields.get("x").map(RawValue::get), Some("2"));
        assert_eq!(rewrite(body, &[]), json!({"a\"b": 1, "x": 2}));
    }

    #[test]
    fn names_borrowed_unless_escaped() {
        let body = r#"{"model": 1, "a\u0062": 2}"#;
        let fields = Fields::parse(body.as_bytes()).expect("an object parses");
        assert!(matches!(fields.0[0].0, Cow::Borrowed("model")));
        assert!(matches!(&fields.0[1].0, Cow::Owned(name) if name == "ab"));
    }

    #[test]
    fn non_objects_are_rejected() {
        assert!(Fields::parse(b"[1, 2]").is_err());
        assert!(Fields::parse(b"\"text\"").is_err());
        assert!(Fields::parse(b"{\"a\": }").is_err());
    }
}
