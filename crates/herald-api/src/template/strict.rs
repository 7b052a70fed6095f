//! Built-in filters and functions that refuse a missing value as an argument.
//!
//! MiniJinja's strict mode refuses an undefined value where it prints one,
//! iterates it or converts it to a string, but a filter or function that
//! takes any value (`format`, `join`'s separator as an `Option`, `dict`'s
//! keyword arguments, `range`'s optional bounds) takes an undefined one as
//! it is and prints it as nothing, or as `undefined`, or drops it. Each
//! built-in is registered again here behind a check that every argument is
//! defined, so a missing variable is the same "undefined value" error
//! wherever it is used. `default` (and `d`) keep taking an undefined value
//! to filter, which is what they are for; their fallback must be defined.
//! Tests (`is defined`, …) are left alone: asking about a missing value is
//! their purpose.

use minijinja::value::{Rest, Value};
use minijinja::{Environment, Error, ErrorKind, State, filters, functions};

/// Registers every built-in filter and function that takes an argument
/// behind [`defined`]'s check.
pub fn install(env: &mut Environment<'_>) {
    macro_rules! filter {
        ($($name:literal => $f:path),* $(,)?) => {
            $(env.add_filter($name, checked(Value::from_function($f), 0));)*
        };
    }
    filter! {
        "lower" => filters::lower,
        "upper" => filters::upper,
        "title" => filters::title,
        "capitalize" => filters::capitalize,
        "replace" => filters::replace,
        "length" => filters::length,
        "count" => filters::length,
        "dictsort" => filters::dictsort,
        "items" => filters::items,
        "reverse" => filters::reverse,
        "trim" => filters::trim,
        "join" => filters::join,
        "split" => filters::split,
        "lines" => filters::lines,
        "round" => filters::round,
        "abs" => filters::abs,
        "int" => filters::int,
        "float" => filters::float,
        "attr" => filters::attr,
        "first" => filters::first,
        "last" => filters::last,
        "min" => filters::min,
        "max" => filters::max,
        "sort" => filters::sort,
        "list" => filters::list,
        "string" => filters::string,
        "bool" => filters::bool,
        "batch" => filters::batch,
        "slice" => filters::slice,
        "sum" => filters::sum,
        "indent" => filters::indent,
        "select" => filters::select,
        "reject" => filters::reject,
        "selectattr" => filters::selectattr,
        "rejectattr" => filters::rejectattr,
        "map" => filters::map,
        "groupby" => filters::groupby,
        "unique" => filters::unique,
        "chain" => filters::chain,
        "zip" => filters::zip,
        "pprint" => filters::pprint,
        "format" => filters::format,
        "escape" => filters::escape,
        "e" => filters::escape,
        "safe" => filters::safe,
    }
    // The value filtered may be missing; the fallback may not.
    env.add_filter(
        "default",
        checked(Value::from_function(filters::default), 1),
    );
    env.add_filter("d", checked(Value::from_function(filters::default), 1));
    env.add_function("range", checked(Value::from_function(functions::range), 0));
    env.add_function("dict", checked(Value::from_function(functions::dict), 0));
    env.add_function(
        "namespace",
        checked(Value::from_function(functions::namespace), 0),
    );
    env.add_function("debug", checked(Value::from_function(functions::debug), 0));
}

/// `inner` behind the check that its arguments from `from` on are defined.
fn checked(
    inner: Value,
    from: usize,
) -> impl Fn(&State, Rest<Value>) -> Result<Value, Error> + Send + Sync + 'static {
    move |state: &State, args: Rest<Value>| {
        for arg in args.iter().skip(from) {
            defined(arg)?;
        }
        inner.call(state, &args)
    }
}

/// Refuses an undefined value, and a keyword argument whose value is one.
fn defined(value: &Value) -> Result<(), Error> {
    if value.is_undefined() {
        return Err(Error::from(ErrorKind::UndefinedError));
    }
    if value.is_kwargs() {
        for key in value.try_iter()? {
            if value.get_item(&key)?.is_undefined() {
                return Err(Error::from(ErrorKind::UndefinedError));
            }
        }
    }
    Ok(())
}
