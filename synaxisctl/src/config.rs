//! The config file of contexts: named pairs of an endpoint and a token, and the name of the
//! current one.
//!
//! ```toml
//! current = "prod"
//!
//! [contexts.prod]
//! endpoint = "https://synaxis.example.com"
//! token = "op-..."
//! ```
//!
//! The file is `$XDG_CONFIG_HOME/synaxis/config.toml`, or `$HOME/.config/synaxis/config.toml`
//! when `XDG_CONFIG_HOME` is unset, empty or relative. It contains tokens, so synaxisctl writes
//! it with mode 0600. A file that cannot be read or parsed is reported and never rewritten.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use reqwest::Url;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::cli::{BearerToken, parse_endpoint};
use crate::exit::Exit;

/// The first lines of every file that synaxisctl writes.
const HEADER: &str = "\
# synaxisctl contexts. This file contains tokens: keep its mode 600.
# synaxisctl rewrites this file and does not keep comments.

";

/// Permission bits of the config file: read and write for the owner only.
#[cfg(unix)]
const FILE_MODE: u32 = 0o600;

/// Permission bits of a config directory that synaxisctl creates.
#[cfg(unix)]
const DIRECTORY_MODE: u32 = 0o700;

/// An error of the config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot locate the config file: neither XDG_CONFIG_HOME nor HOME is set")]
    NoLocation,
    #[error("cannot read the config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the config file {} is invalid", path.display())]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("cannot write the config file {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot encode the config file {}", path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: toml::ser::Error,
    },
    #[error("{source} in {}", path.display())]
    Context {
        path: PathBuf,
        #[source]
        source: ContextError,
    },
}

impl ConfigError {
    pub fn exit(&self) -> Exit {
        match self {
            Self::NoLocation | Self::Parse { .. } => Exit::Usage,
            Self::Read { .. } | Self::Write { .. } | Self::Encode { .. } => Exit::Failure,
            Self::Context { source, .. } => source.exit(),
        }
    }
}

/// An error of an operation on the contexts of a parsed file.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    #[error("no context is named `{0}`")]
    NotFound(String),
    #[error("a context named `{0}` already exists")]
    Exists(String),
    /// `current` names a context that the file does not define.
    #[error("the current context `{0}` is not defined")]
    UnknownCurrent(String),
}

impl ContextError {
    pub fn exit(&self) -> Exit {
        match self {
            Self::NotFound(_) => Exit::NotFound,
            Self::Exists(_) => Exit::Conflict,
            Self::UnknownCurrent(_) => Exit::Usage,
        }
    }
}

/// The contents of the config file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    current: Option<String>,
    #[serde(default)]
    contexts: BTreeMap<String, Context>,
}

/// An endpoint and, optionally, the token to send to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    #[serde(
        serialize_with = "serialize_endpoint",
        deserialize_with = "deserialize_endpoint"
    )]
    pub endpoint: Url,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<BearerToken>,
}

/// A context as `context list` shows it, without its token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContextSummary {
    pub name: String,
    pub current: bool,
    pub endpoint: String,
    pub has_token: bool,
}

/// The result of [`ConfigFile::add`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Added {
    /// A new context that became the current one, because no context was current.
    NewCurrent,
    New,
    Replaced,
}

impl ConfigFile {
    pub fn current_name(&self) -> Option<&str> {
        self.current.as_deref()
    }

    /// Returns the current context, or `None` when no context is current.
    pub fn current_context(&self) -> Result<Option<&Context>, ContextError> {
        let Some(name) = &self.current else {
            return Ok(None);
        };
        self.contexts
            .get(name)
            .map(Some)
            .ok_or_else(|| ContextError::UnknownCurrent(name.clone()))
    }

    /// Saves a context. An existing context of the same name is replaced only when
    /// `replace` is true.
    pub fn add(
        &mut self,
        name: &str,
        context: Context,
        replace: bool,
    ) -> Result<Added, ContextError> {
        let existed = self.contexts.contains_key(name);
        if existed && !replace {
            return Err(ContextError::Exists(name.to_owned()));
        }
        self.contexts.insert(name.to_owned(), context);

        if existed {
            Ok(Added::Replaced)
        } else if self.current.is_none() {
            self.current = Some(name.to_owned());
            Ok(Added::NewCurrent)
        } else {
            Ok(Added::New)
        }
    }

