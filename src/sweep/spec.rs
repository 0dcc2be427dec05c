//! What a sweep runs: swept parameters, seeds, shards, and the ordered list of runs they expand to.
//!
//! The order of runs is part of the output format (it is the row order of `runs.csv`), so it is
//! fixed here once: the cartesian product of the `--param` value lists in the order the flags were
//! given (the first `--param` varies slowest), with the seeds innermost.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// The most runs one sweep may expand to; a typo such as `--seeds 1..1000000000` should fail fast
/// rather than fill a disk with run folders.
pub const RUN_COUNT_MAX: usize = 1_000_000;

/// Column names `runs.csv` uses itself, so no swept parameter may take them.
pub const RESERVED_COLUMNS: [&str; 3] = ["run", "seed", "status"];

/// A bad flag value: `flag` names the flag (`--param`, `--seeds`, `--shard`, ...), `message` the
/// problem. Displayed as one line, e.g. `--seeds 5..2: the range is empty (start after end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub flag: String,
    pub value: String,
    pub message: String,
}

impl SpecError {
    fn new(flag: &str, value: &str, message: impl Into<String>) -> SpecError {
        SpecError {
            flag: flag.to_string(),
            value: value.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} {}: {}", self.flag, self.value, self.message)
    }
}

impl std::error::Error for SpecError {}

/// One `--param path=v1,v2,...`: a scenario field path and the values it takes, in the order given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweptParam {
    pub path: String,
    pub values: Vec<String>,
}

impl SweptParam {
    /// Parses `path=v1,v2,...`. Values are kept as text: the scenario loader interprets them,
    /// exactly as it does for `--set path=value`.
    pub fn parse(text: &str) -> Result<SweptParam, SpecError> {
        let flag = "--param";
        let Some((path, values_text)) = text.split_once('=') else {
            return Err(SpecError::new(
                flag,
                text,
                "expected path=value1,value2,...",
            ));
        };
        let path = path.trim();
        validate_path(flag, text, path)?;
        if RESERVED_COLUMNS.contains(&path) {
            return Err(SpecError::new(
                flag,
                text,
                format!("'{path}' is a runs.csv column name; it cannot be a parameter"),
            ));
        }
        let mut values: Vec<String> = Vec::new();
        let items =
            split_top_level(values_text).map_err(|problem| SpecError::new(flag, text, problem))?;
        for value in items {
            let value = value.trim();
            if value.is_empty() {
                return Err(SpecError::new(flag, text, "empty value in the list"));
            }
            if values.iter().any(|seen| seen == value) {
                return Err(SpecError::new(
                    flag,
                    text,
                    format!("value '{value}' is listed twice"),
                ));
            }
            values.push(value.to_string());
        }
        Ok(SweptParam {
            path: path.to_string(),
            values,
        })
    }
}

