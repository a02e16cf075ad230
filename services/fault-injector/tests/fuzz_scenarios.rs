//! Fixed-budget fuzzing of the scenario-file parser (TOML and YAML): random text and damaged
//! copies of the shipped scenarios (deploy/scenarios) give a scenario or a typed
//! `ScenarioError`, never a panic. The budget is proptest's: 256 cases per property by
//! default, `PROPTEST_CASES=N` for more (`make fuzz`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{path::Path, sync::LazyLock};

use mabeam_fault_injector::scenario::{parse, Format};
use proptest::prelude::*;

/// The shipped scenario files and their formats.
static SEEDS: LazyLock<Vec<(Format, String)>> = LazyLock::new(|| {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/scenarios");
    let mut seeds: Vec<(Format, String)> = std::fs::read_dir(&dir)
        .expect("deploy/scenarios")
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let format = Format::from_path(&p).ok()?;
            Some((format, std::fs::read_to_string(&p).unwrap()))
        })
        .collect();
    seeds.sort_by(|a, b| a.1.cmp(&b.1));
    assert!(seeds.len() >= 2, "no scenario files in {}", dir.display());
    for (format, text) in &seeds {
        parse(text, *format).expect("shipped scenarios parse");
    }
    seeds
});

fn format() -> impl Strategy<Value = Format> {
    prop_oneof![Just(Format::Toml), Just(Format::Yaml)]
}

/// A damage to a text: replace, insert or delete a span, or cut it.
#[derive(Debug, Clone)]
enum Damage {
    Replace(usize, String),
    Insert(usize, String),
    Delete(usize, usize),
    Truncate(usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    // Tokens that matter to TOML and YAML, and to the scenario schema.
    let token = prop_oneof![
        Just("[[steps]]".to_owned()),
        Just("\n- ".to_owned()),
        Just("&a [*a, *a]".to_owned()),
        Just("at_ms = 18446744073709551615".to_owned()),
        Just("duration_ms: -1".to_owned()),
        Just("{".to_owned()),
        Just("\"".to_owned()),
        Just("\u{0}".to_owned()),
        Just("heal_all = true".to_owned()),
        "\\PC{0,12}",
    ];
    prop_oneof![
        (any::<usize>(), token.clone()).prop_map(|(at, t)| Damage::Replace(at, t)),
        (any::<usize>(), token).prop_map(|(at, t)| Damage::Insert(at, t)),
        (any::<usize>(), 1usize..64).prop_map(|(at, n)| Damage::Delete(at, n)),
        any::<usize>().prop_map(Damage::Truncate),
    ]
}

fn boundary(text: &str, at: usize) -> usize {
    let mut at = at % (text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn apply(text: &mut String, damage: &Damage) {
    match damage {
        Damage::Replace(at, t) => {
            let start = boundary(text, *at);
            let end = boundary(text, start + t.len()).max(start);
            text.replace_range(start..end, t);
        }
        Damage::Insert(at, t) => {
            let at = boundary(text, *at);
            text.insert_str(at, t);
        }
        Damage::Delete(at, n) => {
            let start = boundary(text, *at);
            let end = boundary(text, start.saturating_add(*n)).max(start);
            text.replace_range(start..end, "");
        }
        Damage::Truncate(at) => {
            let at = boundary(text, *at);
            text.truncate(at);
        }
    }
}

proptest! {
    #[test]
    fn random_text_gives_a_scenario_or_a_typed_error(text in "\\PC{0,2048}", format in format()) {
        let _ = parse(&text, format);
    }

    #[test]
    fn damaged_scenarios_give_a_scenario_or_a_typed_error(
        which in any::<prop::sample::Index>(),
        damages in prop::collection::vec(damage(), 1..8),
        swap_format in any::<bool>(),
    ) {
        let (format, seed) = &SEEDS[which.index(SEEDS.len())];
        let mut text = seed.clone();
        for d in &damages {
            apply(&mut text, d);
        }
        let format = match (swap_format, format) {
            (false, f) => *f,
            (true, Format::Toml) => Format::Yaml,
            (true, Format::Yaml) => Format::Toml,
        };
        if let Ok(scenario) = parse(&text, format) {
            // What parses is a valid scenario: named, with steps in time order.
            prop_assert!(!scenario.name.trim().is_empty());
            prop_assert!(scenario.steps.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
        }
    }
}
