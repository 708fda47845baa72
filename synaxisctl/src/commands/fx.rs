//! `synaxisctl fx ...`

use std::io::{Read, Write};
use std::path::Path;

use synaxis_shared::api::List;
use synaxis_shared::invoices::{FxRate, NewFxRate, SetFxRatesRequest};

use super::CommandError;
use crate::cli::FxAction;
use crate::client::Client;
use crate::output::Printer;

pub async fn run(
    action: FxAction,
    client: &Client,
    printer: &mut Printer<impl Write>,
) -> Result<(), CommandError> {
    let rates = match action {
        FxAction::List { currency } => {
            let query: Vec<(&str, String)> = currency
                .map(|currency| ("currency", currency.code().to_owned()))
                .into_iter()
                .collect();
            let reply = client.get::<List<FxRate>>(&["fx"], &query).await?;
            printer.list(&reply)?;
            return Ok(());
        }
        FxAction::Set {
            currency,
            rate,
            effective_at,
        } => vec![NewFxRate {
            currency,
            rate,
            effective_at,
        }],
        FxAction::Import { file } => read_rates(&file)?,
    };
    let reply = client
        .post::<List<FxRate>, _>(&["fx"], &SetFxRatesRequest { rates })
        .await?;
    printer.list(&reply)?;
    Ok(())
}

/// Reads a CSV file of rates with the header `currency,rate,effective_at`; `-` reads standard
/// input. An empty `effective_at` means now.
fn read_rates(file: &Path) -> Result<Vec<NewFxRate>, CommandError> {
    let path = file.display().to_string();
    let mut text = String::new();
    let read = if file == Path::new("-") {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(file).map(|contents| text = contents)
    };
    read.map_err(|error| CommandError::RatesFile {
        path: path.clone(),
        line: None,
        message: error.to_string(),
    })?;
    parse_rates(&text).map_err(|(line, message)| CommandError::RatesFile {
        path,
        line: Some(line),
        message,
    })
}

/// Parses the lines of a rates file, or returns the line number and the reason of the first
/// bad one.
fn parse_rates(text: &str) -> Result<Vec<NewFxRate>, (usize, String)> {
    // Spreadsheets often start their CSV files with a byte order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut rates: Vec<NewFxRate> = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line
            .split(',')
            .map(|field| field.trim().trim_matches('"').trim())
            .collect();
        if number == 1 && fields.first() == Some(&"currency") {
            continue;
        }
        let [currency, rate, effective_at] = fields.as_slice() else {
            return Err((
                number,
                format!("`{line}` has {} fields, not 3", fields.len()),
            ));
        };
        let currency = currency.parse().map_err(|error| (number, error))?;
        let rate = rate
            .parse()
            .map_err(|_| (number, format!("`{rate}` is not a rate such as 0.92")))?;
        let effective_at = if effective_at.is_empty() {
            None
        } else {
            let parsed = chrono::DateTime::parse_from_rfc3339(effective_at).map_err(|_| {
                (
                    number,
                    format!(
                        "`{effective_at}` is not an RFC 3339 time such as 2026-12-01T00:00:00Z"
                    ),
                )
            })?;
            Some(parsed.with_timezone(&chrono::Utc))
        };
        if let Some(earlier) = seen.insert((currency, effective_at), number) {
            return Err((
                number,
                format!(
                    "{currency} has a rate for the same time on line {earlier}: keep one, or give each its effective_at"
                ),
            ));
        }
        rates.push(NewFxRate {
            currency,
            rate,
            effective_at,
        });
    }
    Ok(rates)
}

#[cfg(test)]
mod tests {
    use synaxis_shared::money::Currency;

    use super::*;

    #[test]
    fn rates_file_reads_rows_and_names_bad_lines() {
        let rates = parse_rates(
            "currency,rate,effective_at\nEUR,0.92,2026-12-01T00:00:00Z\n# later\nBRL,5.31,\n",
        )
        .unwrap_or_default();
        assert_eq!(rates.len(), 2);
        assert_eq!(rates[0].currency, Currency::Eur);
        assert_eq!(rates[1].effective_at, None);

        let error = parse_rates("currency,rate,effective_at\nEUR,0.92\n").err();
        assert_eq!(error.map(|(line, _)| line), Some(2));
        let error = parse_rates("\u{feff}currency,rate,effective_at\nEUR,0.9,\nEUR,0.91,\n").err();
        assert_eq!(
            error.map(|(line, _)| line),
            Some(3),
            "a second rate for now"
        );
        let quoted = parse_rates("\"GBP\",\"0.79\",\n").unwrap_or_default();
        assert_eq!(quoted.len(), 1);
        let error = parse_rates("JPY,150,\n").err();
        let (line, message) = error.unwrap_or_default();
        assert_eq!(line, 1);
        assert!(message.contains("JPY"), "{message}");
    }
}
