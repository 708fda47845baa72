//! Rendering of replies: the server's JSON, or comfy-table tables.

mod record;

use std::io::{self, Write};

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use serde_json::{Value, json};
use synaxis_shared::api::{CreatedKey, List, Org};
use synaxis_shared::plans::OrgEntitlements;

pub use record::{Record, RegionRow};

use crate::cli::OutputFormat;
use crate::client::Reply;
use crate::config::ConfigFile;
use crate::language::Language;

/// Writes replies to `out` in one format and language.
#[derive(Debug)]
pub struct Printer<W> {
    out: W,
    format: OutputFormat,
    language: Language,
}

impl<W: Write> Printer<W> {
    pub fn new(out: W, format: OutputFormat, language: Language) -> Self {
        Self {
            out,
            format,
            language,
        }
    }

    pub fn language(&self) -> Language {
        self.language
    }

    /// Prints one item as a field/value table, or as JSON.
    pub fn one<T: Record>(&mut self, reply: &Reply<T>) -> io::Result<()> {
        match self.format {
            OutputFormat::Json => self.write_json(&reply.raw),
            OutputFormat::Table => {
                let table = self.detail_table(&reply.body);
                self.write_table(&table)
            }
        }
    }

    /// Prints an organization and its effective entitlements: two tables, or the org's JSON
    /// with the entitlements under `entitlements`.
    pub fn org_details(
        &mut self,
        org: &Reply<Org>,
        entitlements: &Reply<OrgEntitlements>,
    ) -> io::Result<()> {
        match self.format {
            OutputFormat::Json => {
                let mut raw = org.raw.clone();
                if let Some(fields) = raw.as_object_mut() {
                    fields.insert("entitlements".to_owned(), entitlements.raw.clone());
                }
                self.write_json(&raw)
            }
            OutputFormat::Table => {
                let table = self.detail_table(&org.body);
                self.write_table(&table)?;
                let table = self.detail_table(&entitlements.body);
                self.write_table(&table)
            }
        }
    }

    /// Prints a list as a table with a row per item, or as JSON.
    pub fn list<T: Record>(&mut self, reply: &Reply<List<T>>) -> io::Result<()> {
        match self.format {
            OutputFormat::Json => self.write_json(&reply.raw),
            OutputFormat::Table => {
                let table = self.list_table(&reply.body.data);
                self.write_table(&table)
            }
        }
    }

    /// Prints a drill's report: its summary and a row per key and entry region, or the
    /// server's JSON.
    pub fn drill_report(
        &mut self,
        reply: &Reply<synaxis_shared::region::DrillReport>,
    ) -> io::Result<()> {
        match self.format {
            OutputFormat::Json => self.write_json(&reply.raw),
            OutputFormat::Table => {
                let summary = self.detail_table(&reply.body);
                self.write_table(&summary)?;
                let traffic = self.list_table(&reply.body.traffic);
                self.write_table(&traffic)
            }
        }
    }

    /// Prints a new key and its secret. The JSON form is the server's, secret included.
    pub fn created_key(&mut self, reply: &Reply<CreatedKey>) -> io::Result<()> {
        let notice = self.language.secret_notice();
        self.key_with_secret(reply, notice)
    }

    /// Prints a rotated key and its new secret. The JSON form is the server's, secret
    /// included.
    pub fn rotated_key(&mut self, reply: &Reply<CreatedKey>) -> io::Result<()> {
        let previous_until = reply.body.key.previous_secret_expires_at.as_ref();
        let notice = self.language.rotated_secret_notice(previous_until);
        self.key_with_secret(reply, &notice)
    }

    /// Prints the contexts of the config file: a table that marks the current context with
    /// `*`, or `{"current": NAME, "data": [...]}`. Tokens are never printed.
    pub fn contexts(&mut self, file: &ConfigFile) -> io::Result<()> {
        let summaries = file.summaries();
        match self.format {
            OutputFormat::Json => {
                let value = json!({"current": file.current_name(), "data": summaries});
                self.write_json(&value)
            }
            OutputFormat::Table => {
                let table = self.list_table(&summaries);
                self.write_table(&table)
            }
        }
    }

    /// Prints the result of a change to the contexts: `message`, or in JSON the contexts
    /// after the change, as `contexts` prints them.
    pub fn context_change(&mut self, message: &str, file: &ConfigFile) -> io::Result<()> {
        match self.format {
            OutputFormat::Json => self.contexts(file),
            OutputFormat::Table => {
                writeln!(self.out, "{message}")?;
                self.out.flush()
            }
        }
    }