/// Splits a `--param` value list at its top-level commas: commas inside `[...]`, `{...}` or a
/// quoted string belong to the value, so TOML arrays and inline tables can be swept
/// (`observers[0].known_domains=[100,1000],[10000]` has two values).
fn split_top_level(text: &str) -> Result<Vec<&str>, String> {
    let mut items = Vec::new();
    let mut closers: Vec<char> = Vec::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut start = 0;
    for (at, character) in text.char_indices() {
        if let Some(open) = quote {
            if escaped {
                escaped = false;
            } else if character == '\\' && open == '"' {
                escaped = true;
            } else if character == open {
                quote = None;
            }
            continue;
        }
        match character {
            '"' | '\'' => quote = Some(character),
            '[' => closers.push(']'),
            '{' => closers.push('}'),
            ']' | '}' if closers.pop() != Some(character) => {
                return Err(format!("unbalanced '{character}' in the value list"));
            }
            ',' if closers.is_empty() => {
                items.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    if quote.is_some() {
        return Err("a quoted value is not closed".to_owned());
    }
    if let Some(closer) = closers.last() {
        return Err(format!("a value is missing its closing '{closer}'"));
    }
    items.push(&text[start..]);
    Ok(items)
}

/// Checks a `--set` override has the `path=value` shape and returns its path.
pub fn parse_set(text: &str) -> Result<&str, SpecError> {
    let flag = "--set";
    let Some((path, value)) = text.split_once('=') else {
        return Err(SpecError::new(flag, text, "expected path=value"));
    };
    let path = path.trim();
    validate_path(flag, text, path)?;
    if value.trim().is_empty() {
        return Err(SpecError::new(flag, text, "empty value"));
    }
    Ok(path)
}

fn validate_path(flag: &str, text: &str, path: &str) -> Result<(), SpecError> {
    if path.is_empty() {
        return Err(SpecError::new(
            flag,
            text,
            "empty parameter path before '='",
        ));
    }
    let allowed =
        |character: char| character.is_ascii_alphanumeric() || "._-[]".contains(character);
    if let Some(bad) = path.chars().find(|character| !allowed(*character)) {
        return Err(SpecError::new(
            flag,
            text,
            format!("parameter path contains '{bad}' (use letters, digits, '.', '_', '-', '[]')"),
        ));
    }
    Ok(())
}

/// Parses `--seeds`: an inclusive range `A..B` (also `A..=B`), a comma-separated list, or one seed.
/// The result keeps the order given; a seed listed twice is an error.
pub fn parse_seeds(text: &str) -> Result<Vec<u64>, SpecError> {
    let flag = "--seeds";
    let parse_one = |part: &str| -> Result<u64, SpecError> {
        part.trim().parse::<u64>().map_err(|_| {
            SpecError::new(
                flag,
                text,
                format!("'{}' is not a seed (a whole number ≥ 0)", part.trim()),
            )
        })
    };
    let seeds: Vec<u64> = if let Some((start, end)) = text.split_once("..") {
        let end = end.strip_prefix('=').unwrap_or(end);
        let (start, end) = (parse_one(start)?, parse_one(end)?);
        if start > end {
            return Err(SpecError::new(
                flag,
                text,
                "the range is empty (start after end)",
            ));
        }
        let count = end - start + 1;
        if count > RUN_COUNT_MAX as u64 {
            return Err(SpecError::new(
                flag,
                text,
                format!("{count} seeds is more than the {RUN_COUNT_MAX} runs a sweep may have"),
            ));
        }
        (start..=end).collect()
    } else {
        text.split(',').map(parse_one).collect::<Result<_, _>>()?
    };
    for (position, seed) in seeds.iter().enumerate() {
        if seeds[..position].contains(seed) {
            return Err(SpecError::new(
                flag,
                text,
                format!("seed {seed} is listed twice"),
            ));
        }
    }
    Ok(seeds)
}

/// `--shard I/N`: run only the runs whose position in the sweep order is I modulo N.
/// I is **0-based** (0 ≤ I < N), matching `SLURM_ARRAY_TASK_ID` for `--array=0-(N-1)`.
/// Round-robin (rather than contiguous blocks) spreads slow parameter values over all shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub fn parse(text: &str) -> Result<Shard, SpecError> {
        let flag = "--shard";
        let Some((index, count)) = text.split_once('/') else {
            return Err(SpecError::new(
                flag,
                text,
                "expected I/N, e.g. 0/4 (I is 0-based)",
            ));
        };
        let number = |part: &str, what: &str| -> Result<usize, SpecError> {
            part.trim().parse::<usize>().map_err(|_| {
                SpecError::new(
                    flag,
                    text,
                    format!("{what} '{}' is not a whole number", part.trim()),
                )
            })
        };
        let (index, count) = (number(index, "shard index")?, number(count, "shard count")?);
        if count == 0 {
            return Err(SpecError::new(
                flag,
                text,
                "the shard count must be at least 1",
            ));
        }
        if index >= count {
            return Err(SpecError::new(
                flag,
                text,
                format!(
                    "the shard index is 0-based, so it must be in 0..={}",
                    count - 1
                ),
            ));
        }
        Ok(Shard { index, count })
    }

    /// Whether the run at `position` in the sweep order belongs to this shard.
    pub fn contains(&self, position: usize) -> bool {
        position % self.count == self.index
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}/{}", self.index, self.count)
    }
}

/// Everything that decides which runs a sweep holds and what each run computes. Stored as
/// `sweep.json` in the sweep directory so that `merge` can rebuild `runs.csv` and check that
/// shards belong together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepSpec {
    /// The scenario file as given on the command line.
    pub scenario: String,
    /// SHA-256 (hex) of the scenario file's bytes, so a changed scenario is never mixed with
    /// results of the old one.
    pub scenario_sha256: String,
    /// Fixed `--set path=value` overrides applied to every run, in the order given.
    pub sets: Vec<String>,
    pub params: Vec<SweptParam>,
    pub seeds: Vec<u64>,
}

