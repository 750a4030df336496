//! A container's Docker log configuration (`HostConfig.LogConfig`): what the component's
//! `logging` says, completed with the bounded default of `schemas::logging::effective`
//! (`json-file`, `max-size: 10m`, `max-file: 3` when nothing is said; the default size and
//! count for `json-file` / `local` that set none). A stock engine would otherwise write
//! unbounded `json-file` logs and fill the device's card.

use bollard::models::HostConfigLogConfig;
use schemas::Component;

/// The log configuration a container of `c` is created with; never unbounded files.
pub(super) fn log_config(c: &Component) -> HostConfigLogConfig {
    let l = schemas::logging::effective(c.logging.as_ref());
    HostConfigLogConfig {
        typ: Some(l.driver.as_str().to_owned()),
        config: Some(l.options.into_iter().collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::component::{LogDriver, Logging};
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn nothing_said_is_bounded_json_file() {
        let lc = log_config(&Component::default());
        assert_eq!(lc.typ.as_deref(), Some("json-file"));
        assert_eq!(lc.config, config(&[("max-size", "10m"), ("max-file", "3")]));
    }

    #[test]
    fn what_git_says_is_kept_and_completed() {
        let mut c = Component {
            logging: Some(Logging {
                driver: LogDriver::Local,
                options: [("max-size".to_owned(), "1m".to_owned())].into(),
            }),
            ..Component::default()
        };
        let lc = log_config(&c);
        assert_eq!(lc.typ.as_deref(), Some("local"));
        assert_eq!(lc.config, config(&[("max-size", "1m"), ("max-file", "3")]));
        c.logging = Some(Logging {
            driver: LogDriver::Journald,
            options: [("tag".to_owned(), "web".to_owned())].into(),
        });
        let lc = log_config(&c);
        assert_eq!(lc.typ.as_deref(), Some("journald"));
        assert_eq!(lc.config, config(&[("tag", "web")]));
    }
}
