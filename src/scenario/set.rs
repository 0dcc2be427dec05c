//! `--set path=value`: overrides one field of a scenario before it is validated.
//!
//! The path is dotted, with `[index]` for array elements (`observers[0].policy.recheck`). The
//! value is read as a TOML value (`2.5`, `true`, `"7d"`, `[1, 2]`); anything that is not valid
//! TOML is taken as a string, so `--set duration=7d` works without quotes.

/// Applies `assignment` (`path=value`) to `table`. Errors are (path, problem).
pub fn apply_set(table: &mut toml::Table, assignment: &str) -> Result<(), (String, String)> {
    let Some((path, value_text)) = assignment.split_once('=') else {
        return Err((
            format!("--set {assignment}"),
            "expected path=value".to_owned(),
        ));
    };
    let path = path.trim();
    let value = parse_value(value_text.trim());
    let steps = parse_path(path).map_err(|problem| (format!("--set {path}"), problem))?;
    let (last, parents) = steps
        .split_last()
        .expect("parse_path returns at least one step");
    let Some((Step::Key(first), middle)) = parents.split_first() else {
        // A single step: a top-level field.
        let Step::Key(key) = last else {
            unreachable!("parse_path starts with a key");
        };
        table.insert(key.clone(), value);
        return Ok(());
    };
    let mut current: &mut toml::Value = table
        .entry(first.clone())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    for step in middle {
        current = descend(current, step, path)?;
    }
    match (last, current) {
        (Step::Key(key), toml::Value::Table(inner)) => {
            inner.insert(key.clone(), value);
            Ok(())
        }
        (Step::Index(index), toml::Value::Array(items)) => {
            let length = items.len();
            match items.get_mut(*index) {
                Some(slot) => {
                    *slot = value;
                    Ok(())
                }
                None => Err((
                    format!("--set {path}"),
                    format!("no element {index} (the array has {length})"),
                )),
            }
        }
        _ => Err((
            format!("--set {path}"),
            "the path goes through something that is not a table or array".to_owned(),
        )),
    }
}

enum Step {
    Key(String),
    Index(usize),
}

fn parse_path(path: &str) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    for part in path.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(position) => (&part[..position], &part[position..]),
            None => (part, ""),
        };
        if name.is_empty() {
            return Err("empty field name in the path".to_owned());
        }
        steps.push(Step::Key(name.to_owned()));
        while !rest.is_empty() {
            let close = rest
                .find(']')
                .ok_or_else(|| "unclosed '[' in the path".to_owned())?;
            let index: usize = rest[1..close]
                .parse()
                .map_err(|_| format!("{:?} is not an array index", &rest[1..close]))?;
            steps.push(Step::Index(index));
            rest = &rest[close + 1..];
        }
    }
    Ok(steps)
}

fn descend<'value>(
    current: &'value mut toml::Value,
    step: &Step,
    path: &str,
) -> Result<&'value mut toml::Value, (String, String)> {
    match (step, current) {
        (Step::Key(key), toml::Value::Table(inner)) => Ok(inner
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))),
        (Step::Index(index), toml::Value::Array(items)) => {
            let length = items.len();
            items.get_mut(*index).ok_or_else(|| {
                (
                    format!("--set {path}"),
                    format!("no element {index} (the array has {length})"),
                )
            })
        }
        _ => Err((
            format!("--set {path}"),
            "the path goes through something that is not a table or array".to_owned(),
        )),
    }
}

fn parse_value(text: &str) -> toml::Value {
    let document = format!("value = {text}");
    match toml::from_str::<toml::Table>(&document) {
        Ok(mut table) => table
            .remove("value")
            .unwrap_or(toml::Value::String(text.to_owned())),
        Err(_) => toml::Value::String(text.to_owned()),
    }
}