    fn key_with_secret(&mut self, reply: &Reply<CreatedKey>, notice: &str) -> io::Result<()> {
        match self.format {
            OutputFormat::Json => self.write_json(&reply.raw),
            OutputFormat::Table => {
                let table = self.detail_table(&reply.body.key);
                self.write_table(&table)?;
                writeln!(self.out)?;
                writeln!(self.out, "{notice}")?;
                writeln!(self.out, "{}", reply.body.secret)?;
                self.out.flush()
            }
        }
    }

    fn detail_table<T: Record>(&self, item: &T) -> Table {
        let mut table = new_table();
        table.set_header(self.language.field_value_headers());
        for (name, value) in item.fields(self.language) {
            table.add_row([name.to_owned(), value]);
        }
        table
    }

    fn list_table<T: Record>(&self, items: &[T]) -> Table {
        let mut table = new_table();
        table.set_header(T::COLUMNS);
        for item in items {
            table.add_row(item.row(self.language));
        }
        table
    }

    fn write_table(&mut self, table: &Table) -> io::Result<()> {
        writeln!(self.out, "{table}")?;
        self.out.flush()
    }

    fn write_json(&mut self, value: &Value) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut self.out, value)?;
        writeln!(self.out)?;
        self.out.flush()
    }

    #[cfg(test)]
    fn into_inner(self) -> W {
        self.out
    }
}

