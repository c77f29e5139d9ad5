use meshgate_config::ByteSize;
use schemars::JsonSchema;
use serde::Deserialize;

/// `receivers.zipkin`: the OpenTelemetry Collector's `zipkin` receiver options that mean the
/// same here.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ZipkinConfig {
    /// `host:port` to listen on. Default `127.0.0.1:9411` (Zipkin's port, loopback like the
    /// `otlp` receiver's defaults); use `0.0.0.0:9411` to accept spans from sidecars and pods.
    pub endpoint: String,
    /// Largest accepted body, both as sent and after decompression. Default `20MiB` (as the
    /// `otlp` receiver's HTTP side); bigger bodies get `413`.
    pub max_request_body_size: ByteSize,
    /// Turn tag values that look like numbers or booleans into typed attributes: `-?\d+` an
    /// integer, `-?\d+\.\d+` a double, `true`/`false` a boolean (the Collector's rule).
    /// Zipkin tags are always strings on the wire; Envoy sends `http.status_code` as `"200"`.
    /// Default `false`: every tag stays a string attribute (meshgate's filters and mesh rules
    /// compare `"200"` and `200` alike anyway).
    pub parse_string_tags: bool,
}

impl Default for ZipkinConfig {
    fn default() -> Self {
        Self {
            endpoint: "127.0.0.1:9411".into(),
            max_request_body_size: ByteSize(20 * 1024 * 1024),
            parse_string_tags: false,
        }
    }
}

impl ZipkinConfig {
    /// Checks what the schema cannot: the endpoint has a port, the body limit is not zero.
    pub fn validate(&self) -> Result<(), String> {
        let port = self
            .endpoint
            .rsplit_once(':')
            .map(|(host, port)| (host, port.parse::<u16>()));
        match port {
            Some((host, Ok(_))) if !host.is_empty() => {}
            _ => {
                return Err(format!(
                    "`endpoint` `{}` is not `host:port` (for example `0.0.0.0:9411`)",
                    self.endpoint
                ));
            }
        }
        if self.max_request_body_size.0 == 0 {
            return Err("`max_request_body_size` must be greater than 0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_checks() {
        let c: ZipkinConfig = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(c.endpoint, "127.0.0.1:9411");
        assert_eq!(c.max_request_body_size.0, 20 * 1024 * 1024);
        assert!(!c.parse_string_tags);
        assert!(c.validate().is_ok());

        let c: ZipkinConfig = serde_json::from_value(serde_json::json!({
            "endpoint": "[::]:9411", "max_request_body_size": "1MiB", "parse_string_tags": true
        }))
        .unwrap();
        assert!(c.validate().is_ok());
        assert_eq!(c.max_request_body_size.0, 1024 * 1024);

        let bad: ZipkinConfig =
            serde_json::from_value(serde_json::json!({"endpoint": "localhost"})).unwrap();
        assert!(
            bad.validate()
                .unwrap_err()
                .contains("`localhost` is not `host:port`")
        );
        let bad: ZipkinConfig =
            serde_json::from_value(serde_json::json!({"max_request_body_size": 0})).unwrap();
        assert!(bad.validate().unwrap_err().contains("greater than 0"));

        let unknown = serde_json::from_value::<ZipkinConfig>(serde_json::json!({"endpiont": "x"}));
        assert!(
            unknown
                .unwrap_err()
                .to_string()
                .contains("unknown field `endpiont`")
        );
    }
}
