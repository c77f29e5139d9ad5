//! The composable index templates of each mapping mode, checked in under
//! `schemas/elasticsearch/<mode>/` and embedded in the binary.

use super::docs::MappingMode;

/// One template: its name (`PUT _index_template/<name>`) and body.
pub(crate) struct Template {
    pub name: &'static str,
    pub body: &'static str,
}

macro_rules! template {
    ($name:literal, $path:literal) => {
        Template {
            name: $name,
            body: include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../schemas/elasticsearch/",
                $path
            )),
        }
    };
}

const OTEL: &[Template] = &[
    template!("meshgate-otel-traces", "otel/traces.json"),
    template!("meshgate-otel-logs", "otel/logs.json"),
];
const ECS: &[Template] = &[
    template!("meshgate-ecs-traces", "ecs/traces.json"),
    template!("meshgate-ecs-logs", "ecs/logs.json"),
];
const DATAPREPPER: &[Template] = &[
    template!("meshgate-dataprepper-span", "dataprepper/traces.json"),
    template!("meshgate-dataprepper-logs", "dataprepper/logs.json"),
];

/// The templates of `mode`.
pub(crate) fn for_mode(mode: MappingMode) -> &'static [Template] {
    match mode {
        MappingMode::Otel => OTEL,
        MappingMode::Ecs => ECS,
        MappingMode::Dataprepper => DATAPREPPER,
    }
}

/// Data Prepper writes through aliases over rolled-over indices (`otel-v1-apm-span` over
/// `otel-v1-apm-span-000001`), and OpenSearch Dashboards reads `otel-v1-apm-span-*`: writing
/// to the bare alias name before the index exists would create a plain index the Dashboards
/// pattern misses. These are the first indices to create, with their write alias.
pub(crate) fn bootstrap_indices(
    mode: MappingMode,
    traces_index: &str,
    logs_index: &str,
) -> Vec<(String, String)> {
    if mode != MappingMode::Dataprepper {
        return Vec::new();
    }
    [traces_index, logs_index]
        .into_iter()
        .filter(|alias| matches!(*alias, "otel-v1-apm-span" | "logs-otel-v1"))
        .map(|alias| {
            (
                format!("{alias}-000001"),
                serde_json::json!({"aliases": {alias: {"is_write_index": true}}}).to_string(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_is_embedded_and_parses() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/elasticsearch");
        let mut on_disk = 0;
        for mode in std::fs::read_dir(dir).unwrap() {
            for f in std::fs::read_dir(mode.unwrap().path()).unwrap() {
                assert_eq!(f.unwrap().path().extension().unwrap(), "json");
                on_disk += 1;
            }
        }
        let mut embedded = 0;
        for mode in [
            MappingMode::Otel,
            MappingMode::Ecs,
            MappingMode::Dataprepper,
        ] {
            for t in for_mode(mode) {
                embedded += 1;
                let v: serde_json::Value =
                    serde_json::from_str(t.body).unwrap_or_else(|e| panic!("{}: {e}", t.name));
                assert!(v["index_patterns"].is_array(), "{}", t.name);
                assert!(
                    v["template"]["mappings"]["properties"].is_object(),
                    "{}",
                    t.name
                );
                assert!(t.name.starts_with(&format!("meshgate-{}-", mode.as_str())));
                // otel and ecs write data streams; Data Prepper's indices are plain.
                assert_eq!(
                    v.get("data_stream").is_some(),
                    mode != MappingMode::Dataprepper,
                    "{}",
                    t.name
                );
            }
        }
        assert_eq!(embedded, on_disk, "a template on disk is not embedded");
    }

    #[test]
    fn dataprepper_bootstraps_its_write_aliases() {
        let b = bootstrap_indices(MappingMode::Dataprepper, "otel-v1-apm-span", "logs-otel-v1");
        assert_eq!(b[0].0, "otel-v1-apm-span-000001");
        assert!(
            b[0].1
                .contains(r#""otel-v1-apm-span":{"is_write_index":true}"#)
        );
        assert_eq!(b[1].0, "logs-otel-v1-000001");
        assert!(bootstrap_indices(MappingMode::Dataprepper, "custom", "other").is_empty());
        assert!(bootstrap_indices(MappingMode::Otel, "otel-v1-apm-span", "x").is_empty());
    }
}
