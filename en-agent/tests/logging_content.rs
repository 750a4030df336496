//! An agent refuses a desired document whose `logging` breaks the rules the LO applies to
//! Git (`schemas::logging::Logging::check`): such a document was not written by an LO of
//! this contract, and `max-size: -1` would be unbounded logs on the card.

mod common;

use common::*;
use en_agent::store::check_content;
use schemas::component::{LogDriver, Logging};
use schemas::Component;

fn with_logging(driver: LogDriver, options: &[(&str, &str)]) -> Component {
    let mut c = comp("web", "reg/web:v1");
    c.logging = Some(Logging {
        driver,
        options: options
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    });
    c.with_hash()
}

#[test]
fn logging_out_of_bounds_is_refused_and_valid_logging_passes() {
    let ok = doc(
        1,
        vec![deployment(
            "app",
            vec![with_logging(LogDriver::Local, &[("max-size", "1m")])],
        )],
    );
    assert!(check_content(&ok).is_ok());
    for (driver, options) in [
        (LogDriver::JsonFile, &[("max-size", "-1")][..]),
        (LogDriver::JsonFile, &[("max-file", "1000")][..]),
        (LogDriver::Journald, &[("max-size", "10m")][..]),
        (LogDriver::None, &[("tag", "x")][..]),
    ] {
        let bad = doc(
            1,
            vec![deployment("app", vec![with_logging(driver, options)])],
        );
        let e = check_content(&bad).expect_err("must be refused");
        assert!(e.to_string().contains("logging"), "{e}");
    }
}
