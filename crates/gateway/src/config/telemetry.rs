//! `[telemetry]`: OpenTelemetry traces exported over OTLP/HTTP. Off unless
//! an endpoint is named, here or in the standard `OTEL_*` variables.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Where and how spans are exported.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The OTLP/HTTP collector's base URL (`http://host:4318`); spans go to
    /// its `/v1/traces`. Empty: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as
    /// is), else `OTEL_EXPORTER_OTLP_ENDPOINT`; neither: tracing is off.
    pub otlp_endpoint: String,
    /// The `service.name` of Tether's spans. Empty: `OTEL_SERVICE_NAME`,
    /// else `tether`.
    pub service_name: String,
    /// The share of traces started here that are recorded, 0.0 to 1.0
    /// (requests that arrive in a trace follow its sampled flag).
    pub sample_ratio: f64,
    /// Finished spans waiting for export at most; beyond, spans are dropped
    /// (and counted), never waited for.
    pub queue_size: usize,
    /// Spans sent in one export request at most.
    pub batch_size: usize,
    /// How long spans may wait for a fuller batch, in ms.
    pub flush_interval_ms: u64,
    /// How long one export may take before its spans are dropped, in ms.
    pub export_timeout_ms: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: String::new(),
            service_name: String::new(),
            sample_ratio: 1.0,
            queue_size: 2048,
            batch_size: 512,
            flush_interval_ms: 1000,
            export_timeout_ms: 5000,
        }
    }
}

/// The most finished spans that may wait for export.
const MAX_QUEUE: usize = 1_000_000;
/// The most spans in one export request.
const MAX_BATCH: usize = 10_000;

/// The traces endpoint and service name to use, with the standard
/// environment variables filled in where the section leaves them empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exporting {
    /// The full URL spans are POSTed to.
    pub traces_url: String,
    /// The `service.name` resource attribute.
    pub service_name: String,
}

impl TelemetryConfig {
    /// Where spans go, or `None` when tracing is off. `var` reads an
    /// environment variable (the process's, in production).
    pub fn exporting(&self, var: impl Fn(&str) -> Option<String>) -> Option<Exporting> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let traces_url = if !self.otlp_endpoint.is_empty() {
            traces_path(&self.otlp_endpoint)
        } else if let Some(full) = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            full
        } else {
            traces_path(&var("OTEL_EXPORTER_OTLP_ENDPOINT")?)
        };
        let service_name = match &self.service_name {
            name if !name.is_empty() => name.clone(),
            _ => var("OTEL_SERVICE_NAME").unwrap_or_else(|| "tether".into()),
        };
        Some(Exporting {
            traces_url,
            service_name,
        })
    }

    /// Checks the section's own rules (the endpoint as configured here;
    /// one from the environment is checked when the exporter is built).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(ConfigError::Invalid(format!(
                "telemetry.sample_ratio ({}) must be between 0.0 and 1.0",
                self.sample_ratio
            )));
        }
        if !(1..=MAX_QUEUE).contains(&self.queue_size)
            || !(1..=self.queue_size.min(MAX_BATCH)).contains(&self.batch_size)
            || self.export_timeout_ms == 0
        {
            return Err(ConfigError::Invalid(format!(
                "telemetry.queue_size must be 1..={MAX_QUEUE}, batch_size 1..=min(queue_size, {MAX_BATCH}), export_timeout_ms positive"
            )));
        }
        if !self.otlp_endpoint.is_empty() {
            check_url(&self.otlp_endpoint)?;
        }
        Ok(())
    }
}

/// Whether `url` can take OTLP/HTTP exports.
pub fn check_url(url: &str) -> Result<(), ConfigError> {
    let parsed = url::Url::parse(url)
        .map_err(|e| ConfigError::Invalid(format!("telemetry endpoint {url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(ConfigError::Invalid(format!(
            "telemetry endpoint {url:?} must be an http(s) URL"
        )));
    }
    Ok(())
}

/// A collector's base URL with the traces path the OTLP/HTTP spec gives it.
fn traces_path(base: &str) -> String {
    format!("{}/v1/traces", base.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn off_without_an_endpoint() {
        assert_eq!(TelemetryConfig::default().exporting(env(&[])), None);
        let blank = [("OTEL_EXPORTER_OTLP_ENDPOINT", " ")];
        assert_eq!(TelemetryConfig::default().exporting(env(&blank)), None);
    }

    #[test]
    fn the_section_wins_over_the_environment() {
        let config = TelemetryConfig {
            otlp_endpoint: "http://collector:4318/".into(),
            service_name: "edge".into(),
            ..TelemetryConfig::default()
        };
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://other:4318"),
            ("OTEL_SERVICE_NAME", "other"),
        ];
        let exporting = config.exporting(env(&vars)).unwrap();
        assert_eq!(exporting.traces_url, "http://collector:4318/v1/traces");
        assert_eq!(exporting.service_name, "edge");
    }

    #[test]
    fn the_standard_variables_fill_in() {
        let base = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_SERVICE_NAME", "gw"),
        ];
        let exporting = TelemetryConfig::default().exporting(env(&base)).unwrap();
        assert_eq!(exporting.traces_url, "http://c:4318/v1/traces");
        assert_eq!(exporting.service_name, "gw");
        let full = [
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:9/custom"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
        ];
        let exporting = TelemetryConfig::default().exporting(env(&full)).unwrap();
        assert_eq!(exporting.traces_url, "http://c:9/custom");
        assert_eq!(exporting.service_name, "tether");
    }

    #[test]
    fn bad_settings_are_refused() {
        let ratio = TelemetryConfig {
            sample_ratio: 1.5,
            ..TelemetryConfig::default()
        };
        assert!(ratio.validate().is_err());
        let url = TelemetryConfig {
            otlp_endpoint: "collector:4318".into(),
            ..TelemetryConfig::default()
        };
        assert!(url.validate().is_err());
        let batch = TelemetryConfig {
            queue_size: 8,
            batch_size: 9,
            ..TelemetryConfig::default()
        };
        assert!(batch.validate().is_err(), "a batch larger than the queue");
        let huge = TelemetryConfig {
            queue_size: usize::MAX,
            ..TelemetryConfig::default()
        };
        assert!(huge.validate().is_err());
        assert!(TelemetryConfig::default().validate().is_ok());
    }
}
