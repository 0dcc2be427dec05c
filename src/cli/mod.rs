//! Command-line front end. Each subcommand lives in its own module with an `Args` struct (clap)
//! and a `run` function; errors are [`CliError`] values that `main` maps to exit codes.

pub mod resolve;

use std::fmt;

/// An error that ends a command: printed as one line on stderr, then the process exits with
/// `exit_code`.
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    /// 2 for bad input (a malformed file, flag or value), 1 for a failed check or run.
    pub exit_code: i32,
}

impl CliError {
    /// Bad input from the user: exit code 2.
    pub fn input(message: impl fmt::Display) -> CliError {
        CliError {
            message: message.to_string(),
            exit_code: 2,
        }
    }

    /// A run or check that failed: exit code 1.
    pub fn failure(message: impl fmt::Display) -> CliError {
        CliError {
            message: message.to_string(),
            exit_code: 1,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.message)
    }
}

/// Reads a whole input file, where `-` means standard input.
pub fn read_input(path: &str) -> Result<String, CliError> {
    use std::io::Read;
    if path == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|error| CliError::input(format!("<stdin>: cannot read: {error}")))?;
        Ok(text)
    } else {
        std::fs::read_to_string(path)
            .map_err(|error| CliError::input(format!("{path}: cannot read: {error}")))
    }
}
pub mod plot;
pub mod sweep;

pub mod bench;
pub mod check;
pub mod pdu;
pub mod policies;
pub mod repro;
pub mod run;
