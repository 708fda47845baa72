//! Test support for Synaxis: a fake upstream provider that speaks OpenAI's chat completions wire
//! format (used by the end-to-end tests, the README's first steps and the load scripts), and
//! access to the services that integration tests need.

pub mod fake_upstream;
pub mod services;