fn new_table() -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    table
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    fn created_key_json() -> Value {
        json!({
            "key": {
                "id": "0b7e6c1a-3c1e-4a55-8f5e-0a1f2b3c4d5e",
                "org_id": "5f1c1f5e-8a53-4c55-9d2c-2f1f8f0f1a11",
                "user_id": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
                "name": "ci",
                "scope": "inference",
                "region": "eu-west-1",
                "allowed_models": [],
                "active": true,
                "expires_at": null,
                "created_at": "2025-01-02T03:04:05.678Z",
                "rotated_at": null,
                "previous_secret_expires_at": null,
                "revoked_at": null
            },
            "secret": "sk-syn-eu-west-1-example-secret"
        })
    }

    fn reply<T: serde::de::DeserializeOwned>(raw: Value) -> Result<Reply<T>, serde_json::Error> {
        let body = T::deserialize(&raw)?;
        Ok(Reply { raw, body })
    }

    fn render_created_key(
        format: OutputFormat,
        language: Language,
    ) -> Result<String, Box<dyn Error>> {
        let mut printer = Printer::new(Vec::new(), format, language);
        printer.created_key(&reply(created_key_json())?)?;
        Ok(String::from_utf8(printer.into_inner())?)
    }

    #[test]
    fn created_key_json_includes_secret() -> Result<(), Box<dyn Error>> {
        let output = render_created_key(OutputFormat::Json, Language::En)?;
        let parsed: Value = serde_json::from_str(&output)?;
        assert_eq!(parsed, created_key_json());
        Ok(())
    }

    #[test]
    fn created_key_table_ends_with_secret() -> Result<(), Box<dyn Error>> {
        let output = render_created_key(OutputFormat::Table, Language::En)?;
        let lines: Vec<&str> = output.lines().collect();
        assert_eq!(lines.last(), Some(&"sk-syn-eu-west-1-example-secret"));
        assert_eq!(
            lines.iter().rev().nth(1),
            Some(&Language::En.secret_notice())
        );
        assert!(output.contains("0b7e6c1a-3c1e-4a55-8f5e-0a1f2b3c4d5e"));
        assert!(output.contains("(all models)"));
        assert!(output.contains("2025-01-02T03:04:05Z"));
        Ok(())
    }

    #[test]
    fn created_key_table_speaks_portuguese() -> Result<(), Box<dyn Error>> {
        let output = render_created_key(OutputFormat::Table, Language::PtBr)?;
        assert!(output.contains(Language::PtBr.secret_notice()));
        assert!(output.contains("campo"));
        assert!(output.contains("(todos os modelos)"));
        Ok(())
    }

    #[test]
    fn list_table_has_row_per_item() -> Result<(), Box<dyn Error>> {
        let raw = json!({"data": [
            {
                "id": "5f1c1f5e-8a53-4c55-9d2c-2f1f8f0f1a11",
                "slug": "acme",
                "name": "Acme",
                "primary_region": "eu-west-1",
                "allowed_models": [],
                "active": true,
                "created_at": "2025-01-02T03:04:05Z",
                "plan": "free",
                "plan_version": 1
            },
            {
                "id": "6a2d2a6f-9b64-4d66-8e3d-3a2a9a1a2b22",
                "slug": "globex",
                "name": "Globex",
                "primary_region": "sa-east-1",
                "allowed_models": ["gpt-4o*"],
                "active": false,
                "created_at": "2025-02-03T04:05:06Z",
                "plan": "pro",
                "plan_version": 2
            }
        ]});
        let mut printer = Printer::new(Vec::new(), OutputFormat::Table, Language::En);
        printer.list::<synaxis_shared::api::Org>(&reply(raw)?)?;
        let output = String::from_utf8(printer.into_inner())?;

        assert!(output.contains("primary_region"));
        assert!(output.contains("acme"));
        assert!(output.contains("globex"));
        assert!(output.contains("sa-east-1"));
        Ok(())
    }

    #[test]
    fn rotated_key_table_ends_with_secret() -> Result<(), Box<dyn Error>> {
        let mut printer = Printer::new(Vec::new(), OutputFormat::Table, Language::PtBr);
        printer.rotated_key(&reply(created_key_json())?)?;
        let output = String::from_utf8(printer.into_inner())?;

        let lines: Vec<&str> = output.lines().collect();
        assert_eq!(lines.last(), Some(&"sk-syn-eu-west-1-example-secret"));
        assert_eq!(
            lines.iter().rev().nth(1),
            Some(&Language::PtBr.rotated_secret_notice(None).as_str())
        );
        Ok(())
    }

    #[test]
    fn rotated_key_table_shows_grace_end() -> Result<(), Box<dyn Error>> {
        let mut raw = created_key_json();
        raw["key"]["previous_secret_expires_at"] = json!("2025-01-02T04:04:05Z");
        let mut printer = Printer::new(Vec::new(), OutputFormat::Table, Language::En);
        printer.rotated_key(&reply(raw)?)?;
        let output = String::from_utf8(printer.into_inner())?;

        assert!(
            output.contains("The previous secret keeps working until 2025-01-02T04:04:05Z:"),
            "{output}"
        );
        Ok(())
    }

    fn config_with_contexts() -> Result<ConfigFile, Box<dyn Error>> {
        let mut file = ConfigFile::default();
        let prod = crate::config::Context {
            endpoint: crate::cli::parse_endpoint("https://synaxis.example.com")?,
            token: Some("op-secret-token".parse()?),
        };
        let local = crate::config::Context {
            endpoint: crate::cli::parse_endpoint("http://127.0.0.1:8080")?,
            token: None,
        };
        file.add("prod", prod, false)?;
        file.add("local", local, false)?;
        Ok(file)
    }

    #[test]
    fn contexts_table_marks_current_hides_tokens() -> Result<(), Box<dyn Error>> {
        let mut printer = Printer::new(Vec::new(), OutputFormat::Table, Language::En);
        printer.contexts(&config_with_contexts()?)?;
        let output = String::from_utf8(printer.into_inner())?;

        let prod_line = output
            .lines()
            .find(|line| line.contains("prod"))
            .ok_or("no row for prod")?;
        assert!(prod_line.contains('*'), "{output}");
        let local_line = output
            .lines()
            .find(|line| line.contains("local"))
            .ok_or("no row for local")?;
        assert!(!local_line.contains('*'), "{output}");
        assert!(!output.contains("op-secret-token"), "{output}");
        Ok(())
    }

    #[test]
    fn contexts_json_lists_summaries() -> Result<(), Box<dyn Error>> {
        let mut printer = Printer::new(Vec::new(), OutputFormat::Json, Language::En);
        printer.contexts(&config_with_contexts()?)?;
        let parsed: Value = serde_json::from_slice(&printer.into_inner())?;

        assert_eq!(
            parsed,
            json!({
                "current": "prod",
                "data": [
                    {
                        "name": "local",
                        "current": false,
                        "endpoint": "http://127.0.0.1:8080/",
                        "has_token": false
                    },
                    {
                        "name": "prod",
                        "current": true,
                        "endpoint": "https://synaxis.example.com/",
                        "has_token": true
                    }
                ]
            })
        );
        Ok(())
    }

    #[test]
    fn list_json_is_server_json() -> Result<(), Box<dyn Error>> {
        let raw = json!({"data": [], "extra": "kept"});
        let mut printer = Printer::new(Vec::new(), OutputFormat::Json, Language::En);
        printer.list::<synaxis_shared::api::Org>(&reply(raw.clone())?)?;
        let parsed: Value = serde_json::from_slice(&printer.into_inner())?;
        assert_eq!(parsed, raw);
        Ok(())
    }
}
