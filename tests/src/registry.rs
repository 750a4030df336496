//! [`Registry`] with HTTP basic auth (htpasswd), for private-registry tests.
//!
//! Debian's `docker-registry` only accepts bcrypt lines in its htpasswd file, and neither
//! `htpasswd` (apache2-utils) nor a bcrypt crate can be assumed here, so the test user's
//! line is a constant: [`TEST_PASSWORD_BCRYPT`] is bcrypt (cost 10) of [`TEST_PASSWORD`],
//! made once with `python3 -c "import crypt; print(crypt.crypt('ef-right-password',
//! crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1024)))"`. It is a test fixture, not a secret.

use crate::Registry;

/// The user the auth-enabled registry knows.
pub const TEST_USER: &str = "ef-puller";
/// Its password.
pub const TEST_PASSWORD: &str = "ef-right-password";
/// bcrypt of [`TEST_PASSWORD`] (`$2b$`, which the registry's Go bcrypt accepts).
pub const TEST_PASSWORD_BCRYPT: &str =
    "$2b$10$hWTylpAEKtbRkUY8fPBiWuCjr2wrl4oHVrdYu4bOSAUsaCRRZ0l.a";

impl Registry {
    /// Restarts it on the same port and storage with HTTP basic auth: only [`TEST_USER`]
    /// with [`TEST_PASSWORD`] may pull or push from now on (what was pushed before stays,
    /// so push first, then call this).
    pub fn require_auth(&mut self) {
        let dir = self.conf.parent().expect("config dir").to_path_buf();
        let htpasswd = dir.join("htpasswd");
        std::fs::write(&htpasswd, format!("{TEST_USER}:{TEST_PASSWORD_BCRYPT}\n"))
            .expect("htpasswd");
        let mut conf = std::fs::read_to_string(&self.conf).expect("registry config");
        assert!(!conf.contains("\nauth:"), "auth is already on");
        conf.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: edgefleet-test\n    path: {}\n",
            htpasswd.display()
        ));
        std::fs::write(&self.conf, conf).expect("registry config");
        self.restart();
    }

    /// Its output so far (errors and the access log, across restarts).
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// How many requests it refused with 401 so far, from the access log (Docker 20.10
    /// makes one or two per refused pull: `GET /v2/` without or with bad credentials, then
    /// `HEAD …/manifests/…` when it has some to try).
    pub fn refused_requests(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.starts_with("127.0.0.1 - ") && l.contains("\" 401 "))
            .count()
    }
}