/// One run of a sweep: a value for each swept parameter and a seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// Position in the full (unsharded) sweep order.
    pub position: usize,
    /// `(path, value)` for each swept parameter, in `--param` order.
    pub params: Vec<(String, String)>,
    pub seed: u64,
    /// The run's folder name, derived from `params` and `seed` only (see [`run_name`]).
    pub name: String,
}

impl RunSpec {
    /// The `path=value` overrides for this run: the sweep's fixed sets, then the swept values
    /// (later overrides win, and `new` rejects a path that is both set and swept).
    pub fn overrides(&self, sets: &[String]) -> Vec<String> {
        let swept = self
            .params
            .iter()
            .map(|(path, value)| format!("{path}={value}"));
        sets.iter().cloned().chain(swept).collect()
    }
}

impl SweepSpec {
    /// Builds a spec from already-parsed flags, checking that they fit together.
    pub fn new(
        scenario: String,
        scenario_sha256: String,
        sets: Vec<String>,
        params: Vec<SweptParam>,
        seeds: Vec<u64>,
    ) -> Result<SweepSpec, SpecError> {
        for (position, param) in params.iter().enumerate() {
            if params[..position]
                .iter()
                .any(|earlier| earlier.path == param.path)
            {
                return Err(SpecError::new(
                    "--param",
                    &param.path,
                    "this parameter is swept twice; list all its values in one --param",
                ));
            }
            let label = path_label(&param.path);
            if let Some(earlier) = params[..position]
                .iter()
                .find(|earlier| path_label(&earlier.path) == label)
            {
                return Err(SpecError::new(
                    "--param",
                    &param.path,
                    format!("names the same field as --param {}", earlier.path),
                ));
            }
        }
        for set in &sets {
            let path = parse_set(set)?;
            if params.iter().any(|param| param.path == path) {
                return Err(SpecError::new(
                    "--set",
                    set,
                    format!("'{path}' is also swept with --param; use one or the other"),
                ));
            }
        }
        let mut run_count: usize = seeds.len();
        for param in &params {
            run_count = run_count.saturating_mul(param.values.len());
        }
        if run_count > RUN_COUNT_MAX {
            return Err(SpecError::new(
                "--param",
                &params
                    .iter()
                    .map(|param| param.path.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                format!("the sweep has {run_count} runs, more than the {RUN_COUNT_MAX} allowed"),
            ));
        }
        if seeds.is_empty() {
            return Err(SpecError::new("--seeds", "", "no seeds given"));
        }
        Ok(SweepSpec {
            scenario,
            scenario_sha256,
            sets,
            params,
            seeds,
        })
    }

    /// Every run of the sweep in its fixed order (first `--param` slowest, seeds innermost).
    pub fn runs(&self) -> Vec<RunSpec> {
        let mut combinations: Vec<Vec<(String, String)>> = vec![Vec::new()];
        for param in &self.params {
            let mut extended = Vec::with_capacity(combinations.len() * param.values.len());
            for combination in &combinations {
                for value in &param.values {
                    let mut next = combination.clone();
                    next.push((param.path.clone(), value.clone()));
                    extended.push(next);
                }
            }
            combinations = extended;
        }
        let mut runs = Vec::with_capacity(combinations.len() * self.seeds.len());
        for combination in combinations {
            for &seed in &self.seeds {
                let name = run_name(&combination, seed);
                runs.push(RunSpec {
                    position: runs.len(),
                    params: combination.clone(),
                    seed,
                    name,
                });
            }
        }
        runs
    }

    /// The runs that belong to `shard` (all runs when `None`), still in sweep order.
    pub fn runs_in(&self, shard: Option<Shard>) -> Vec<RunSpec> {
        let mut runs = self.runs();
        if let Some(shard) = shard {
            runs.retain(|run| shard.contains(run.position));
        }
        runs
    }
}

/// A parameter path as written in run folder names: `observers[0].policy` → `observers.0.policy`,
/// because brackets are glob patterns in shells. [`SweepSpec::new`] rejects two swept paths with
/// the same label, so names stay unique.
pub fn path_label(path: &str) -> String {
    path.replace('[', ".").replace(']', "")
}

/// The longest run folder name kept readable; longer names are cut and made unique by a hash.
const RUN_NAME_LENGTH_MAX: usize = 120;

/// A run's folder name: `path=value_..._seed=N` (paths as [`path_label`]s), readable and a
/// function of the run's parameters and seed only, so the same run has the same folder in every
/// sweep and shard that contains it (that is what makes resuming and merging work). Characters
/// outside `[A-Za-z0-9._+-]` in a value
/// become `_`; when that happens, or the name is too long, an 8-hex-digit hash of the exact
/// parameters is appended so two different runs can never share a folder. (Without a hash the name
/// is still unambiguous: values cannot contain `=`, and the parameter paths are fixed per sweep.)
/// No comma, so the name needs no quoting in `runs.csv`.
pub fn run_name(params: &[(String, String)], seed: u64) -> String {
    let safe = |character: char| character.is_ascii_alphanumeric() || "._+-".contains(character);
    let mut name = String::new();
    let mut lossy = false;
    for (path, value) in params {
        name.push_str(&path_label(path));
        name.push('=');
        for character in value.chars() {
            if safe(character) {
                name.push(character);
            } else {
                name.push('_');
                lossy = true;
            }
        }
        name.push('_');
    }
    name.push_str(&format!("seed={seed}"));
    if lossy || name.len() > RUN_NAME_LENGTH_MAX {
        let mut hasher = Sha256::new();
        for (path, value) in params {
            hasher.update(path.as_bytes());
            hasher.update([0]);
            hasher.update(value.as_bytes());
            hasher.update([0]);
        }
        hasher.update(seed.to_be_bytes());
        let digest = hasher.finalize();
        let hash: String = digest[..4]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        // Keep the seed visible at the end; cut the parameter part on a character boundary.
        // Lossy or long names always have parameters, so the name ends with `_seed=N`; keep that
        // visible and cut the parameter part on a character boundary.
        let seed_part = format!("_seed={seed}");
        let mut head: String = name[..name.len() - seed_part.len()].to_string();
        let head_max = RUN_NAME_LENGTH_MAX.saturating_sub(seed_part.len() + 9);
        while head.len() > head_max {
            head.pop();
        }
        name = format!("{head}{seed_part}-{hash}");
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(params: &[&str], seeds: &str) -> SweepSpec {
        let params = params
            .iter()
            .map(|text| SweptParam::parse(text).unwrap())
            .collect();
        SweepSpec::new(
            "s.toml".into(),
            "00".into(),
            vec![],
            params,
            parse_seeds(seeds).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn seeds_parse_ranges_inclusive_and_lists_in_order() {
        assert_eq!(parse_seeds("1..3").unwrap(), vec![1, 2, 3]);
        assert_eq!(parse_seeds("4..=5").unwrap(), vec![4, 5]);
        assert_eq!(parse_seeds("7").unwrap(), vec![7]);
        assert_eq!(parse_seeds("9, 2,5").unwrap(), vec![9, 2, 5]);
        assert!(parse_seeds("5..2").unwrap_err().message.contains("empty"));
        assert!(parse_seeds("1,1").unwrap_err().message.contains("twice"));
        assert!(
            parse_seeds("a..3")
                .unwrap_err()
                .to_string()
                .starts_with("--seeds a..3: ")
        );
        assert!(parse_seeds("-1").is_err());
        assert!(parse_seeds("0..2000000").is_err());
    }

    /// TOML arrays, inline tables and quoted strings keep their commas; the list splits at the
    /// top-level ones only.
    #[test]
    fn params_sweep_arrays_tables_and_quoted_strings() {
        let values = |text: &str| SweptParam::parse(text).map(|param| param.values);
        assert_eq!(
            values("observers[0].known_domains=[100,1000],[10000]").unwrap(),
            ["[100,1000]", "[10000]"]
        );
        assert_eq!(
            values("x={ a = [1, 2], b = \"c,d\" }, 3").unwrap(),
            ["{ a = [1, 2], b = \"c,d\" }", "3"]
        );
        assert_eq!(
            values("x=\"a,\\\"b\",'c,d'").unwrap(),
            ["\"a,\\\"b\"", "'c,d'"]
        );
        assert_eq!(values("x=1,2").unwrap(), ["1", "2"]);
        for (bad, problem) in [
            ("x=[1,2", "closing ']'"),
            ("x=1],2", "unbalanced ']'"),
            ("x=[1,2}", "unbalanced '}'"),
            ("x=\"a,b", "not closed"),
        ] {
            let error = SweptParam::parse(bad).unwrap_err();
            assert!(error.message.contains(problem), "{bad}: {}", error.message);
        }
    }

    #[test]
    fn params_parse_and_reject_malformed_lists() {
        let param = SweptParam::parse("policy.recheck=never, at_expiry").unwrap();
        assert_eq!(param.path, "policy.recheck");
        assert_eq!(param.values, vec!["never", "at_expiry"]);
        for bad in [
            "noequals", "=1,2", "a=1,,2", "a=1,1", "seed=1,2", "a b=1", "a=",
        ] {
            let error = SweptParam::parse(bad).unwrap_err();
            assert_eq!(error.flag, "--param", "{bad}");
            assert!(!error.to_string().contains('\n'));
        }
    }

    #[test]
    fn shard_is_zero_based_and_validated() {
        assert_eq!(Shard::parse("0/4").unwrap(), Shard { index: 0, count: 4 });
        assert_eq!(Shard::parse("3/4").unwrap().index, 3);
        assert!(Shard::parse("4/4").unwrap_err().message.contains("0-based"));
        assert!(Shard::parse("0/0").is_err());
        assert!(Shard::parse("1").is_err());
        assert!(Shard::parse("x/2").is_err());
    }

    #[test]
    fn runs_follow_flag_order_with_seeds_innermost() {
        let sweep = spec(&["a=1,2", "b=x,y,z"], "5..6");
        let runs = sweep.runs();
        assert_eq!(runs.len(), 12);
        assert_eq!(runs[0].name, "a=1_b=x_seed=5");
        assert_eq!(runs[1].name, "a=1_b=x_seed=6");
        assert_eq!(runs[2].name, "a=1_b=y_seed=5");
        assert_eq!(runs[11].name, "a=2_b=z_seed=6");
        assert!(
            runs.iter()
                .enumerate()
                .all(|(position, run)| run.position == position)
        );
        assert_eq!(
            runs[3].overrides(&["c=1".into()]),
            vec!["c=1", "a=1", "b=y"]
        );
    }

    #[test]
    fn shards_partition_the_runs() {
        let sweep = spec(&["a=1,2,3"], "1..5");
        let mut seen: Vec<usize> = Vec::new();
        for index in 0..4 {
            let shard = Shard { index, count: 4 };
            seen.extend(sweep.runs_in(Some(shard)).iter().map(|run| run.position));
        }
        seen.sort();
        assert_eq!(seen, (0..15).collect::<Vec<_>>());
        assert_eq!(sweep.runs_in(None).len(), 15);
    }

    #[test]
    fn run_names_are_unique_even_when_values_need_escaping() {
        let a = run_name(&[("p".into(), "a/b".into())], 1);
        let b = run_name(&[("p".into(), "a b".into())], 1);
        assert_ne!(a, b);
        assert!(a.starts_with("p=a_b_seed=1-"));
        assert!(!a.contains('/'));
        let long_value = "v".repeat(300);
        let long = run_name(&[("p".into(), long_value)], 42);
        assert!(long.len() <= RUN_NAME_LENGTH_MAX);
        assert!(long.contains("_seed=42-"));
        assert_eq!(run_name(&[], 3), "seed=3");
        let indexed = run_name(&[("groups[0].lifetime".into(), "1d".into())], 2);
        assert_eq!(indexed, "groups.0.lifetime=1d_seed=2");
        let bracketed = run_name(&[("p".into(), "[5]".into())], 1);
        assert!(bracketed.starts_with("p=_5__seed=1-"), "{bracketed}");
    }

    #[test]
    fn set_and_param_on_the_same_path_conflict() {
        let params = vec![SweptParam::parse("a=1,2").unwrap()];
        let error = SweepSpec::new("s".into(), "0".into(), vec!["a=3".into()], params, vec![1])
            .unwrap_err();
        assert_eq!(error.flag, "--set");
        let twice = vec![
            SweptParam::parse("a=1").unwrap(),
            SweptParam::parse("a=2").unwrap(),
        ];
        assert!(SweepSpec::new("s".into(), "0".into(), vec![], twice, vec![1]).is_err());
        let aliased = vec![
            SweptParam::parse("a[0]=1").unwrap(),
            SweptParam::parse("a.0=2").unwrap(),
        ];
        let error = SweepSpec::new("s".into(), "0".into(), vec![], aliased, vec![1]).unwrap_err();
        assert!(error.message.contains("same field"), "{error}");
    }
}