    /// Makes a context the current one and returns it.
    pub fn use_context(&mut self, name: &str) -> Result<&Context, ContextError> {
        let Some(context) = self.contexts.get(name) else {
            return Err(ContextError::NotFound(name.to_owned()));
        };
        self.current = Some(name.to_owned());
        Ok(context)
    }

    /// Removes a context and returns whether it was the current one. No context is current
    /// after removing the current one.
    pub fn remove(&mut self, name: &str) -> Result<bool, ContextError> {
        if self.contexts.remove(name).is_none() {
            return Err(ContextError::NotFound(name.to_owned()));
        }
        let was_current = self.current.as_deref() == Some(name);
        if was_current {
            self.current = None;
        }
        Ok(was_current)
    }

    /// Returns every context in name order, without tokens.
    pub fn summaries(&self) -> Vec<ContextSummary> {
        self.contexts
            .iter()
            .map(|(name, context)| ContextSummary {
                name: name.clone(),
                current: self.current.as_deref() == Some(name.as_str()),
                endpoint: context.endpoint.to_string(),
                has_token: context.token.is_some(),
            })
            .collect()
    }
}

/// The location of the config file, and its reading and writing.
#[derive(Clone, Debug)]
pub struct ConfigStore {
    path: PathBuf,
}

impl ConfigStore {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// Locates the file from `XDG_CONFIG_HOME` and `HOME`.
    pub fn from_env() -> Result<Self, ConfigError> {
        let path = config_path(
            std::env::var_os("XDG_CONFIG_HOME"),
            std::env::var_os("HOME"),
        );
        path.map(Self::new).ok_or(ConfigError::NoLocation)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Wraps an error of an operation on the file's contexts with the file's path.
    pub fn context_error(&self, source: ContextError) -> ConfigError {
        ConfigError::Context {
            path: self.path.clone(),
            source,
        }
    }

    /// Reads and parses the file. A missing file is an empty one.
    pub fn load(&self) -> Result<ConfigFile, ConfigError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Ok(ConfigFile::default());
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: self.path.clone(),
            source: Box::new(source),
        })
    }

    /// Writes the file with mode 0600, through a temporary file renamed over it, so that a
    /// failed write leaves the previous file whole. When the path is a symbolic link, the
    /// file it points to is replaced and the link kept.
    ///
    /// NOTE: two synaxisctl processes that change contexts at the same time can lose one of
    /// the two changes, because nothing locks the file between reading and writing it.
    pub fn save(&self, file: &ConfigFile) -> Result<(), ConfigError> {
        let body = toml::to_string_pretty(file).map_err(|source| ConfigError::Encode {
            path: self.path.clone(),
            source,
        })?;
        let text = format!("{HEADER}{body}");

        self.write_file(&text).map_err(|source| ConfigError::Write {
            path: self.path.clone(),
            source,
        })
    }

    fn write_file(&self, text: &str) -> io::Result<()> {
        let target = resolve_symlink(&self.path)?;
        let directory = target
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        create_private_dir(directory)?;

        let mut temporary = tempfile::Builder::new()
            .prefix(".config.toml.")
            .tempfile_in(directory)?;
        set_private_mode(temporary.as_file())?;
        temporary.write_all(text.as_bytes())?;
        temporary.as_file().sync_all()?;
        temporary.persist(&target).map_err(|error| error.error)?;
        Ok(())
    }

    /// Returns the permission bits of the file when users other than its owner may read or
    /// write it, and `None` otherwise or when the file cannot be inspected.
    pub fn exposed_mode(&self) -> Option<u32> {
        exposed_mode(&self.path)
    }
}

/// Returns the path of the config file, following the XDG Base Directory specification:
/// an unset, empty or relative `XDG_CONFIG_HOME` falls back to `$HOME/.config`.
pub fn config_path(xdg_config_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let from_xdg = xdg_config_home
        .map(PathBuf::from)
        .filter(|directory| directory.is_absolute());
    let from_home = || {
        home.filter(|home| !home.is_empty())
            .map(|home| PathBuf::from(home).join(".config"))
    };
    from_xdg
        .or_else(from_home)
        .map(|directory| directory.join("synaxis").join("config.toml"))
}

fn resolve_symlink(path: &Path) -> io::Result<PathBuf> {
    match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_symlink() => fs::canonicalize(path),
        _ => Ok(path.to_owned()),
    }
}

#[cfg(unix)]
fn create_private_dir(directory: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;

    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIRECTORY_MODE)
        .create(directory)
}

