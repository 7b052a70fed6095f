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
//!
//! A list, tuple or map literal takes a missing variable as an item too
//! (`[first, last]|join(' ')`, `{'k': missing}|length`), so the check also
//! looks inside sequences and maps, the filtered value's included, and
//! [`holds_undefined`] lets the formatter refuse to print such a value.
//!
//! `debug`, which would show a tenant the renderer's whole environment, is
//! replaced by a function that refuses to run.

use minijinja::value::{Rest, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State, filters, functions};

/// Registers every built-in filter and function that takes an argument
/// behind [`checked`]'s check that they are defined.
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
    env.add_function("debug", |_: Rest<Value>| -> Result<Value, Error> {
        Err(Error::new(
            ErrorKind::InvalidOperation,
            "debug is not available in templates",
        ))
    });
}

/// `inner` behind the check that its arguments from `from` on are defined.
fn checked(
    inner: Value,
    from: usize,
) -> impl Fn(&State, Rest<Value>) -> Result<Value, Error> + Send + Sync + 'static {
    move |state: &State, args: Rest<Value>| {
        for (i, arg) in args.iter().enumerate() {
            // Those before `from` may be undefined themselves, not hold one.
            if (i >= from && arg.is_undefined()) || holds_undefined(arg) {
                return Err(Error::from(ErrorKind::UndefinedError));
            }
        }
        inner.call(state, &args)
    }
}

/// How many items [`holds_undefined`] looks at, at most, in one value.
///
/// Only the template's own literals can hold an undefined value (the data
/// is JSON, which has none), and they are short; a large list comes from
/// the data, and walking all of it on every filter call (`items|length`
/// in a loop over `items`) would cost far more than the filter, unfuelled.
/// An undefined value placed after this many items (`range(2000)|list +
/// [missing]`) is not found here.
const LOOK_AT: usize = 1000;

/// Whether `value` is a sequence or a map (keyword arguments included)
/// holding an undefined value, at any depth, among its first [`LOOK_AT`]
/// items.
pub fn holds_undefined(value: &Value) -> bool {
    let mut budget = LOOK_AT;
    holds(value, &mut budget)
}

fn holds(value: &Value, budget: &mut usize) -> bool {
    let is_map = value.is_kwargs() || value.kind() == ValueKind::Map;
    if !is_map && value.kind() != ValueKind::Seq {
        return false;
    }
    let Ok(items) = value.try_iter() else {
        return false;
    };
    for item in items {
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        // A map's iteration gives its keys; the values are what may be missing.
        let item = if is_map {
            value.get_item(&item).unwrap_or_default()
        } else {
            item
        };
        if item.is_undefined() || holds(&item, budget) {
            return true;
        }
    }
    false
}
