//! A scenario's own sweep: the optional `[sweep]` table of a scenario file, used by
//! `fedsim sweep SCENARIO` when no `--param` / `--seeds` flag is given.
//!
//! ```toml
//! [sweep]
//! seeds = "1..20"                 # --seeds syntax, or an array: [1, 2, 3]
//! params = [                      # in --param order (the first varies slowest)
//!   { path = "federation.domain_groups[0].key_lifetime", values = ["1h", "1d", "7d"] },
//!   { path = "observers[0].policy.max_in_flight", values = [1, 8, 64] },
//! ]
//! ```

use super::spec::{SweptParam, parse_seeds};

/// The sweep a scenario file declares (both parts optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScenarioSweep {
    pub params: Vec<SweptParam>,
    pub seeds: Option<Vec<u64>>,
}

/// Reads the `[sweep]` table of scenario `text` (the file named `file`, for messages). A file
/// without one gives an empty sweep. Errors are one line: `file: sweep.field: problem`.
pub fn scenario_sweep(file: &str, text: &str) -> Result<ScenarioSweep, String> {
    let table: toml::Table = toml::from_str(text)
        .map_err(|error| format!("{file}: not valid TOML: {}", one_line(&error)))?;
    let Some(sweep) = table.get("sweep") else {
        return Ok(ScenarioSweep::default());
    };
    let sweep = sweep
        .as_table()
        .ok_or_else(|| format!("{file}: sweep: must be a table"))?;
    if let Some(unknown) = sweep
        .keys()
        .find(|key| !["seeds", "params"].contains(&key.as_str()))
    {
        return Err(format!(
            "{file}: sweep.{unknown}: unknown field (expected seeds, params)"
        ));
    }
    let seeds = match sweep.get("seeds") {
        None => None,
        Some(toml::Value::String(text)) => Some(
            parse_seeds(text).map_err(|error| format!("{file}: sweep.seeds: {}", error.message))?,
        ),
        Some(toml::Value::Array(items)) => {
            let seeds: Option<Vec<u64>> = items
                .iter()
                .map(|item| item.as_integer().and_then(|seed| u64::try_from(seed).ok()))
                .collect();
            let seeds = seeds.ok_or_else(|| {
                format!("{file}: sweep.seeds: the array must hold whole numbers ≥ 0")
            })?;
            let list: Vec<String> = seeds.iter().map(u64::to_string).collect();
            Some(
                parse_seeds(&list.join(","))
                    .map_err(|error| format!("{file}: sweep.seeds: {}", error.message))?,
            )
        }
        Some(_) => {
            return Err(format!(
                "{file}: sweep.seeds: expected \"A..B\" or an array"
            ));
        }
    };
    let mut params = Vec::new();
    if let Some(list) = sweep.get("params") {
        let list = list.as_array().ok_or_else(|| {
            format!("{file}: sweep.params: expected an array of {{ path, values }}")
        })?;
        for (index, entry) in list.iter().enumerate() {
            let field = format!("{file}: sweep.params[{index}]");
            params.push(param_from_toml(&field, entry)?);
        }
    }
    Ok(ScenarioSweep { params, seeds })
}

fn param_from_toml(field: &str, entry: &toml::Value) -> Result<SweptParam, String> {
    let entry = entry
        .as_table()
        .ok_or_else(|| format!("{field}: expected {{ path = \"...\", values = [...] }}"))?;
    let path = entry
        .get("path")
        .and_then(toml::Value::as_str)
        .ok_or_else(|| format!("{field}.path: missing or not a string"))?;
    let values = entry
        .get("values")
        .and_then(toml::Value::as_array)
        .ok_or_else(|| format!("{field}.values: missing or not an array"))?;
    let mut texts = Vec::with_capacity(values.len());
    for value in values {
        let text = match value {
            toml::Value::String(text) => text.clone(),
            // Arrays and inline tables as TOML text: their commas are inside brackets, which
            // the value list's split keeps together.
            toml::Value::Integer(_)
            | toml::Value::Float(_)
            | toml::Value::Boolean(_)
            | toml::Value::Array(_)
            | toml::Value::Table(_) => value.to_string(),
            toml::Value::Datetime(_) => {
                return Err(format!("{field}.values: dates are not scenario values"));
            }
        };
        if matches!(value, toml::Value::String(_)) && text.contains(',') {
            return Err(format!("{field}.values: '{text}' contains a comma"));
        }
        texts.push(text);
    }
    SweptParam::parse(&format!("{path}={}", texts.join(",")))
        .map_err(|error| format!("{field}: {}", error.message))
}

fn one_line(error: &toml::de::Error) -> String {
    error
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_params_in_order_and_seeds_in_both_forms() {
        let text = r#"
name = "x"
[sweep]
seeds = "2..4"
params = [
  { path = "groups[0].lifetime", values = ["1h", "1d"] },
  { path = "observers[0].cap", values = [1, 64] },
  { path = "b", values = [0.5, true] },
  { path = "observers[0].known_domains", values = [[100, 1000], [10000]] },
]
"#;
        let sweep = scenario_sweep("s.toml", text).unwrap();
        assert_eq!(sweep.seeds, Some(vec![2, 3, 4]));
        assert_eq!(sweep.params.len(), 4);
        assert_eq!(sweep.params[3].values, vec!["[100, 1000]", "[10000]"]);
        assert_eq!(sweep.params[0].path, "groups[0].lifetime");
        assert_eq!(sweep.params[1].values, vec!["1", "64"]);
        assert_eq!(sweep.params[2].values, vec!["0.5", "true"]);
        let listed = scenario_sweep("s.toml", "[sweep]\nseeds = [7, 1]\n").unwrap();
        assert_eq!(listed.seeds, Some(vec![7, 1]));
        assert_eq!(
            scenario_sweep("s.toml", "name = 1\n").unwrap(),
            ScenarioSweep::default()
        );
    }

    #[test]
    fn errors_name_file_and_field() {
        let cases = [
            (
                "[sweep]\nseeds = \"5..1\"\n",
                "s.toml: sweep.seeds: the range is empty",
            ),
            ("[sweep]\nseed = 1\n", "s.toml: sweep.seed: unknown field"),
            (
                "[sweep]\nparams = [{ path = \"a\" }]\n",
                "s.toml: sweep.params[0].values: missing",
            ),
            (
                "[sweep]\nparams = [{ path = \"a\", values = [\"x,y\"] }]\n",
                "contains a comma",
            ),
            (
                "[sweep]\nparams = [{ path = \"a\", values = [1, 1] }]\n",
                "listed twice",
            ),
            ("[sweep\n", "s.toml: not valid TOML"),
        ];
        for (text, expected) in cases {
            let error = scenario_sweep("s.toml", text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
            assert!(!error.contains('\n'));
        }
    }
}