#[cfg(not(unix))]
fn create_private_dir(directory: &Path) -> io::Result<()> {
    fs::create_dir_all(directory)
}

#[cfg(unix)]
fn set_private_mode(file: &fs::File) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;

    file.set_permissions(fs::Permissions::from_mode(FILE_MODE))
}

// NOTE: on other systems the file keeps the permissions of a new temporary file, which
// `tempfile` limits to the current user where the system supports it.
#[cfg(not(unix))]
fn set_private_mode(_file: &fs::File) -> io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn exposed_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;

    let mode = fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn exposed_mode(_path: &Path) -> Option<u32> {
    None
}

fn serialize_endpoint<S: Serializer>(endpoint: &Url, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(endpoint.as_str())
}

fn deserialize_endpoint<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Url, D::Error> {
    let value = String::deserialize(deserializer)?;
    parse_endpoint(&value).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    type TestResult = Result<(), Box<dyn Error>>;

    fn context(endpoint: &str, token: Option<&str>) -> Result<Context, Box<dyn Error>> {
        Ok(Context {
            endpoint: parse_endpoint(endpoint)?,
            token: token.map(str::parse).transpose()?,
        })
    }

    #[test]
    fn config_path_prefers_absolute_xdg() {
        let path = config_path(Some("/xdg".into()), Some("/home/ana".into()));
        assert_eq!(path, Some(PathBuf::from("/xdg/synaxis/config.toml")));
    }

    #[test]
    fn config_path_falls_back_to_home() {
        let expected = Some(PathBuf::from("/home/ana/.config/synaxis/config.toml"));
        assert_eq!(config_path(None, Some("/home/ana".into())), expected);
        assert_eq!(
            config_path(Some("".into()), Some("/home/ana".into())),
            expected
        );
        assert_eq!(
            config_path(Some("relative".into()), Some("/home/ana".into())),
            expected
        );
    }

    #[test]
    fn config_path_needs_xdg_or_home() {
        assert_eq!(config_path(None, None), None);
        assert_eq!(config_path(None, Some("".into())), None);
    }

    #[test]
    fn file_round_trips_through_toml() -> TestResult {
        let mut file = ConfigFile::default();
        file.add(
            "prod",
            context("https://synaxis.example.com", Some("op-1"))?,
            false,
        )?;
        file.add("local", context("http://127.0.0.1:8080", None)?, false)?;

        let text = toml::to_string_pretty(&file)?;
        let parsed: ConfigFile = toml::from_str(&text)?;

        assert_eq!(parsed, file);
        assert!(text.starts_with("current = \"prod\"\n"), "{text}");
        assert!(text.contains("[contexts.prod]\n"), "{text}");
        assert!(text.contains("token = \"op-1\"\n"), "{text}");
        Ok(())
    }

    #[test]
    fn file_parse_rejects_invalid_contents() {
        let cases = [
            "curent = \"prod\"",
            "[contexts.prod]\nendpoint = \"https://a.example\"\ntokne = \"x\"",
            "[contexts.prod]\nendpoint = \"ftp://a.example\"",
            "[contexts.prod]\nendpoint = \"https://a.example\"\ntoken = \"has space\"",
            "[contexts.prod]\ntoken = \"op-1\"",
            "current = ",
        ];
        for text in cases {
            assert!(toml::from_str::<ConfigFile>(text).is_err(), "{text}");
        }
    }

    #[test]
    fn first_added_context_becomes_current() -> TestResult {
        let mut file = ConfigFile::default();

        let first = file.add("a", context("http://127.0.0.1:1", None)?, false)?;
        let second = file.add("b", context("http://127.0.0.1:2", None)?, false)?;

        assert_eq!(first, Added::NewCurrent);
        assert_eq!(second, Added::New);
        assert_eq!(file.current_name(), Some("a"));
        Ok(())
    }

    #[test]
    fn add_replaces_only_when_asked() -> TestResult {
        let mut file = ConfigFile::default();
        file.add("a", context("http://127.0.0.1:1", None)?, false)?;

        let rejected = file.add("a", context("http://127.0.0.1:2", None)?, false);
        assert_eq!(rejected, Err(ContextError::Exists("a".to_owned())));

        let replaced = file.add("a", context("http://127.0.0.1:2", Some("t"))?, true)?;
        assert_eq!(replaced, Added::Replaced);
        let current = file.current_context()?.ok_or("no current context")?;
        assert_eq!(current.endpoint.as_str(), "http://127.0.0.1:2/");
        Ok(())
    }

    #[test]
    fn use_and_remove_track_current() -> TestResult {
        let mut file = ConfigFile::default();
        file.add("a", context("http://127.0.0.1:1", None)?, false)?;
        file.add("b", context("http://127.0.0.1:2", None)?, false)?;

        file.use_context("b")?;
        assert_eq!(file.current_name(), Some("b"));
        assert_eq!(
            file.use_context("c").err(),
            Some(ContextError::NotFound("c".to_owned()))
        );

        assert!(!file.remove("a")?);
        assert!(file.remove("b")?);
        assert_eq!(file.current_name(), None);
        assert_eq!(file.current_context()?, None);
        Ok(())
    }

    #[test]
    fn current_context_rejects_undefined_name() -> TestResult {
        let file: ConfigFile = toml::from_str("current = \"gone\"")?;
        assert_eq!(
            file.current_context(),
            Err(ContextError::UnknownCurrent("gone".to_owned()))
        );
        Ok(())
    }

    #[test]
    fn summaries_hide_tokens() -> TestResult {
        let mut file = ConfigFile::default();
        file.add(
            "prod",
            context("https://a.example", Some("op-secret"))?,
            false,
        )?;

        let summaries = file.summaries();

        assert_eq!(
            summaries,
            [ContextSummary {
                name: "prod".to_owned(),
                current: true,
                endpoint: "https://a.example/".to_owned(),
                has_token: true,
            }]
        );
        Ok(())
    }

    #[test]
    fn store_load_of_missing_file_is_empty() -> TestResult {
        let directory = tempfile::tempdir()?;
        let store = ConfigStore::new(directory.path().join("synaxis/config.toml"));
        assert_eq!(store.load()?, ConfigFile::default());
        Ok(())
    }

    #[cfg(unix)]
    #[test]
    fn store_save_writes_private_file() -> TestResult {
        use std::os::unix::fs::PermissionsExt;

        let directory = tempfile::tempdir()?;
        let path = directory.path().join("synaxis/config.toml");
        let store = ConfigStore::new(path.clone());
        let mut file = ConfigFile::default();
        file.add("prod", context("https://a.example", Some("op-1"))?, false)?;

        store.save(&file)?;

        assert_eq!(store.load()?, file);
        let mode = fs::metadata(&path)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(store.exposed_mode(), None);
        let parent_mode = fs::metadata(directory.path().join("synaxis"))?
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(parent_mode, 0o700);
        assert!(fs::read_to_string(&path)?.starts_with("# synaxisctl contexts."));
        Ok(())
    }

    #[cfg(unix)]
    #[test]
    fn store_save_tightens_existing_mode() -> TestResult {
        use std::os::unix::fs::PermissionsExt;

        let directory = tempfile::tempdir()?;
        let path = directory.path().join("config.toml");
        fs::write(&path, "")?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
        let store = ConfigStore::new(path.clone());
        assert_eq!(store.exposed_mode(), Some(0o644));

        store.save(&ConfigFile::default())?;

        assert_eq!(fs::metadata(&path)?.permissions().mode() & 0o777, 0o600);
        Ok(())
    }

    #[cfg(unix)]
    #[test]
    fn store_save_keeps_symlink() -> TestResult {
        let directory = tempfile::tempdir()?;
        let target = directory.path().join("dotfiles-config.toml");
        fs::write(&target, "")?;
        let link = directory.path().join("config.toml");
        std::os::unix::fs::symlink(&target, &link)?;
        let store = ConfigStore::new(link.clone());
        let mut file = ConfigFile::default();
        file.add("prod", context("https://a.example", None)?, false)?;

        store.save(&file)?;

        assert!(fs::symlink_metadata(&link)?.file_type().is_symlink());
        assert!(fs::read_to_string(&target)?.contains("[contexts.prod]"));
        Ok(())
    }

    #[test]
    fn store_load_names_file_of_parse_error() -> TestResult {
        let directory = tempfile::tempdir()?;
        let path = directory.path().join("config.toml");
        fs::write(&path, "current = [")?;
        let store = ConfigStore::new(path.clone());

        let error = store.load().expect_err("the file is not TOML");

        assert!(matches!(&error, ConfigError::Parse { path: p, .. } if *p == path));
        assert_eq!(error.exit(), Exit::Usage);
        Ok(())
    }
}
